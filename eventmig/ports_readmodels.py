"""The read-model sink: what rebuild, swap and rollback jobs need from a read-model database.

A rebuild writes a projection's rows into *shadow* tables next to the live
ones, keeps each worker's key states in per-partition state tables with
their checkpoints, verifies shadow against live tables by row digests and
swaps them in; the live tables it replaces stay as ``<table>__prev`` so
that a rollback is another swap. This module names those operations
(:class:`ReadModelSink`) and the records they exchange, so that the jobs
never see which database holds the tables. The SQL backend's
``ReadModelDB`` implements it.

A transaction (``tx``) is whatever the sink's :meth:`ReadModelSink.write`
and :meth:`ReadModelSink.read` yield: jobs only pass it back to the sink.

A backend makes its sinks reachable by URL with :func:`register_opener`
when it is imported (``eventmig.backends`` does so for its own), so a job
given a URL opens one without importing any backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa

from eventmig.errors import ConfigError
from eventmig.model.records import Gap
from eventmig.urls import url_shown_unparsed

#: characters of a rebuild run's id, the suffix of its shadow tables' names (``<table>__<run id>``)
RUN_ID_LENGTH = 12
#: the run id standing for tables eventmig did not build: the live tables a projection's first swap replaced
#: (their version is stored as 0 and read back as None)
UNMANAGED_RUN = "-"


class RebuildRun(msgspec.Struct):
    """One projection's rebuild: which code, into which shadow tables, up to where."""

    id: str
    projection: str
    version: int
    fingerprint: str
    status: str  # "running" | "folded" | "verified" | "swapped" | "abandoned"
    partitions: int
    epoch: int
    until: int | None  # the last commit position replayed (None: the epoch was empty)
    started_at: float
    updated_at: float
    tables: dict[str, str]  # live name -> shadow name
    stats: dict[str, Any] = {}


class Partition(msgspec.Struct):
    run_id: str
    partition: int
    checkpoint: int | None  # position of the last event folded, None before the first batch
    events: int
    keys: int
    status: str  # "folding" | "folded" | "done"


class LiveModel(msgspec.Struct):
    projection: str
    version: int | None  # None: tables eventmig did not build (run_id is UNMANAGED_RUN)
    run_id: str
    tables: list[str]
    previous_version: int | None
    previous_run_id: str | None
    updated_at: float


class SwapRecord(msgspec.Struct):
    id: int
    kind: str  # "swap" | "rollback"
    projection: str
    from_version: int | None
    to_version: int | None  # None: back to the tables the projection's first swap replaced
    run_id: str
    at: float


