"""The stand-in's storage: one in-memory transaction log with EventStoreDB's rules.

Everything the gRPC layer answers is decided here, without gRPC, so the rules
can be read in one place. They follow the server's own write path (its commit
check) as documented and as observed by the clients' test suites:

* Revisions start at 0. The expected revision is a number or one of
  ``ANY`` / ``NO_STREAM`` / ``STREAM_EXISTS`` (the server's -2, -1, -4, which
  appear as such in its error messages).
* Re-appending events whose ids are already in the stream at the expected
  place is a no-op that answers with the original positions; a retry that
  matches only in part is a wrong expected version. With ``ANY`` or
  ``STREAM_EXISTS`` the ids are looked up wherever they are in the stream.
* Soft delete writes ``{"$tb": DELETED_STREAM}`` to the ``$$stream``
  metadata stream: the stream reads as not found, ``$all`` keeps its events.
  A later append recreates it, continuing the revisions, and rewrites the
  metadata with ``$tb`` at the first new revision.
* A tombstone (hard delete) is a ``$streamDeleted`` record: every later read
  or append of the stream (or read of its metadata) fails as deleted.
* ``$tb``, ``$maxCount`` and ``$maxAge`` hide events from stream reads only;
  ``$all`` returns every record until a scavenge, which is not run unless
  asked for (:meth:`EventLog.scavenge`).
* Every record has its own position (commit = prepare position) which grows
  by the record's size on disk, so positions have gaps.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

DELETED_STREAM = 2**63 - 1  # $tb of a soft-deleted stream, and the revision of a tombstone
ANY, NO_STREAM, STREAM_EXISTS = -2, -1, -4
METADATA_EVENT_TYPE = "$metadata"
TOMBSTONE_EVENT_TYPE = "$streamDeleted"
MAX_APPEND_SIZE = 1024 * 1024  # the server's default MaxAppendSize, in its own size measure
_RECORD_OVERHEAD = 96  # bytes a log record takes besides its names and payloads
_FIRST_POSITION = 64  # the log starts after an epoch record


def metastream_of(stream: str) -> str:
    return f"$${stream}"


def is_metastream(stream: str) -> bool:
    return stream.startswith("$$")


def ticks_now() -> int:
    """The server's clock in 100-ns ticks since the Unix epoch (the wire format of 'created')."""
    return time.time_ns() // 100


class WrongExpectedVersion(Exception):
    """The append or delete expected another revision; ``current`` is -1 for no stream."""

    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


class StreamDeleted(Exception):
    """The stream is tombstoned (or soft-deleted, for a write expecting it to exist)."""


class StreamNotFound(Exception):
    """The stream has no events, or is soft-deleted."""


class AppendTooLarge(Exception):
    """The events exceed the server's maximum append size."""


@dataclass(frozen=True, slots=True)
class ProposedEvent:
    event_id: str
    type: str
    content_type: str
    data: bytes
    metadata: bytes

    def size_on_disk(self) -> int:
        """The server's measure for its maximum append size (UTF-16 type name)."""
        return len(self.data) + len(self.metadata) + 2 * len(self.type)


@dataclass(frozen=True, slots=True)
class Record:
    """One event as stored: what every read of a stream or of ``$all`` returns."""

    position: int
    stream: str
    revision: int
    event_id: str
    type: str
    content_type: str
    data: bytes
    metadata: bytes
    created: int

    @property
    def size(self) -> int:
        return (_RECORD_OVERHEAD + len(self.stream.encode()) + len(self.type.encode())
                + len(self.data) + len(self.metadata))


@dataclass(frozen=True, slots=True)
class AppendResult:
    last_revision: int  # -1 when nothing was ever written (an empty append to no stream)
    position: int  # of the last event written, or of the original events on a no-op retry


@dataclass(slots=True)
class _Stream:
    records: list[Record] = field(default_factory=list)  # revision order: index = revision
    tombstone: Record | None = None

    @property
    def tombstoned(self) -> bool:
        return self.tombstone is not None

    @property
    def last_revision(self) -> int:
        """The server's 'current version': the last event's revision, -1 when there is none.

        A soft-deleted stream keeps its last revision: a recreating append
        continues from it.
        """
        return self.records[-1].revision if self.records else -1

    def at(self, revision: int) -> Record | None:
        return self.records[revision] if 0 <= revision < len(self.records) else None


