"""Writing a migration's batch to EventStoreDB: per stream, explicit revisions, deterministic ids.

The server appends atomically to one stream at a time, never across
streams, and a batch is at most 1 MiB. So a batch of target events is cut
into runs of consecutive events of one stream, each cut again under the
size limit, and appended with the expected revision the numbering implies
(the revision before its first event). Each event keeps the id the
migration gave it (a UUID, or a UUIDv5 of a non-UUID id), so after a crash
the same batch, numbered the same way, is a no-op on the server; anything
else is a conflict, never a duplicate. Streams are written several at a
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventmig.errors import StoreError
from . import batch_append, lineage
from .names import EpochNames

#: the server's default MaxAppendSize is 1 MiB (data + metadata + twice the type's length per event);
#: stay well below it
MAX_APPEND_BYTES = 768 * 1024


class StreamAppend:
    """Consecutive events of one stream, with the revision the stream must be at before them."""

    __slots__ = ("stream", "expected", "events")

    def __init__(self, stream: str, expected: int | None, events: list[Any]) -> None:
        self.stream, self.expected, self.events = stream, expected, events


def plan(events: Sequence[Sequence[Any]], names: EpochNames, first_version: int) -> list[StreamAppend]:
    """The appends for target events (rows in TargetEvent order); refuse a batch whose numbering has gaps."""
    from kurrentdbclient import NewEvent

    by_stream: dict[str, list[Any]] = {}
    for row in events:
        by_stream.setdefault(row[0], []).append(row)
    appends: list[StreamAppend] = []
    for stream, rows in by_stream.items():
        start = rows[0][1]
        if [r[1] for r in rows] != list(range(start, start + len(rows))) or start < first_version:
            raise StoreError(f"batch for stream {stream!r} is not numbered consecutively from {start}: "
                             f"{[r[1] for r in rows][:5]}")
        chunk: list[Any] = []
        size, expected = 0, start - 1
        for row in rows:
            metadata, uid = lineage.to_server(row[5], row[6], row[2])
            event = NewEvent(type=row[3], data=row[4], metadata=metadata, id=uid)
            cost = len(row[4]) + len(metadata) + 2 * len(row[3])
            if chunk and size + cost > MAX_APPEND_BYTES:
                appends.append(StreamAppend(names.physical(stream), expected, chunk))
                expected += len(chunk)
                chunk, size = [], 0
            chunk.append(event)
            size += cost
        appends.append(StreamAppend(names.physical(stream), expected, chunk))
    return appends


def append_all(client: Any, appends: list[StreamAppend], first_version: int) -> None:
    """Append every stream's chunks in order, all streams in flight at once; the first real failure is raised.

    Round k sends the k-th chunk of every stream in one BatchAppend call
    (:mod:`.batch_append`): a stream's next chunk waits for the answer to
    the one before, whose revision it expects, since the server may
    complete one call's requests in any order. Most streams of a batch have
    one chunk, so a batch is usually one call. A conflict is looked into
    stream by stream (:func:`_append_the_rest`); any other refusal is raised.
    """
    from kurrentdbclient.exceptions import WrongCurrentVersionError

    by_stream: dict[str, list[StreamAppend]] = {}
    for a in appends:
        by_stream.setdefault(a.stream, []).append(a)
    rounds = max((len(chunks) for chunks in by_stream.values()), default=0)
    for k in range(rounds):
        sent = [chunks[k] for chunks in by_stream.values() if len(chunks) > k]
        requests = [batch_append.Request(a.stream, _expected(a.expected, first_version), a.events) for a in sent]
        chunk_of = {id(r): a for r, a in zip(requests, sent)}
        for failure in batch_append.append_many(client, requests):
            if not isinstance(failure.error, WrongCurrentVersionError):
                raise failure.error
            _append_the_rest(client, chunk_of[id(failure.request)], first_version)


def _expected(expected: int | None, first_version: int) -> int | None:
    """The revision a chunk expects its stream at; None: the stream must not exist yet."""
    return None if expected is None or expected < first_version else expected


def _append(client: Any, stream: str, expected: int | None, events: list[Any], first_version: int) -> None:
    from kurrentdbclient import StreamState

    current = _expected(expected, first_version)
    client.append_to_stream(stream, current_version=StreamState.NO_STREAM if current is None else current, events=events)


def _append_the_rest(client: Any, a: StreamAppend, first_version: int) -> None:
    """After a conflict: if the stream already holds the first events of this chunk, at their revisions and
    with their ids, append only the rest; otherwise the conflict is real, and raised again.

    The server answers a repeat of a whole append as a no-op but a repeat that matches in part as a
    conflict; a job resumed with other batch boundaries (another batch size) repeats in part.
    """
    from kurrentdbclient.exceptions import NotFoundError

    start = (a.expected if a.expected is not None else first_version - 1) + 1
    try:
        there = client.get_stream(a.stream, stream_position=start, limit=len(a.events))
    except NotFoundError:
        there = ()
    done = 0
    for held, wanted in zip(there, a.events):
        if held.id != wanted.id:
            break
        done += 1
    if done == 0 or done < len(there):
        _append(client, a.stream, a.expected, a.events, first_version)  # not ours: the server's conflict again
    if done < len(a.events):
        _append(client, a.stream, start + done - 1, a.events[done:], first_version)
