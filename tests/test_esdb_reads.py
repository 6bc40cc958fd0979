"""Reading an EventStoreDB epoch for a job: the positions a count read cut the slices that follow it.

The server keeps no count and no index by ordinal, so counting a range
and cutting it into slices are both reads of the events; the backend keeps
the count's positions and answers the slicing from them. These tests hold
the answers to what reading the events again gives.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmig import new_event
from eventmig.backends import open_store


def cuts(store, after, until, size):
    found, start = [], after
    while (end := store.position_after(start, size, until=until)) is not None and (until is None or end <= until):
        found.append(end)
        if end == until:
            break
        start = end
    return found


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.integers(0, 25), size=st.integers(1, 7), skip=st.integers(0, 5))
def test_slices_cut_from_a_count_are_the_slices_a_read_cuts(esdb_node, events, size, skip):
    with open_store(esdb_node.url) as store:
        start = store.head_position()
        for i in range(events):
            store.append(f"r{i % 4}-{start}", [new_event("E", {"i": i})])
        positions = [r[2] for b in store.read_all_rows(start) for r in b]
        after = positions[skip - 1] if 0 < skip <= len(positions) else start
        head = store.head_position()
        with open_store(esdb_node.url) as reader:  # a fresh handle: nothing kept
            expected = cuts(reader, after, head, size)
        assert store.count_events(after, head) == len([p for p in positions if after is None or p > after])
        assert cuts(store, after, head, size) == expected


def test_an_event_appended_after_the_count_is_still_found(esdb_node):
    with open_store(esdb_node.url) as store:
        for i in range(5):
            store.append("s-1", [new_event("E", {"i": i})])
        head = store.head_position()
        assert store.count_events(None, head) == 5
        store.append("s-2", [new_event("E", {"i": 5})])
        later = store.head_position()
        assert later > head
        assert store.position_after(head, 10, until=later) == later  # beyond what the count kept: read
        assert store.position_after(None, 10, until=head) == head
        assert store.position_after(None, 10) == later  # up to the head: read, never the kept ones