@dataclass(frozen=True, slots=True)
class StreamMetadata:
    """The settings of a stream's ``$$`` metadata that change what a read of it returns."""

    truncate_before: int | None = None
    max_count: int | None = None
    max_age_seconds: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> StreamMetadata:
        """Invalid or non-object JSON counts as no metadata, as on the server."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(doc, dict):
            return cls()

        def number(key: str) -> int | None:
            value = doc.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(number("$tb"), number("$maxCount"), number("$maxAge"))

    @property
    def soft_deleted(self) -> bool:
        return self.truncate_before == DELETED_STREAM


_METASTREAM_METADATA = StreamMetadata(max_count=1)  # a read of $$stream shows its latest settings only


class EventLog:
    """The stand-in's database: thread-safe, and able to wake subscriptions as records arrive."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self._records: list[Record] = []
        self._positions: list[int] = []
        self._streams: dict[str, _Stream] = {}
        self._event_ids: dict[str, tuple[str, int]] = {}  # the server's cache of committed event ids
        self._next_position = _FIRST_POSITION

    # ------------------------------------------------------------------ writes
    def append(self, stream: str, expected: int, events: Sequence[ProposedEvent]) -> AppendResult:
        """Append atomically, or answer a retry of an append already made with its original result."""
        if sum(e.size_on_disk() for e in events) > MAX_APPEND_SIZE:
            raise AppendTooLarge()
        with self.changed:
            state = self._streams.get(stream) or _Stream()
            undelete = self._check(stream, state, expected, [e.event_id for e in events])
            if isinstance(undelete, AppendResult):
                return undelete
            if not events:
                return AppendResult(state.last_revision, self._head_position())
            reopens_metadata_of = self._soft_deleted_original(stream)
            first = state.last_revision + 1
            written = [self._write(stream, first + i, e) for i, e in enumerate(events)]
            if undelete:
                self._rewrite_truncate_before(stream, first)
            if reopens_metadata_of is not None:
                original = self._streams.get(reopens_metadata_of) or _Stream()
                self._rewrite_truncate_before(reopens_metadata_of, original.last_revision + 1)
            self.changed.notify_all()
            return AppendResult(written[-1].revision, written[-1].position)

    def delete(self, stream: str, expected: int) -> int:
        """Soft delete: a ``$metadata`` event with ``$tb`` at its maximum; returns its position."""
        with self.changed:
            state = self._streams.get(stream) or _Stream()
            self._check(stream, state, expected, [str(uuid.uuid4())])
            meta = self._streams.get(metastream_of(stream)) or _Stream()
            if state.last_revision < 0 and meta.last_revision < 0:
                raise WrongExpectedVersion(-1)
            record = self._write_metadata(stream, {"$tb": DELETED_STREAM})
            self.changed.notify_all()
            return record.position

    def tombstone(self, stream: str, expected: int) -> int:
        """Hard delete: a ``$streamDeleted`` record; the stream can never be written again."""
        with self.changed:
            state = self._streams.get(stream) or _Stream()
            self._check(stream, state, expected, [str(uuid.uuid4())])
            tombstone = ProposedEvent(str(uuid.uuid4()), TOMBSTONE_EVENT_TYPE, "application/octet-stream", b"", b"")
            record = self._write(stream, DELETED_STREAM, tombstone)
            self.changed.notify_all()
            return record.position

    def write_system_event(self, stream: str, type_: str, data: dict[str, object]) -> Record:
        """A server-made event ($stats, $users, ...), appended without concurrency checks."""
        with self.changed:
            state = self._streams.get(stream) or _Stream()
            event = ProposedEvent(str(uuid.uuid4()), type_, "application/json", json.dumps(data).encode(), b"")
            record = self._write(stream, state.last_revision + 1, event)
            self.changed.notify_all()
            return record

    def scavenge(self) -> int:
        """Drop what stream reads no longer show (deleted, truncated streams); returns how many.

        Positions are kept, as a scavenge keeps them. Tombstones stay.
        """
        with self.changed:
            keep = [r for r in self._records if r.type == TOMBSTONE_EVENT_TYPE or self._visible(r)]
            dropped = len(self._records) - len(keep)
            self._records = keep
            self._positions = [r.position for r in keep]
            return dropped

    def _check(self, stream: str, state: _Stream, expected: int, ids: Sequence[str]) -> bool | AppendResult:
        """The server's commit check: raise, answer a retry (AppendResult), or allow.

        Returns whether the allowed write recreates a soft-deleted stream.
        """
        if state.tombstoned:
            raise StreamDeleted()
        current = state.last_revision
        soft_deleted = self.metadata(stream).soft_deleted
        if expected == STREAM_EXISTS:
            if soft_deleted:
                raise StreamDeleted()
            meta = self._streams.get(metastream_of(stream))
            if current < 0 and (meta is None or meta.last_revision < 0):
                raise WrongExpectedVersion(current)
        if expected in (ANY, STREAM_EXISTS):
            return self._check_ids_anywhere(stream, current, ids, soft_deleted)
        if expected < current:
            return self._check_ids_at(state, expected, ids, soft_deleted)
        if expected > current:
            raise WrongExpectedVersion(current)
        return soft_deleted

    def _check_ids_anywhere(self, stream: str, current: int, ids: Sequence[str], soft_deleted: bool) -> bool | AppendResult:
        last: int | None = None
        for i, event_id in enumerate(ids):
            found = self._event_ids.get(event_id)
            if found is None or found[0] != stream:
                if i == 0:
                    return soft_deleted
                raise WrongExpectedVersion(current)
            last = found[1]
        if last is None:
            return soft_deleted
        return self._original_result(stream, last)

    def _check_ids_at(self, state: _Stream, expected: int, ids: Sequence[str], soft_deleted: bool) -> bool | AppendResult:
        revision = expected
        for event_id in ids:
            revision += 1
            record = state.at(revision)
            if record is not None and record.event_id == event_id:
                continue
            if revision == expected + 1 and expected == NO_STREAM and soft_deleted:
                return True
            raise WrongExpectedVersion(state.last_revision)
        if revision == expected:
            raise WrongExpectedVersion(state.last_revision)
        record = state.at(revision)
        assert record is not None
        return AppendResult(revision, record.position)

    def _original_result(self, stream: str, revision: int) -> AppendResult:
        record = self._streams[stream].at(revision)
        assert record is not None
        return AppendResult(revision, record.position)

    def _soft_deleted_original(self, stream: str) -> str | None:
        """For a write to ``$$x`` while ``x`` is soft-deleted: ``x``, whose deletion it undoes."""
        if is_metastream(stream):
            original = stream[2:]
            if self.metadata(original).soft_deleted:
                return original
        return None

    def _rewrite_truncate_before(self, stream: str, recreate_from: int) -> None:
        """Keep the stream's settings but hide only what came before ``recreate_from``."""
        raw = self._raw_metadata(stream)
        try:
            doc = json.loads(raw) if raw is not None else {}
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        doc["$tb"] = recreate_from
        self._write_metadata(stream, doc)

    def _write_metadata(self, stream: str, doc: dict[str, object]) -> Record:
        meta = self._streams.get(metastream_of(stream)) or _Stream()
        event = ProposedEvent(str(uuid.uuid4()), METADATA_EVENT_TYPE, "application/json", json.dumps(doc).encode(), b"")
        return self._write(metastream_of(stream), meta.last_revision + 1, event)

    def _write(self, stream: str, revision: int, event: ProposedEvent) -> Record:
        record = Record(self._next_position, stream, revision, event.event_id, event.type, event.content_type,
                        event.data, event.metadata, ticks_now())
        self._next_position += record.size
        self._records.append(record)
        self._positions.append(record.position)
        state = self._streams.setdefault(stream, _Stream())
        if revision == DELETED_STREAM:
            state.tombstone = record
        else:
            state.records.append(record)
            self._event_ids[event.event_id] = (stream, revision)
        return record

    def _head_position(self) -> int:
        return self._positions[-1] if self._positions else 0

    # ------------------------------------------------------------------- reads
    def metadata(self, stream: str) -> StreamMetadata:
        if is_metastream(stream):
            return _METASTREAM_METADATA
        raw = self._raw_metadata(stream)
        return StreamMetadata.parse(raw) if raw is not None else StreamMetadata()

    def _raw_metadata(self, stream: str) -> bytes | None:
        meta = self._streams.get(metastream_of(stream))
        return meta.records[-1].data if meta and meta.records else None

    def read_stream(self, stream: str, start: int | None, backwards: bool, count: int) -> list[Record]:
        """Up to ``count`` visible events from revision ``start`` (None: the first or the last)."""
        with self.changed:
            if is_metastream(stream) and self._tombstoned(stream[2:]):
                raise StreamDeleted()
            state = self._streams.get(stream)
            if state is not None and state.tombstoned:
                raise StreamDeleted()
            if state is None or not state.records:
                raise StreamNotFound()
            if self.metadata(stream).soft_deleted:
                raise StreamNotFound()
            visible = [r for r in state.records if self._visible(r)]
            if backwards:
                top = state.last_revision if start is None else start
                chosen = [r for r in reversed(visible) if r.revision <= top]
            else:
                bottom = 0 if start is None else start
                chosen = [r for r in visible if r.revision >= bottom]
            return chosen[:count]

    def _tombstoned(self, stream: str) -> bool:
        state = self._streams.get(stream)
        return state is not None and state.tombstoned

    def _visible(self, record: Record) -> bool:
        """Whether a read of the record's own stream shows it (``$all`` shows every record)."""
        state = self._streams[record.stream]
        meta = self.metadata(record.stream)
        if record.revision == DELETED_STREAM or meta.soft_deleted:
            return False
        if meta.truncate_before is not None and record.revision < meta.truncate_before:
            return False
        if meta.max_count is not None and record.revision <= state.last_revision - meta.max_count:
            return False
        if meta.max_age_seconds is not None and record.created < ticks_now() - meta.max_age_seconds * 10_000_000:
            return False
        return True

    def read_all(self, position: int | None, backwards: bool, count: int,
                 accept: Callable[[Record], bool]) -> list[Record]:
        """Up to ``count`` accepted records of ``$all``.

        Forwards from ``position`` includes the record at it; backwards from
        it starts with the record before it. None means the start (forwards)
        or the end (backwards).
        """
        with self.changed:
            if backwards:
                end = len(self._records) if position is None else bisect_left(self._positions, position)
                candidates = (self._records[i] for i in range(end - 1, -1, -1))
            else:
                begin = 0 if position is None else bisect_left(self._positions, position)
                candidates = (self._records[i] for i in range(begin, len(self._records)))
            chosen: list[Record] = []
            for record in candidates:
                if len(chosen) >= count:
                    break
                if accept(record):
                    chosen.append(record)
            return chosen

    # ---------------------------------------------------- subscriptions' view
    def index_after(self, position: int) -> int:
        """Index in the log of the first record after ``position`` (a subscription excludes it)."""
        with self.changed:
            return bisect_right(self._positions, position)

    def end_index(self) -> int:
        with self.changed:
            return len(self._records)

    def records_from(self, index: int, limit: int) -> list[Record]:
        with self.changed:
            return self._records[index:index + limit]

    def head_position(self) -> int:
        with self.changed:
            return self._head_position()

    def stream_snapshot(self, stream: str) -> tuple[list[Record], int, bool]:
        """A stream's visible events, the log index live delivery continues from, and whether it is tombstoned."""
        with self.changed:
            state = self._streams.get(stream)
            visible = [r for r in state.records if self._visible(r)] if state else []
            return visible, len(self._records), bool(state and state.tombstoned)

    def wait_beyond(self, index: int, timeout: float, stopped: Callable[[], bool]) -> None:
        """Block until the log grows past ``index``, ``stopped()`` is true, or ``timeout`` passes."""
        with self.changed:
            self.changed.wait_for(lambda: len(self._records) > index or stopped(), timeout)

    def wake(self) -> None:
        """Wake every waiting subscription (one was cancelled, or the server stops)."""
        with self.changed:
            self.changed.notify_all()
