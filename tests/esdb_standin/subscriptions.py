"""Catch-up subscriptions: history first, then a caught-up signal, then live records.

A subscription starting at a position or revision excludes it (a reader
resumes *after* what it has seen), unlike a read of ``$all``, which includes
the record at its position. Filtered ``$all`` subscriptions send a checkpoint
every so many records considered, matching or not, so a reader whose filter
matches nothing still learns how far it got; the stand-in's checkpoint is the
position of the last record considered, never beyond the head of the log.
The server's catch-up checkpoint is the last matching event of a page or the
start of the page, which is equally safe to resume from (exclusively).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .filters import Filter
from .store import DELETED_STREAM, EventLog, Record, StreamDeleted

_PAGE = 256
_POLL_SECONDS = 0.5  # a cancelled subscription is woken at once; this only bounds a missed wake-up


@dataclass(frozen=True, slots=True)
class Event:
    record: Record


@dataclass(frozen=True, slots=True)
class Checkpoint:
    position: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    position: int | None = None  # $all: where to resume from
    revision: int | None = None  # a stream: where to resume from


Item = Event | Checkpoint | CaughtUp
Stopped = Callable[[], bool]


def subscribe_to_all(log: EventLog, start_index: int, flt: Filter, stopped: Stopped) -> Iterator[Item]:
    """Every accepted record from log index ``start_index`` on, for as long as the caller listens."""
    index = start_index
    considered = 0
    live = False
    while not stopped():
        page = log.records_from(index, _PAGE)
        if not page:
            if not live:
                live = True
                before = log.records_from(index - 1, 1) if index > 0 else []
                yield CaughtUp(position=before[0].position if before else None)
            log.wait_beyond(index, _POLL_SECONDS, stopped)
            continue
        for record in page:
            index += 1
            if flt.accept(record):
                yield Event(record)
            if flt.checkpoint_interval is not None:
                considered += 1
                if considered >= flt.checkpoint_interval:
                    considered = 0
                    yield Checkpoint(record.position)


def subscribe_to_stream(log: EventLog, stream: str, after: int | None, from_end: bool,
                        stopped: Stopped) -> Iterator[Item]:
    """A stream's events after revision ``after`` (None: from its first), then its new ones.

    History is what a read of the stream shows (``$tb`` and the rest apply);
    live delivery follows the log from the moment history was taken, so no
    event falls between the two. A tombstone ends the subscription as deleted.
    """
    history, index, tombstoned = log.stream_snapshot(stream)
    if tombstoned:
        raise StreamDeleted()
    last = after
    if not from_end:
        for record in history:
            if after is None or record.revision > after:
                last = record.revision
                yield Event(record)
    elif history:
        last = history[-1].revision
    yield CaughtUp(revision=last)
    while not stopped():
        page = log.records_from(index, _PAGE)
        if not page:
            log.wait_beyond(index, _POLL_SECONDS, stopped)
            continue
        for record in page:
            index += 1
            if record.stream != stream:
                continue
            if record.revision == DELETED_STREAM:
                raise StreamDeleted()
            if last is None or record.revision > last:
                last = record.revision
                yield Event(record)
