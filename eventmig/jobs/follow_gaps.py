"""Gaps in commit positions: how far a follower may move before a hole that may still fill.

PostgreSQL hands out positions from a sequence when a transaction inserts,
and transactions commit in any order: a reader can see position 12
committed while 11 is still in flight, and a checkpoint moved to 12 would
skip 11 for ever. A transaction that rolls back leaves its positions empty
for ever, too. Like Marten's high-water mark, a follower applies events only
up to the first hole it cannot yet call empty, and calls a hole empty when

* every transaction that was in progress when the hole was first seen has
  ended and the hole is still there (the store's transactions marker; at
  least :data:`MIN_WAIT_S` after it was first seen, since a transaction gets
  its id a moment after its position), or
* it stayed empty for the bounded wait (``wait_s``): a transaction open that
  long is treated as rolled back, and the gap is recorded as ``waited`` so an
  operator can see it.

A store whose positions become visible in commit order (SQLite, EventStoreDB:
no marker) never has a hole that fills later: each is empty when seen.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from eventmig.model.records import Gap
from eventmig.ports import EventStore

#: the least time a hole is watched before the transactions marker may call it empty
MIN_WAIT_S = 0.2


class _Watched(msgspec.Struct):
    first: int
    last: int
    seen_at: float
    marker: Any
    ended: bool = False


class GapWatch:
    """The holes one follower has seen in one epoch, and whether each may still fill."""

    def __init__(self, store: EventStore, wait_s: float) -> None:
        self.store = store
        self.wait_s = wait_s
        self.in_order = store.transactions_marker() is None
        self._watched: list[_Watched] = []

    def before_read(self) -> None:
        """Ask, before reading, whether the transactions behind each watched hole have ended."""
        for w in self._watched:
            if not w.ended:
                w.ended = self.store.transactions_ended(w.marker)

    def usable(self, rows: Sequence[Sequence[Any]], after: int | None) -> tuple[int, list[Gap]]:
        """How many of ``rows`` (read after ``after``) lie before the first hole that may fill, and the holes
        among them now known to be empty."""
        if self.in_order:
            return len(rows), []
        expected = (after if after is not None else 0) + 1
        empty: list[Gap] = []
        marker: Any = None
        now = time.monotonic()
        for i, row in enumerate(rows):
            position = row[2]
            if position > expected:
                gap = self._judge(expected, position - 1, now)
                if gap is None:
                    if not any(w.first <= expected <= w.last for w in self._watched):
                        if marker is None:
                            marker = self.store.transactions_marker()
                        self._watched.append(_Watched(expected, position - 1, now, marker))
                    return i, empty
                empty.append(gap)
            expected = position + 1
        self._watched = [w for w in self._watched if w.last >= expected]
        return len(rows), empty

    def _judge(self, first: int, last: int, now: float) -> Gap | None:
        """The hole ``first..last`` as empty (a Gap), or None while it may fill."""
        for w in self._watched:
            if w.first <= first <= w.last:
                waited = now - w.seen_at
                if w.ended and waited >= MIN_WAIT_S:
                    return Gap(first, last, "ended", round(waited, 3))
                if waited >= self.wait_s:
                    return Gap(first, last, "waited", round(waited, 3))
                return None
        return None
