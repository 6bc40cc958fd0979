"""Conformance of :class:`~eventmig.ports.StreamAppender`: appends, expected versions, event ids, order."""

from __future__ import annotations

import itertools
import multiprocessing

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmig.errors import StoreError, WrongExpectedVersion
from eventmig.model.events import new_event
from eventmig.model.records import StreamState
from eventmig.ports import EventStore
from eventmig.testing.conformance_support import StoreFixtures, append_expecting, events, first, flat

_examples = itertools.count()


class StreamConformance(StoreFixtures):
    """Appending to streams and reading them back."""

    def test_append_and_read_stream_in_order(self, store: EventStore) -> None:
        v = store.append("s-1", events(3), StreamState.NO_STREAM)
        assert v == first(store) + 2
        read = store.read_stream("s-1")
        assert [e.version for e in read] == [first(store) + i for i in range(3)]
        assert [e.decoded_data()["n"] for e in read] == [0, 1, 2]
        if store.capabilities.keeps_metadata:
            assert [e.decoded_metadata()["trace"] for e in read] == ["t0", "t1", "t2"]
        else:  # declared: the table has nowhere to keep it
            assert [e.decoded_metadata() for e in read] == [{}, {}, {}]
        assert all(e.stream == "s-1" and e.type == "Happened" for e in read)

    def test_read_stream_from_a_version_with_a_limit(self, store: EventStore) -> None:
        store.append("s", events(5))
        part = store.read_stream("s", from_version=first(store) + 2, limit=2)
        assert [e.decoded_data()["n"] for e in part] == [2, 3]
        assert store.read_stream("missing") == []

    def test_expected_version_conflicts(self, store: EventStore) -> None:
        last = store.append("s", events(2), StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersion, match=f"concurrency conflict on stream 's': expected no stream, "
                                                       f"the stream is at version {last}"):
            store.append("s", events(1), StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersion, match=f"expected version {last - 1}, the stream is at version {last}"):
            store.append("s", events(1), last - 1)
        assert store.append("s", events(1), last) == last + 1
        with pytest.raises(WrongExpectedVersion, match="expected an existing stream, the stream does not exist"):
            store.append("other", events(1), StreamState.EXISTS)
        assert store.append("s", events(1), StreamState.EXISTS) == last + 2
        assert len(store.read_stream("s")) == 4  # failed appends wrote nothing

    def test_an_empty_append_checks_and_writes_nothing(self, store: EventStore) -> None:
        assert store.append("new", [], StreamState.NO_STREAM) == first(store) - 1
        assert store.read_stream("new") == [] and store.head_position() is None
        last = store.append("s", events(2))
        assert store.append("s", [], last) == last
        with pytest.raises(WrongExpectedVersion):
            store.append("s", [], last + 1)
        assert store.count_events() == 2

    def test_concurrent_writers_with_the_same_expected_version_one_wins(self, store_url: str) -> None:
        with self.open_another(store_url) as s:
            s.append("race", events(1))
            expected = s.stream_version("race")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(4) as pool:
            results = pool.starmap(append_expecting, [(self, store_url, expected)] * 4)
        assert sorted(results) == ["conflict"] * 3 + ["ok"]
        with self.open_another(store_url) as s:
            assert len(s.read_stream("race")) == 2

    def test_event_ids_are_kept_and_unique(self, store: EventStore) -> None:
        e = new_event("A", {}, event_id="11111111-1111-4111-8111-111111111111")
        store.append("s", [e])
        if not store.capabilities.keeps_event_ids:  # declared: an id derived from stream and version, stable
            derived = store.read_stream("s")[0].event_id
            assert derived != e.event_id and store.read_stream("s")[0].event_id == derived
            assert flat(store.read_all())[0].event_id == derived
            return
        assert store.read_stream("s")[0].event_id == "11111111-1111-4111-8111-111111111111"
        if store.capabilities.unique_event_ids:
            with pytest.raises(StoreError, match="duplicate event id"):
                store.append("t", [e])
            assert store.read_stream("t") == []
        else:  # ids are unique per stream only: another stream takes it
            store.append("t", [e])
            assert store.read_stream("t")[0].event_id == e.event_id

    def test_reappending_the_same_event_ids_never_writes_them_twice(self, store: EventStore) -> None:
        """A writer that retries an append it cannot tell succeeded: its events are in the stream once."""
        caps = store.capabilities
        sent = events(3)
        last = store.append("s", sent, StreamState.NO_STREAM)
        # retried with the version it expected, the stream's version tells the retry on every store; with
        # none (ANY) only the ids can, which a store that neither enforces them nor dedupes them cannot
        by_ids = caps.unique_event_ids or caps.idempotent_appends
        retries = [StreamState.NO_STREAM, first(store) - 1] + ([StreamState.ANY] if by_ids else [])
        for expected in retries:
            if caps.idempotent_appends:
                assert store.append("s", sent, expected) == last
            else:
                with pytest.raises(StoreError):
                    store.append("s", sent, expected)
        # part of the ids again, with a new one: never a half-written append
        with pytest.raises(StoreError):
            store.append("s", [sent[2], *events(1)], StreamState.ANY if by_ids else first(store) + 1)
        read = store.read_stream("s")
        if caps.keeps_event_ids:
            assert [e.event_id for e in read] == [e.event_id for e in sent]
        assert [msgspec.json.decode(e.data) for e in read] == [msgspec.json.decode(e.data) for e in sent]
        assert store.count_events() == 3 and store.stream_version("s") == last

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=12))
    def test_appends_read_back_in_the_order_they_committed(self, store: EventStore, appends) -> None:
        """Any sequence of appends to a few streams: read_all after the head before them returns exactly
        them, in order, positions rising; each stream numbered on from its first version."""
        head = store.head_position()
        run = next(_examples)  # the store outlives examples: each appends to streams of its own
        names = [f"example-{run}-{i}" for i in range(4)]
        expected: list[tuple[str, int, int]] = []
        versions: dict[str, int] = {}
        for n, (index, count) in enumerate(appends):
            stream = names[index]
            last = store.append(stream, events(count, start=n * 10))
            start = versions.get(stream, first(store) - 1) + 1
            assert last == start + count - 1
            versions[stream] = last
            expected += [(stream, start + i, n * 10 + i) for i in range(count)]
        read = flat(store.read_all(head, batch_size=4))
        assert [(e.stream, e.version, e.decoded_data()["n"]) for e in read] == expected
        positions = [e.position for e in read]
        assert positions == sorted(set(positions))
        for stream, version in versions.items():
            assert store.stream_version(stream) == (version if version >= first(store) else None)
            assert [e.version for e in store.read_stream(stream)] == list(range(first(store), version + 1))
