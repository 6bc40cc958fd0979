"""The ports jobs talk to, each named for what a job needs of a store.

Nothing here speaks SQL: a store is a set of *epochs* (generations of
streams), one of them active; each epoch holds streams of events, numbered
within their stream and ordered globally by an opaque commit position.

A job asks for no more than it uses:

* :class:`EventSource`: events in commit order, in batches, resumed after an
  opaque checkpoint (a position the source handed out); streams, counts and
  partitions to split the reading between processes.
* :class:`StreamAppender`: appends with expected versions, and the bulk
  ``write_batch`` of a migration with its checkpoint; neither ever writes an
  event twice.
* :class:`Epochs`: create, list, finish, switch (and switch back: a
  rollback) and drop generations of streams.
* :class:`JobLedger`: runs and their checkpoints, quarantined events, and the
  locks that keep two jobs off the same store.

:class:`EventStore` is their composition, the class a backend implements.
Backends differ in ways that matter to callers (EventStoreDB numbers stream
versions from 0, has gaps in its commit positions and appends atomically to
one stream at a time), so each declares :class:`Capabilities` up front and
callers branch on those, never on the backend's class; the conformance suite
(:mod:`eventmig.testing.conformance`) checks that each declaration holds.
The records that cross these ports live in :mod:`eventmig.model.records`.
"""

from __future__ import annotations

import bisect
import time
import zlib
from abc import abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import msgspec

from eventmig.model.events import LINEAGE_KEY, NewEvent, RecordedEvent
from eventmig.model.records import (
    EpochInfo,
    ExpectedVersion,
    QuarantinedEvent,
    Run,
    StreamPartitions,
    StreamState,
    Switch,
    TargetEvent,
)

__all__ = [
    "LINEAGE_PLACES",
    "Capabilities",
    "CatchUp",
    "EventSource",
    "EventStore",
    "Epochs",
    "JobLedger",
    "StreamAppender",
]

#: where a migrated event's lineage (its source event and upcaster chain) can be kept:
#: ``"metadata"``, a key of the event's own metadata, read back exactly as written; ``"table"``, a side
#: table keyed by the target event's position (a table layout whose payload keys would become the
#: application's domain attributes, or that has no metadata column), read back by :meth:`EventStore.lineage`
LINEAGE_PLACES = frozenset({"metadata", "table"})


class Capabilities(msgspec.Struct, frozen=True):
    """What a backend guarantees, declared so callers and tests need no special cases.

    Every field is a promise the conformance suite checks: declare only what
    the store keeps under concurrent writers and across restarts.
    """

    #: version of the first event of a stream (SQL stores: 1, EventStoreDB: 0)
    first_stream_version: int
    #: commit positions are consecutive integers (no gaps)
    contiguous_positions: bool
    #: ``write_batch`` commits events of many streams and the checkpoint in one transaction;
    #: otherwise it appends stream by stream with deterministic event ids and checkpoints after
    atomic_batches: bool
    #: the store holds several epochs side by side and can switch the active one
    epochs: bool = True
    #: an event id is unique in the whole store and an append of an id the store holds is refused
    #: (EventStoreDB: unique only within a stream; a table layout without an event id column keeps ids
    #: without enforcing them)
    unique_event_ids: bool = True
    #: ``switch_epoch`` holds application writers off while it flips (EventStoreDB cannot: no locks)
    atomic_switch: bool = True
    #: streams carry settings of their own (EventStoreDB's ``$$`` metadata: retention, ACL, custom keys)
    stream_metadata: bool = False
    #: re-appending events whose ids the stream already holds at those versions succeeds and
    #: writes nothing (EventStoreDB); otherwise such an append is refused, also writing nothing
    idempotent_appends: bool = False
    #: an event's ``recorded_at`` given on writing is read back unchanged (EventStoreDB sets its own)
    settable_record_times: bool = True
    #: the longest stream name, in bytes of UTF-8, kept whole; None: no limit below a megabyte
    max_stream_name_bytes: int | None = None
    #: the longest name of a table or index the backend derives from a configured name (PostgreSQL: 63
    #: bytes); a configured name that cannot fit is refused when the store is opened. None: no limit
    max_identifier_bytes: int | None = None
    #: where lineage can live, out of :data:`LINEAGE_PLACES`
    lineage: frozenset[str] = frozenset({"metadata"})
    #: an event's metadata is kept as written; otherwise it reads back as ``{}`` (a table layout with no
    #: metadata column: the ``eventsourcing`` library's tables)
    keeps_metadata: bool = True
    #: an event id given on writing is read back; otherwise each event reads back with an id derived from
    #: its stream and version, the same on every read (a table layout with no column to keep ids in)
    keeps_event_ids: bool = True
    #: a switch to an epoch that lacks the active epoch's last events is allowed; a store whose next
    #: position is its largest plus one (SQLite rowid tables whose positions the application's followers
    #: track) refuses it, since the dropped positions would be handed out again to new events
    switch_after_tail_drop: bool = True

    def __post_init__(self) -> None:
        unknown = self.lineage - LINEAGE_PLACES
        if unknown:
            raise ValueError(f"unknown lineage places {sorted(unknown)}: expected some of {sorted(LINEAGE_PLACES)}")


