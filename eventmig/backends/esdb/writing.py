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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eventmig.errors import StoreError
from . import lineage
from .names import EpochNames

#: the server's default MaxAppendSize is 1 MiB (data + metadata + twice the type's length per event);
#: stay well below it
MAX_APPEND_BYTES = 768 * 1024
#: streams appended at once (gRPC calls in flight on one channel)
STREAMS_IN_FLIGHT = 8


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
    """Append each stream's chunks in order, streams in parallel; the first failure is raised."""
    by_stream: dict[str, list[StreamAppend]] = {}
    for a in appends:
        by_stream.setdefault(a.stream, []).append(a)
    if len(by_stream) <= 1:  # none (a batch of only a checkpoint) or one: no threads to start
        for chunks in by_stream.values():
            _append_stream(client, chunks, first_version)
        return
    with ThreadPoolExecutor(min(STREAMS_IN_FLIGHT, len(by_stream))) as pool:
        for future in [pool.submit(_append_stream, client, chunks, first_version) for chunks in by_stream.values()]:
            future.result()


def _append_stream(client: Any, chunks: list[StreamAppend], first_version: int) -> None:
    from kurrentdbclient.exceptions import WrongCurrentVersionError

    for a in chunks:
        try:
            _append(client, a.stream, a.expected, a.events, first_version)
        except WrongCurrentVersionError:
            _append_the_rest(client, a, first_version)


def _append(client: Any, stream: str, expected: int | None, events: list[Any], first_version: int) -> None:
    from kurrentdbclient import StreamState

    current = StreamState.NO_STREAM if expected is None or expected < first_version else expected
    client.append_to_stream(stream, current_version=current, events=events)


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
