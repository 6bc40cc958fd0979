"""The records that cross the store interface: runs, epochs, switches, quarantined and target events.

Plain data with no I/O, shared by the jobs, the backends and the CLI's
reports; the interface that produces and consumes them is
:mod:`eventmig.ports`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import msgspec


class StreamState(enum.Enum):
    """Expected-version values that are not a version number."""

    ANY = "any"  # no concurrency check
    NO_STREAM = "no_stream"  # the stream must not exist yet
    EXISTS = "exists"  # the stream must exist


ExpectedVersion = int | StreamState


class EpochInfo(msgspec.Struct, frozen=True):
    """One generation of streams in a store."""

    epoch: int
    status: str  # "building" | "ready" | "active" | "retired"
    source_epoch: int | None
    created_at: float
    events: int | None = None


class Run(msgspec.Struct):
    """A migrate job: where it reads from and writes to, how far it got, what it saw."""

    id: str
    kind: str
    source_epoch: int
    target_epoch: int
    status: str  # "running" | "completed" | "failed"
    checkpoint: int | None  # source position of the last event handled, None before the first batch
    fingerprint: str
    started_at: float
    updated_at: float
    stats: dict[str, Any] = {}
    options: dict[str, Any] = {}


class QuarantinedEvent(msgspec.Struct, frozen=True):
    """A source event that could not be decoded or upcast, kept verbatim with the reason."""

    run_id: str
    stream: str
    version: int
    position: int
    event_id: str
    type: str
    data: bytes
    metadata: bytes
    recorded_at: int
    reason: str
    accepted: bool = False
    id: int | None = None


class TargetEvent(NamedTuple):
    """An event produced by a migration, ready to be written with its stream version.

    A plain tuple, in the column order stores write, because a migration builds
    millions of them and hands them straight to the driver.
    """

    stream: str
    version: int
    event_id: str
    type: str
    data: bytes
    metadata: bytes
    recorded_at: int


class Switch(msgspec.Struct, frozen=True):
    """One flip of the active epoch, kept so it can be undone safely."""

    id: int
    kind: str  # "switch" | "rollback"
    from_epoch: int
    to_epoch: int
    at: float
    #: commit position of the epoch made active, at the moment of the flip
    to_head: int | None


class StreamPartitions(NamedTuple):
    """Some of the ``count`` partitions a store splits its streams into: those numbered ``indexes``.

    Every stream falls into exactly one partition, always the same one for a
    given store, count and ``bounds``, so readers that each take some
    partitions see every stream once, each stream whole and in order. With
    no ``bounds`` a stream's partition is the store's hash of its name (see
    :meth:`EventStore.stream_partition`); with ``count - 1`` sorted names as
    ``bounds`` (see :meth:`EventStore.stream_bounds`) partition ``i`` holds
    the names from ``bounds[i - 1]`` included to ``bounds[i]`` excluded, in
    code point order.
    """

    indexes: frozenset[int]
    count: int
    bounds: tuple[str, ...] = ()

    @classmethod
    def of(cls, index: int | Collection[int], count: int, bounds: Sequence[str] = ()) -> StreamPartitions:
        """``of(2, 4)``: the third of four partitions; ``of({0, 2}, 4)``: the first and the third."""
        indexes = frozenset((index,) if isinstance(index, int) else index)
        if count < 1 or not indexes or any(not 0 <= i < count for i in indexes):
            raise ValueError(f"partitions {sorted(indexes)} out of {count}: need 0 <= index < count")
        bounds = tuple(bounds)
        if bounds and (len(bounds) != count - 1 or list(bounds) != sorted(bounds)):
            raise ValueError(f"{count} name ranges need {count - 1} sorted bounds, not {list(bounds)}")
        return cls(indexes, count, bounds)

    def ranges(self) -> list[tuple[str | None, str | None]]:
        """The name ranges kept, ``[low, high)`` (None: unbounded), adjacent ones joined; only with bounds."""
        edges = (None, *self.bounds, None)
        out: list[tuple[str | None, str | None]] = []
        for i in sorted(self.indexes):
            low, high = edges[i], edges[i + 1]
            if out and i - 1 in self.indexes:
                out[-1] = (out[-1][0], high)
            else:
                out.append((low, high))
        return out


class Gap(msgspec.Struct, frozen=True):
    """Positions ``first..last`` that held no event when a follower moved past them."""

    first: int
    last: int
    how: str  # "ended": every transaction that could fill them had ended; "waited": the bounded wait ran out
    waited: float