class CatchUp(Protocol):
    """The last events of a migration, migrated inside the switch transaction.

    While the switch holds its locks no application can append; events that
    arrived between the last catch-up and that moment are handed to
    :meth:`prepare`, written, read back and handed to :meth:`check`. Raising
    from either aborts the switch with nothing changed.
    """

    source_epoch: int

    def prepare(self, rows: list[tuple[Any, ...]]) -> tuple[list[TargetEvent], Run]:
        """Target events (numbered) for the source rows, and the run record to commit with them."""

    def check(self, source_rows: list[tuple[Any, ...]], written: list[tuple[Any, ...]]) -> None:
        """Verify the written target rows against the source rows; raise if they differ."""


class EventSource(Protocol):
    """Events in commit order, resumed from an opaque checkpoint; what migrate, verify and rebuild read.

    A checkpoint is a ``position`` this source handed out: reading ``after``
    it yields each later event exactly once, never one at or before it,
    whether or not positions have gaps (:attr:`Capabilities.contiguous_positions`).
    """

    capabilities: Capabilities
    #: the store's URL with any password masked: safe to print
    url: str
    #: the epoch this handle reads and writes: :func:`~eventmig.backends.open_store` gives a
    #: handle that follows the active epoch (as applications do), ``at_epoch`` one pinned
    epoch: int

    @abstractmethod
    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        """Events of one stream in order (empty if it does not exist)."""

    @abstractmethod
    def read_all(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000
    ) -> Iterator[list[RecordedEvent]]:
        """All events in commit order, in batches, after position ``after`` up to ``until`` included."""

    def read_all_rows(
        self,
        after: int | None = None,
        *,
        until: int | None = None,
        batch_size: int = 1000,
        streams: StreamPartitions | None = None,
        types: Collection[str] | None = None,
        lean: bool = False,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`read_all` as plain tuples in :class:`RecordedEvent` field order.

        Bulk jobs use this form: tuples are cheap to build and to send to worker
        processes. Backends override it when their driver already yields tuples.

        ``streams`` keeps only the events of streams in those partitions, and
        ``types`` only events whose stored type name is one of them; batches
        then hold at most ``batch_size`` events, still in commit order. This
        default filters what :meth:`read_all` returns; backends filter where the
        events are, so a reader pays only for what it keeps.

        ``lean`` says the reader needs neither event ids nor record times: a
        backend may put None in their places (fields 3 and 7) and save building
        them, which is a tenth of a replay's reading (this default keeps them).
        """
        if streams is None and types is None:
            for batch in self.read_all(after, until=until, batch_size=batch_size):
                yield [msgspec.structs.astuple(e) for e in batch]
            return
        wanted = frozenset(types) if types is not None else None
        partition_of = self.stream_partition
        if streams is not None and streams.bounds:
            bounds = streams.bounds

            def partition_of(stream: str, count: int) -> int:  # noqa: ARG001 - the bounds say
                return bisect.bisect_right(bounds, stream)

        for batch in self.read_all(after, until=until, batch_size=batch_size):
            kept = [
                msgspec.structs.astuple(e)
                for e in batch
                if (wanted is None or e.type in wanted)
                and (streams is None or partition_of(e.stream, streams.count) in streams.indexes)
            ]
            if kept:
                yield kept

    def stream_partition(self, stream: str, count: int) -> int:
        """Which of ``count`` partitions ``stream`` falls into: what ``read_all_rows(streams=...)`` keeps.

        Deterministic, and the same in every process and on every run, for a
        given store (this default: CRC-32 of the name in UTF-8, modulo ``count``).
        """
        return zlib.crc32(stream.encode()) % count

    @property
    def stream_partitioning(self) -> str:
        """Names how :meth:`stream_partition` cuts streams: work split by partitions is resumed only
        under the same scheme."""
        return "crc32"

    def stream_bounds(self, count: int) -> tuple[str, ...]:
        """``count - 1`` stream names that cut the streams into ``count`` name ranges of about as many
        events each, for :class:`StreamPartitions` ``bounds``; or ``()``: this
        store filters its hash partitions as cheaply as it would ranges, so use those (this default).

        A store answers with bounds when it can keep a range of names where
        the events are but would have to call back into Python to hash each
        name (SQLite).
        """
        return ()

    def position_after(self, after: int | None, count: int, *, until: int | None = None) -> int | None:
        """The position of the ``count``-th event after ``after`` (or the last one up to ``until``).

        Splits an epoch into slices that worker processes read on their own;
        None when there is no event in ``(after, until]``.
        """
        last = None
        seen = 0
        for batch in self.read_all(after, until=until, batch_size=min(count, 10_000)):
            for event in batch:
                seen += 1
                last = event.position
                if seen == count:
                    return last
        return last

    def refresh_statistics(self) -> None:
        """Bring the backend's planner statistics up to date before a long scan (default: nothing)."""

    def reopen(self, *, for_scans: bool = False) -> EventStore:
        """A new handle on the same store and epoch with connections of its own.

        Worker processes call it after forking, since connections must never
        be shared across processes. ``for_scans``: the handle will mostly read
        long runs of events (a rebuild's reads), and backends may tune it for
        that.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be reopened in a worker process")

    @abstractmethod
    def list_streams(self) -> Iterator[str]:
        """Names of the streams of this epoch."""

    @abstractmethod
    def stream_version(self, stream: str) -> int | None:
        """Version of the last event of ``stream``, or None if it has none."""

    @abstractmethod
    def stream_versions(self) -> dict[str, int]:
        """Last version of every stream (a resumed migration restores its numbering from it)."""

    @abstractmethod
    def head_position(self) -> int | None:
        """Position of the last committed event, or None if the epoch is empty."""

    @abstractmethod
    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        """How many events lie in ``(after, until]``; progress bars use it for their total."""


class StreamAppender(Protocol):
    """Writes that never put an event in twice: checked appends, and a migration's bulk batches."""

    capabilities: Capabilities

    @abstractmethod
    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = StreamState.ANY
    ) -> int:
        """Append atomically; return the stream's new version.

        Raises :class:`~eventmig.errors.WrongExpectedVersion` when
        ``expected_version`` does not hold. Events carry their ids: appending
        ids the store already holds either succeeds having written nothing
        (``capabilities.idempotent_appends``, when they are the stream's events
        at those versions) or is refused, having written nothing.
        """

    @abstractmethod
    def write_batch(
        self, events: Sequence[TargetEvent], *, run: Run | None = None, quarantined: Sequence[QuarantinedEvent] = ()
    ) -> None:
        """Write events with their stream versions into this handle's epoch, with the run's checkpoint.

        The bulk path for migrations (and for importing history: pass no run).
        Versions are the caller's to get right; there is no expected-version check.

        With ``capabilities.atomic_batches`` the events, the quarantined
        events and the run record commit together, or nothing does. Otherwise
        events are appended stream by stream with their deterministic ids, so
        a retried batch is recognised and not written twice, and the run is
        saved last.
        """


