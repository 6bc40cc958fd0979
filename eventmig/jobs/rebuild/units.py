"""What a worker folds: partitions of runs (units), their in-memory states, the reads (scans) that feed them."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from eventmig.errors import ConfigError
from eventmig.model.records import StreamPartitions
from eventmig.ports_readmodels import Partition, RebuildRun
from eventmig.projection.api import STREAM, Index, Projection

#: states a worker keeps in memory per partition; older ones are reloaded from the state table when touched
#: again. A partition's states that are in memory when its read ends become rows straight away; the others
#: are read back from its state table first, which costs more than keeping them: states are small (a few
#: hundred bytes), so hold tens of thousands (a projection with big states sets its own ``cache_size``)
DEFAULT_CACHE_KEYS = 50_000


class Unit:
    """One partition of one run, as a worker folds it."""

    def __init__(self, run: RebuildRun, partition: Partition, projection: Projection, state_table: str) -> None:
        self.run = run
        self.partition = partition.partition
        self.checkpoint = partition.checkpoint
        self.events = partition.events
        self.keys = partition.keys
        self.folded = partition.status == "folded"
        self.done = False
        self.until = run.until
        self.state_table = state_table
        #: the store's stream partitions this unit's events come from, when the store filters them
        self.streams = (
            StreamPartitions.of(partition.partition, run.partitions, run.stats.get("stream_bounds", ()))
            if projection.key is STREAM and run.partitions > 1 else None
        )

    @property
    def label(self) -> str:
        return f"{self.run.projection}" + (f" p{self.partition}" if self.run.partitions > 1 else "")

    @property
    def pending(self) -> bool:
        return not self.folded and self.until is not None


def assign(units: list[Unit], workers: int) -> list[list[Unit]]:
    """Partitions spread round-robin; single-partition (global-order) runs go to the least loaded worker."""
    workers = max(1, min(workers, len(units)))
    slots: list[list[Unit]] = [[] for _ in range(workers)]
    parted = sorted((u for u in units if u.run.partitions > 1), key=lambda u: (u.partition, u.run.projection))
    for u in parted:
        slots[u.partition % workers].append(u)
    for u in (u for u in units if u.run.partitions == 1):
        min(reversed(slots), key=len).append(u)
    return [s for s in slots if s]


def scan_keys(units: list[Unit]) -> dict[Any, list[Unit]]:
    """The reads a worker makes: one per stream partition of stream-keyed runs (the store keeps
    only that partition's events), one of everything for the other units."""
    scans: dict[Any, list[Unit]] = {}
    for unit in units:
        if unit.pending:
            scans.setdefault(unit.streams, []).append(unit)
    return scans


#: a key's partition is crc32 of its text modulo the partition count: stable across processes and
#: runs, which Python's ``hash`` is not
crc32 = zlib.crc32


def encode_key(key: Any) -> str:
    if key.__class__ is str:
        return "s" + key
    if key.__class__ is int:
        return "i" + str(key)
    raise ConfigError(f"projection keys must be str or int, got {type(key).__name__} {key!r}")


def decode_key(text: str) -> Any:
    return text[1:] if text[0] == "s" else int(text[1:])


class Bloom:
    """A set that may answer yes wrongly, never no wrongly, in fixed memory (1 MiB).

    Remembers the keys whose state went to the state table, so that a key
    missing from memory is known to be new without asking the database;
    a false yes costs one lookup. Python's ``hash`` is fine here: the filter
    lives in one process and is rebuilt from the state table on resume.
    """

    __slots__ = ("bits", "count")

    BITS = 1 << 23
    MASK = BITS - 1

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)
        self.count = 0

    def add(self, key: Any) -> None:
        h = hash(key)
        a, b = h & self.MASK, (h >> 23) & self.MASK
        bits = self.bits
        bits[a >> 3] |= 1 << (a & 7)
        bits[b >> 3] |= 1 << (b & 7)
        self.count += 1

    def __contains__(self, key: Any) -> bool:
        if not self.count:
            return False
        h = hash(key)
        a, b = h & self.MASK, (h >> 23) & self.MASK
        bits = self.bits
        return bool(bits[a >> 3] & (1 << (a & 7))) and bool(bits[b >> 3] & (1 << (b & 7)))


class ProjectionSlots:
    """A worker's units of one projection, found by key partition."""

    __slots__ = ("projection", "partitions", "owned", "single", "tracks", "initial", "encode", "decode", "cap", "index")

    def __init__(self, projection: Projection, partitions: int) -> None:
        self.projection = projection
        self.partitions = partitions
        self.owned: dict[int, UnitState] = {}
        self.single: UnitState | None = None
        self.tracks = getattr(projection, "tracks_version", False)
        self.initial = projection.initial
        state_type = projection.state_type
        if self.tracks:
            state_type = tuple[int, state_type]
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder(state_type).decode
        self.cap = projection.cache_size or DEFAULT_CACHE_KEYS
        self.index: Index | None = None


class UnitState:
    __slots__ = ("unit", "cache", "dirty", "stored", "slots", "index", "new_keys", "pending_events", "pending_checkpoint")

    def __init__(self, unit: Unit, slots: ProjectionSlots) -> None:
        self.unit = unit
        self.cache: dict[Any, Any] = {}
        self.dirty: set[Any] = set()
        # keys whose state may be in the state table but not in memory (evicted, or stored before a resume)
        self.stored = Bloom()
        self.slots = slots
        self.index: Index | None = None
        self.new_keys = 0  # since the last commit, as are the two below
        self.pending_events = 0
        self.pending_checkpoint: int | None = unit.checkpoint

    def progress(self) -> tuple[int | None, int, int]:
        """The partition's checkpoint, events and keys once what was folded since the last commit is stored."""
        unit = self.unit
        return self.pending_checkpoint, unit.events + self.pending_events, unit.keys + self.new_keys


class Scan:
    """One read of the epoch: the stream partitions and event types the store keeps, the units they feed."""

    __slots__ = ("streams", "types", "states", "tables")

    def __init__(self, streams: StreamPartitions | None, types: frozenset[str] | None, states: list[UnitState]) -> None:
        self.streams = streams
        self.types = types
        self.states = states
        #: per set of units folding a page together: stored type -> what to do with its events
        self.tables: dict[frozenset[int], dict[str, Any]] = {}

    @property
    def after(self) -> int | None:
        return min((s.unit.checkpoint for s in self.states), key=lambda c: -1 if c is None else c)

    @property
    def until(self) -> int | None:
        return max(s.unit.until for s in self.states if s.unit.until is not None)


#: what a payload that does not decode (or upcast) raises on its way to a handler

class TypeTable(dict):  # type: ignore[type-arg]
    """stored type -> how its events are folded, worked out on first sight of the type."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[str], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, stored_type: str) -> Any:
        value = self[stored_type] = self.make(stored_type)
        return value