class TableDiff(msgspec.Struct):
    """How a shadow table differs from the live one, by primary key."""

    table: str
    live_rows: int
    rows: int
    live_digest: str | None
    digest: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    sample: list[str] = []  # primary keys of some differing rows, as JSON

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class RowDigest(Protocol):
    """The digest of the rows a rebuild wrote into one shadow table, summed as they are written (picklable: it
    travels from worker processes to the parent), so verification need not read the table back."""

    #: the partitions whose rows are all in it
    partitions: list[int]

    def add(self, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None: ...

    def merge(self, other: Any) -> None: ...


class StateReader(Protocol):
    """Point reads of a worker's state tables outside its write transactions (one open read at a time)."""

    def get(self, table: str, key: str) -> bytes | None: ...

    def keys(self, table: str) -> Iterator[str]: ...

    def close(self) -> None: ...


class ReadModelSink(Protocol):
    """Shadow tables, state tables, bulk writes, digests, swaps and the bookkeeping of runs and partitions."""

    url: str

    # -- handles, transactions, locks
    def reopen(self) -> ReadModelSink: ...
    def close(self) -> None: ...
    def lock(self, name: str) -> AbstractContextManager[None]: ...
    def write(self, *, durable: bool = True) -> AbstractContextManager[Any]: ...
    def read(self, *, snapshot: bool = False) -> AbstractContextManager[Any]: ...
    def check_names(self, projection_name: str, tables: Iterable[sa.Table]) -> None: ...
    def table_exists(self, name: str, tx: Any = None) -> bool: ...
    def drop_tables(self, tx: Any, names: Iterable[str]) -> None: ...

    # -- runs and partitions
    def runs(self, projection: str | None = None, conn: Any = None) -> list[RebuildRun]: ...
    def save_run(self, run: RebuildRun, conn: Any = None) -> None: ...
    def create_partitions(self, run_id: str, partitions: int, conn: Any) -> None: ...
    def partitions(self, run_id: str, conn: Any = None) -> list[Partition]: ...
    def save_partition(
        self, tx: Any, run_id: str, partition: int, *, status: str | None = None,
        progress: tuple[int | None, int, int] | None = None,
    ) -> None: ...
    def partition_status(self, tx: Any, run_id: str, partition: int) -> str: ...

    # -- shadow tables and their rows
    def shadow_name(self, name: str, run_id: str) -> str: ...
    def create_shadow(self, tx: Any, table: sa.Table, name: str, run_id: str) -> None: ...
    def index_shadow(self, tx: Any, table: sa.Table, name: str, run_id: str) -> None: ...
    def bulk_insert(self, tx: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...

    # -- state tables
    @staticmethod
    def state_table(run_id: str, partition: int) -> str: ...
    def create_state_table(self, tx: Any, name: str) -> None: ...
    def put_states(
        self, tx: Any, name: str, items: Sequence[tuple[str, bytes]], deleted: Sequence[str] = (), *, empty: bool = False
    ) -> None: ...
    def scan_states(self, tx: Any, name: str, *, keys_only: bool = False) -> Iterator[list[Any]]: ...
    def state_reader(self) -> StateReader: ...

    # -- digests and verification
    def new_digest(self) -> RowDigest: ...
    def compare(self, tx: Any, table: sa.Table, live: str | None, shadow: str, *, written: Any = None) -> TableDiff: ...
    def scratch_digest(self, tx: Any, table: sa.Table, scratch_id: str, rows: list[tuple[Any, ...]]) -> tuple[str, int]: ...
    def replace_in_digest(self, digest: str, removed: str, added: str) -> str: ...

    # -- live tables: swaps and rollbacks
    def live_models(self, conn: Any = None) -> dict[str, LiveModel]: ...
    def swaps(self) -> list[SwapRecord]: ...
    def last_swapped(self, tx: Any) -> list[str]: ...
    def previous_name(self, table: str) -> str: ...
    def swap_in(self, tx: Any, table: str, shadow: str) -> None: ...
    def exchange_previous(self, tx: Any, table: str, *, has_previous: bool) -> None: ...
    def record_live(
        self, tx: Any, projection: str, *, version: int | None, run_id: str, tables: list[str],
        previous: LiveModel | None, at: float, kind: str,
    ) -> None: ...


class FollowerRow(msgspec.Struct):
    """A projection segment's follower, as the read-model database holds it."""

    projection: str
    segment: int
    run_id: str | None  # the rebuild run whose tables it follows; None before its first start
    epoch: int | None
    checkpoint: int | None  # the last commit position applied (None: the epoch was empty)
    events: int  # events applied since it started following that run
    holder: str | None
    lease_until: float | None
    updated_at: float
    lag_events: int | None
    lag_seconds: float | None
    gaps: int  # positions moved past without an event
    error: str | None  # why it stopped (a projection that raised, a rebuild required)


class LeaseLost(Exception):
    """Another follower holds this segment now (or moved its checkpoint): the batch was not applied."""


class ReadModelsSwapped(LeaseLost):
    """The live tables a follower wrote to are no longer those of the run it started from (a rebuild or a
    rollback swapped others in): the batch was not applied; the follower starts again from the new tables'
    own checkpoint."""


class FollowerStore(Protocol):
    """What ``follow`` keeps beside the live tables: each segment's checkpoint and lease, its keys' states,
    the gaps it moved past. Every write happens inside a transaction of :attr:`db`, the one that covers the
    batch's rows, so that rows, states and checkpoint commit together."""

    db: ReadModelSink

    def followers(self, tx: Any = None) -> list[FollowerRow]: ...
    def follower(self, tx: Any, projection: str, segment: int, *, lock: bool = False) -> FollowerRow: ...
    def claim(self, segments: Iterable[tuple[str, int]], holder: str, lease_s: float) -> list[FollowerRow]: ...
    def renew(self, segments: Iterable[tuple[str, int]], holder: str, lease_s: float) -> set[tuple[str, int]]: ...
    def release(self, segments: Iterable[tuple[str, int]], holder: str) -> None: ...
    def held(self, tx: Any, row: FollowerRow, holder: str, *, tables: Sequence[str] = (),
             live_run: str | None = None) -> FollowerRow: ...
    def state_table(self, projection: str) -> str: ...
    def load_states(self, tx: Any, projection: str, keys: Sequence[str]) -> dict[str, bytes]: ...
    def reset_states(self, tx: Any, projection: str) -> None: ...
    def put_states(self, tx: Any, projection: str, items: Sequence[tuple[str, bytes]],
                   deleted: Sequence[str] = (), *, empty: bool = False) -> None: ...
    def replace_rows(self, tx: Any, table: sa.Table, old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]) -> None: ...
    def save(self, tx: Any, row: FollowerRow, lease_s: float, gaps: Sequence[Gap] = ()) -> None: ...
    def mark_followed(self, tx: Any, run_id: str, projection: str) -> None: ...
    def was_followed(self, tx: Any, run_id: str) -> bool: ...


class PartitionClaim(msgspec.Struct, frozen=True):
    """One process's hold on one partition of a rebuild run; the generation is its fencing token."""

    run_id: str
    partition: int
    holder: str
    generation: int


class PartitionClaims(Protocol):
    """Leases on a rebuild run's partitions, so that processes on several hosts share the run: each claims a
    free (or expired) partition, renews its claim while folding it, and writes only through a handle fenced
    by that claim."""

    def claim(self, run_id: str, holder: str, lease_s: float) -> PartitionClaim | None: ...
    def renew(self, claim: PartitionClaim, lease_s: float) -> bool: ...
    def release(self, claim: PartitionClaim) -> None: ...
    def fenced(self, sink: ReadModelSink, claim: PartitionClaim) -> ReadModelSink: ...
    def holders(self, run_id: str) -> dict[int, Any]: ...


#: opens the read-model database at a URL; set by the backends when imported (:func:`register_opener`)
_openers: list[Callable[..., ReadModelSink]] = []


def register_opener(opener: Callable[..., ReadModelSink]) -> None:
    """Make ``opener(url, create=...)`` the way :func:`open_read_models` opens a read-model database by URL."""
    _openers[:] = [opener]


def open_read_models(url: str, *, create: bool = True) -> ReadModelSink:
    """The read-model database at ``url``, opened by the backend that registered itself for it."""
    if not _openers:
        raise ConfigError(f"no backend can open the read-model database {url_shown_unparsed(url)!r}")
    return _openers[0](url, create=create)


#: the follower bookkeeping of a read-model database; set by the backends when imported
_follower_openers: list[Callable[[Any], FollowerStore]] = []


def register_follower_opener(opener: Callable[[Any], FollowerStore]) -> None:
    """Make ``opener(sink)`` the way :func:`open_followers` reaches a sink's follower bookkeeping."""
    _follower_openers[:] = [opener]


#: the partition claims of a read-model database; set by the backends when imported
_claims_openers: list[Callable[[Any], PartitionClaims]] = []


def register_claims_opener(opener: Callable[[Any], PartitionClaims]) -> None:
    """Make ``opener(sink)`` the way :func:`open_claims` reaches a sink's partition claims."""
    _claims_openers[:] = [opener]


def open_claims(sink: ReadModelSink) -> PartitionClaims:
    """The partition claims of ``sink``'s database (ConfigError, one line, where it cannot hold them)."""
    if not _claims_openers:
        raise ConfigError(f"no backend can share rebuild runs in {sink.url}")
    return _claims_openers[0](sink)


def open_followers(sink: ReadModelSink) -> FollowerStore:
    """The follower bookkeeping beside ``sink``'s live tables (created there if missing)."""
    if not _follower_openers:
        raise ConfigError(f"no backend can follow read models in {sink.url}")
    return _follower_openers[0](sink)