class Epochs(Protocol):
    """Generations of streams side by side, one active: where a migration writes and what a switch flips."""

    @abstractmethod
    def epochs(self) -> list[EpochInfo]:
        """All epochs, oldest first."""

    @abstractmethod
    def active_epoch(self) -> int:
        """The epoch applications read and write."""

    @abstractmethod
    def at_epoch(self, epoch: int) -> EventStore:
        """A handle on the same store bound to another epoch."""

    def check_new_epoch(self) -> None:
        """Refuse (ConfigError) what would stop the next epoch from being created, before anything is written.

        SQL stores check the names the new epoch's tables and indexes would
        get against the database's limit; the default has nothing to check.
        """

    @abstractmethod
    def create_epoch(self, source_epoch: int) -> int:
        """Create an empty epoch (status "building") to receive a migration; return its number."""

    @abstractmethod
    def finish_epoch(self, epoch: int) -> None:
        """Mark a fully migrated epoch "ready" (SQL stores build its indexes here)."""

    @abstractmethod
    def drop_epoch(self, epoch: int) -> None:
        """Delete an epoch that is not active, with its streams."""

    @abstractmethod
    def switch_epoch(
        self, to_epoch: int, *, kind: str, expect_heads: dict[int, int | None], catch_up: CatchUp | None = None
    ) -> Switch:
        """Make ``to_epoch`` active, atomically; ``kind`` "rollback" records a switch back.

        With ``catch_up``, events appended to the active (source) epoch after
        its expected head are migrated inside the same transaction, while
        writers are held off, instead of making the switch refuse.

        ``expect_heads`` maps epochs to the head position the caller verified;
        if any epoch's head moved since (events appended meanwhile), nothing
        changes and :class:`~eventmig.errors.HeadMoved` is raised, so no event
        written after verification can be left behind.
        """

    @abstractmethod
    def switches(self) -> list[Switch]:
        """The history of switches and rollbacks, oldest first."""


