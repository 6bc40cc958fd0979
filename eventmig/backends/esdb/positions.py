"""Commit positions a count read, kept to cut the slices a job reads next.

A job counts the events of a range (for its progress), then cuts the range
into slices of N events (``position_after``), then reads each slice. On
EventStoreDB every one of those is a read of the events themselves: the
server keeps no count and no index by ordinal. Kept from the count, the
positions answer the slicing without a second read of the range.
"""

from __future__ import annotations

import bisect
from array import array

from .names import EpochNames

#: at most this many commit positions kept from a count for the slices that follow it (8 bytes each)
KEPT_AT_MOST = 10_000_000


class Positions:
    """The commit positions of an epoch's events in ``(start, end]``, as a count read them.

    Committed positions never change, so a later question about a range
    inside this one is answered from here. A stream deleted meanwhile still
    counts (a read then skips its events: a slice comes out smaller).
    """

    __slots__ = ("names", "start", "end", "positions")

    def __init__(self, names: EpochNames, start: int | None, end: int | None, positions: array[int]) -> None:
        self.names, self.start, self.end, self.positions = names, start, end, positions

    def covers(self, names: EpochNames, after: int | None, until: int | None) -> bool:
        if names != self.names or until is None or self.end is None or until > self.end:
            return False  # up to the head: events appended since the count are not here
        return self.start is None or (after is not None and after >= self.start)

    def after(self, after: int | None, count: int, until: int) -> int | None:
        first = 0 if after is None else bisect.bisect_right(self.positions, after)
        last = bisect.bisect_right(self.positions, until)
        if first >= last:
            return None
        return self.positions[min(first + count, last) - 1]
