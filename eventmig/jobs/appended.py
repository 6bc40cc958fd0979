"""What the events appended since live read-model tables were built changed: the rows of the keys they touch.

A rebuild of unchanged code, over the epoch the live tables were built
from, finds rows that differ from the live ones when events were appended
after the live tables' own checkpoint. Those differences may be swapped in
only when the appended events explain them, which this module makes
checkable: the keys the appended events reach (``touched``) and, folded
sequentially for those keys alone, their rows at the live tables'
checkpoint (``then``) and at the rebuild's (``now``). The live tables are
explained exactly when they equal the rebuilt tables with the touched keys'
rows of ``now`` put back to those of ``then`` (the caller compares digests).

What is read to get there depends on how a projection finds its keys:

* keyed by stream: the appended events name the touched streams; only
  those streams are read, whole;
* keyed by a field or a function of the event: the appended events give the
  touched keys, and the epoch is read up to the rebuild's checkpoint,
  folding those keys alone;
* ``global_order``: keys may depend on every earlier event (an ``Index``),
  so the epoch is read twice, once to find the touched keys and once to fold
  them.

Nothing here writes; it runs only when a rebuild's rows differ from live
tables of the same code, and costs about what the appended events and the
touched keys' events cost to fold (the whole epoch read once or twice
without a stream key), in this process, which holds the touched keys'
states and their rows then and now in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from eventmig.projection.api import STREAM, Projection
from eventmig.projection.fold import Replay
from eventmig.ports import EventStore
from eventmig.model.chains import CompiledRegistry

#: up to this many touched streams are read one by one; more, and one read of the epoch is cheaper
STREAMS_READ_ONE_BY_ONE = 1000
_PAGE = 10_000

Rows = dict[str, list[tuple[Any, ...]]]


class Touched(msgspec.Struct):
    """The rows of the keys the appended events touch, before and after them."""

    events: int  # events appended in (since, until]
    keys: int
    then: Rows  # at ``since``: what live tables built up to there hold for those keys
    now: Rows  # at ``until``: what the rebuild holds for them


def touched_rows(
    source: EventStore, compiled: CompiledRegistry, projection: Projection, since: int | None, until: int
) -> Touched:
    """The rows the events in ``(since, until]`` touch, at ``since`` and at ``until``."""
    if projection.key is STREAM:
        streams: set[str] = set()
        events = 0
        for batch in source.read_all_rows(since, until=until, batch_size=_PAGE, lean=True):
            streams.update(row[0] for row in batch)
            events += len(batch)
        then, now = _fold_until(Replay([projection], compiled), _rows_of_streams(source, streams, until), since)
        return Touched(events, len(streams), then, now)
    keys, events = _touched_keys(source, compiled, projection, since, until)
    folding = Replay([projection], compiled, keep=lambda _index, key, _row: key in keys)
    then, now = _fold_until(folding, _all_rows(source, None, until), since)
    return Touched(events, len(keys), then, now)


def _touched_keys(
    source: EventStore, compiled: CompiledRegistry, projection: Projection, since: int | None, until: int
) -> tuple[set[Any], int]:
    """The keys events in ``(since, until]`` reach, and how many events those are."""
    keys: set[Any] = set()
    first = since if since is not None else -1

    def collect(_index: int, key: Any, row: Any) -> bool:
        if row[2] > first:
            keys.add(key)
        return False  # keys only: no state is kept

    finding = Replay([projection], compiled, keep=collect)
    # without a global order a key is a function of its event alone: the appended events suffice
    rows = _all_rows(source, None if projection.global_order else since, until)
    events = 0
    for row in rows:
        finding.feed(row)
        events += row[2] > first
    return keys, events


def _fold_until(folding: Replay, rows: Iterator[tuple[Any, ...]], since: int | None) -> tuple[Rows, Rows]:
    """Feed rows in commit order; the rows of the states as they were at ``since``, and at the end."""
    then: Rows | None = None if since is not None else folding.rows()
    for row in rows:
        if then is None and row[2] > since:  # type: ignore[operator]
            then = folding.rows()
        folding.feed(row)
    if then is None:
        then = folding.rows()
    return then, folding.rows()


def _rows_of_streams(source: EventStore, streams: set[str], until: int) -> Iterator[tuple[Any, ...]]:
    """The events of ``streams`` up to ``until``, in commit order."""
    if len(streams) <= STREAMS_READ_ONE_BY_ONE:
        rows = [msgspec.structs.astuple(e) for s in streams for e in source.read_stream(s) if e.position <= until]
        yield from sorted(rows, key=lambda row: row[2])
        return
    for row in _all_rows(source, None, until):
        if row[0] in streams:
            yield row


def _all_rows(source: EventStore, after: int | None, until: int) -> Iterator[tuple[Any, ...]]:
    for batch in source.read_all_rows(after, until=until, batch_size=_PAGE):
        yield from batch