class JobLedger(Protocol):
    """What jobs record about themselves: runs and checkpoints, quarantined events, locks."""

    @abstractmethod
    def lock(self, name: str, *, ttl_s: float | None = None) -> AbstractContextManager[None]:
        """Hold an exclusive lease across processes; raise :class:`~eventmig.errors.Busy` if taken.

        The lease must die with its holder: a job killed with SIGKILL must not
        keep it longer than ``ttl_s`` seconds (the backend's default when None),
        and a job that merely lost its connections must not lose it unnoticed.
        So it *fences*: while it is held, every write of this handle (and of
        the handles :meth:`at_epoch` and :meth:`reopen` give) happens only if
        the lease is still this job's, checked in the write's own transaction,
        and otherwise raises :class:`~eventmig.errors.LeaseLost` with nothing
        written. Releasing never raises: a lease not released expires.
        """

    @abstractmethod
    def save_run(self, run: Run) -> None:
        """Insert or update (by ``run.id``) a run record."""

    @abstractmethod
    def runs(self, kind: str | None = None) -> list[Run]:
        """Run records, oldest first."""

    @abstractmethod
    def quarantine(self, run_id: str | None = None) -> list[QuarantinedEvent]:
        """Quarantined events, of one run or all."""

    @abstractmethod
    def accept_quarantine(self, run_id: str, ids: Sequence[int] | None = None) -> int:
        """Mark quarantined events as knowingly left behind; return how many were not already."""


class EventStore(EventSource, StreamAppender, Epochs, JobLedger):
    """A connection to one event store: every port at once, the class a backend implements.

    Stream methods act on the epoch of this handle. A backend sets
    ``capabilities`` on the class or, where they differ by server (a SQL
    dialect's name limit), on each handle.
    """

    def stream_versions_as_of(self, source_position: int | None) -> dict[str, int]:
        """Stream versions as a migration's batches up to its checkpoint ``source_position`` left them.

        A resumed migration numbers from these. With atomic batches they are
        simply the last versions (nothing is committed beyond a checkpoint);
        a store without them may hold events written after the last saved
        checkpoint, and answers without those.
        """
        return self.stream_versions() if source_position is not None else {}

    def lineage(self, positions: Sequence[int]) -> dict[int, Any]:
        """The lineage of this epoch's events at ``positions`` (those migrated: others have none), by position.

        Where :attr:`Capabilities.lineage` says ``"table"`` it is kept beside
        the events, keyed by position; this default reads it from each event's
        metadata (``"metadata"``).
        """
        wanted = set(positions)
        found: dict[int, Any] = {}
        if not wanted:
            return found
        for batch in self.read_all(min(wanted) - 1, until=max(wanted)):
            for event in batch:
                if event.position in wanted:
                    lineage = msgspec.json.decode(event.metadata or b"{}").get(LINEAGE_KEY)
                    if lineage is not None:
                        found[event.position] = lineage
        return found

    def stream_settings(self) -> dict[str, dict[str, Any]]:
        """Each stream's own settings in this epoch, by stream, for a migration to carry over (see
        ``Capabilities.stream_metadata``; a store without them has none: this default)."""
        return {}

    def apply_stream_settings(self, settings: dict[str, dict[str, Any]]) -> int:
        """Give this epoch's streams the settings of the same-named streams in ``settings``; return how many
        streams got some (a store without stream settings keeps none: this default)."""
        return 0

    # ----------------------------------------------------------- following
    def wait_for_appends(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the store to announce appended events; True when it did.

        A store that announces nothing sleeps: its followers poll.
        """
        time.sleep(timeout)
        return False

    def transactions_marker(self) -> Any:
        """An opaque mark of the write transactions in progress now, for :meth:`transactions_ended`.

        None: positions become visible in commit order, so a gap in them is
        final when it is seen (SQLite, EventStoreDB).
        """
        return None

    def transactions_ended(self, marker: Any) -> bool:
        """Whether every write transaction in progress when ``marker`` was taken has ended."""
        return True

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
