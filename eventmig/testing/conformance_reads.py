"""Conformance of :class:`~eventmig.ports.EventSource`: commit order, checkpoints, counts, partitions."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from eventmig.model.records import StreamPartitions
from eventmig.ports import EventSource, EventStore
from eventmig.testing.conformance_support import StoreFixtures, append_many, events, first, flat

#: writer processes, and the events each appends, while a reader follows them by checkpoint
WRITERS, WRITES = 3, 40


class ReadConformance(StoreFixtures):
    """Reading all events in commit order, resuming, counting and splitting them."""

    #: stream names a store must keep apart and whole; a backend whose streams cannot have some
    #: of these names (an empty one, say) overrides this with the odd names it can keep
    odd_stream_names: tuple[str, ...] = ("é-ü", "", "x" * 300, "B", "a", "z\u00ff", "order-1-x")

    def test_read_all_in_commit_order_in_batches_from_a_position(self, store: EventStore) -> None:
        for i in range(7):
            store.append(f"s-{i % 3}", events(1, start=i))
        batches = list(store.read_all(batch_size=3))
        assert [len(b) for b in batches] == [3, 3, 1]
        read = flat(iter(batches))
        assert [e.decoded_data()["n"] for e in read] == list(range(7))
        positions = [e.position for e in read]
        assert positions == sorted(positions) and len(set(positions)) == 7
        if store.capabilities.contiguous_positions:
            assert positions == list(range(positions[0], positions[0] + 7))
        after = positions[3]
        assert [e.decoded_data()["n"] for e in flat(store.read_all(after))] == [4, 5, 6]
        bounded = flat(store.read_all(positions[0], until=positions[2]))
        assert [e.decoded_data()["n"] for e in bounded] == [1, 2]
        assert [r[2] for r in flat(store.read_all_rows(after))] == positions[4:]

    def test_resuming_after_a_checkpoint_yields_each_event_once(self, store: EventStore) -> None:
        """A reader stops after some batches and resumes after the last position it handled, while
        writers go on appending: it sees every event once, none twice, none before its checkpoint."""
        for i in range(25):
            store.append(f"s-{i % 4}", events(1, start=i))
        for batch_size in (1, 4, 7, 100):
            seen: list[int] = []
            reader = store.read_all(batch_size=batch_size)
            for _, batch in zip(range(2), reader):
                seen += [e.decoded_data()["n"] for e in batch]
            reader.close()
            checkpoint = flat(store.read_all())[len(seen) - 1].position
            store.append("late", events(2, start=1000 + 10 * batch_size))  # appended while stopped
            seen += [e.decoded_data()["n"] for e in flat(store.read_all(checkpoint, batch_size=batch_size))]
            everything = [e.decoded_data()["n"] for e in flat(store.read_all())]
            assert seen == everything, batch_size
        assert [e.decoded_data()["n"] for e in flat(store.read_all(store.head_position()))] == []

    def test_a_reader_following_concurrent_writers_misses_nothing(self, store: EventStore, store_url: str) -> None:
        """Writers in other processes append while a reader reads after its last checkpoint, again and again:
        a position is never handed out before an event with a smaller one can still commit, so the reader
        sees every event once, in each stream in version order."""
        ctx = multiprocessing.get_context("spawn")
        seen: list[tuple[str, int]] = []
        checkpoint = store.head_position()
        with ctx.Pool(WRITERS) as pool:
            pending = pool.starmap_async(append_many, [(self, store_url, f"w-{i}", WRITES) for i in range(WRITERS)])
            while True:
                done = pending.ready()  # read once more after the writers finished
                for event in flat(store.read_all(checkpoint, batch_size=7)):
                    seen.append((event.stream, event.decoded_data()["n"]))
                    checkpoint = event.position
                if done:
                    break
                time.sleep(0.01)
            assert pending.get(60) == [WRITES] * WRITERS
        assert len(seen) == len(set(seen)) == WRITERS * WRITES
        for i in range(WRITERS):
            assert [n for stream, n in seen if stream == f"w-{i}"] == list(range(WRITES))

    def test_resuming_a_partition_after_a_checkpoint(self, store: EventStore) -> None:
        for i in range(60):
            store.append(f"p-{i % 11}", events(1, start=i))
        whole = flat(store.read_all_rows())
        for index in range(3):
            part = StreamPartitions.of(index, 3)
            rows = flat(store.read_all_rows(streams=part, batch_size=5))
            if len(rows) < 2:
                continue
            checkpoint = rows[len(rows) // 2][2]
            rest = flat(store.read_all_rows(checkpoint, streams=part, batch_size=5))
            assert rows[: len(rows) // 2 + 1] + rest == rows
        assert sum(len(flat(store.read_all_rows(streams=StreamPartitions.of(i, 3)))) for i in range(3)) == len(whole)

    def test_position_after_cuts_slices_that_cover_every_event_once(self, store: EventStore) -> None:
        assert store.position_after(None, 10) is None
        for i in range(23):
            store.append(f"s-{i % 5}", events(1, start=i))
        positions = [e.position for e in flat(store.read_all())]
        cuts: list[int] = []
        while (cut := store.position_after(cuts[-1] if cuts else None, 5)) is not None:
            cuts.append(cut)
        assert cuts == positions[4::5] + ([positions[-1]] if len(positions) % 5 else [])
        until = positions[12]
        assert store.position_after(positions[10], 100, until=until) == until
        assert store.position_after(positions[-1], 3) is None

    def test_head_position_counts_and_streams(self, store: EventStore) -> None:
        assert store.head_position() is None
        assert store.count_events() == 0
        store.append("b", events(2))
        store.append("a", events(3))
        head = store.head_position()
        assert head == flat(store.read_all())[-1].position
        assert store.count_events() == 5
        first_pos = next(iter(store.read_all()))[0].position
        assert store.count_events(after=first_pos) == 4
        assert store.count_events(after=first_pos, until=head) == 4
        assert sorted(store.list_streams()) == ["a", "b"]
        assert store.stream_version("a") == first(store) + 2
        assert store.stream_version("nope") is None
        assert store.stream_versions() == {"a": first(store) + 2, "b": first(store) + 1}

    def test_read_all_rows_by_stream_partition_and_type(self, store: EventStore) -> None:
        """Every event falls in exactly one partition, each stream whole in one, in commit order."""
        names = [f"order-{i}" for i in range(40)] + list(self.odd_stream_names[:3])
        for i in range(300):
            store.append(names[(i * 7) % len(names)], events(1, "Kept" if i % 3 else "Other", start=i))
        everything = flat(store.read_all_rows(batch_size=50))
        head = everything[-1][2]
        for count in (1, 2, 3, 7):
            seen: list[tuple[Any, ...]] = []
            owner: dict[str, int] = {}
            for index in range(count):
                part = StreamPartitions.of(index, count)
                rows = flat(store.read_all_rows(streams=part, batch_size=17))
                assert all(len(b) <= 17 for b in store.read_all_rows(streams=part, batch_size=17))
                assert [r[2] for r in rows] == sorted(r[2] for r in rows)  # commit order kept
                for r in rows:
                    assert owner.setdefault(r[0], index) == index  # a stream lies in one partition
                    assert store.stream_partition(r[0], count) == index
                seen += rows
            assert sorted(seen, key=lambda r: r[2]) == everything  # each event exactly once
        # several partitions at once, a range, and a type filter, together
        after, until = everything[10][2], everything[-20][2]
        both = StreamPartitions.of({0, 2}, 3)
        expected = [r for r in everything if after < r[2] <= until and r[4] == "Kept"
                    and store.stream_partition(r[0], 3) in both.indexes]
        got = flat(store.read_all_rows(after, until=until, streams=both, types=["Kept"], batch_size=9))
        assert got == expected and expected
        assert flat(store.read_all_rows(types=[])) == []
        assert flat(store.read_all_rows(types=["Other", "Nope"])) == [r for r in everything if r[4] == "Other"]
        assert flat(store.read_all_rows(until=head, streams=StreamPartitions.of({0, 1}, 2))) == everything
        # the port's default (filtering what read_all returns) keeps exactly what the backend keeps
        default = flat(EventSource.read_all_rows(store, after, until=until, streams=both, types=["Kept"]))
        assert default == expected
        with pytest.raises(ValueError):
            StreamPartitions.of(3, 3)

    def test_read_all_rows_by_stream_name_range(self, store: EventStore) -> None:
        """Partitions given as name ranges: each event in exactly the range its stream's name falls in, in
        code point order (not the database's collation), whether the store offers bounds or not."""
        names = [f"order-{i}" for i in range(40)] + list(self.odd_stream_names)
        for i in range(400):
            store.append(names[(i * 7) % len(names)], events(1, "Kept" if i % 3 else "Other", start=i))
        everything = flat(store.read_all_rows(batch_size=50))
        offered = store.stream_bounds(3)
        assert offered == () or (len(offered) == 2 and list(offered) == sorted(offered))
        for bounds in [offered or ("order-1", "x"), ("", "order-2"), ("b", "b"), ("é", "é-ü")]:
            seen: list[tuple[Any, ...]] = []
            for index in range(3):
                rows = flat(store.read_all_rows(streams=StreamPartitions.of(index, 3, bounds), batch_size=13))
                assert [r[2] for r in rows] == sorted(r[2] for r in rows)
                low, high = (None, *bounds, None)[index: index + 2]
                assert all((low is None or r[0] >= low) and (high is None or r[0] < high) for r in rows)
                seen += rows
            assert sorted(seen, key=lambda r: r[2]) == everything
            # two ranges at once, with a type filter, as the port's default filters them
            pair = StreamPartitions.of({0, 2}, 3, bounds)
            got = flat(store.read_all_rows(streams=pair, types=["Kept"], batch_size=9))
            assert got == flat(EventSource.read_all_rows(store, streams=pair, types=["Kept"]))
        if offered:  # about as many events in each range
            sizes = [len(flat(store.read_all_rows(streams=StreamPartitions.of(i, 3, offered)))) for i in range(3)]
            assert min(sizes) > len(everything) // 6, sizes
        with pytest.raises(ValueError):
            StreamPartitions.of(0, 3, ("b", "a"))
        with pytest.raises(ValueError):
            StreamPartitions.of(0, 3, ("a",))

    def test_lean_rows_leave_out_only_ids_and_times(self, store: EventStore) -> None:
        """A lean read may blank event ids and record times, and nothing else; filters work as before."""
        for i in range(120):
            store.append(f"s-{i % 9}", events(1, "Kept" if i % 4 else "Other", start=i))
        full = flat(store.read_all_rows(batch_size=25))
        for kwargs in ({}, {"streams": StreamPartitions.of(1, 3), "types": ["Kept"]}):
            lean = flat(store.read_all_rows(batch_size=25, lean=True, **kwargs))
            wanted = flat(store.read_all_rows(batch_size=25, **kwargs))
            assert lean and len(lean) == len(wanted) and len(wanted) <= len(full)
            for got, want in zip(lean, wanted):
                assert len(got) == len(want)
                assert got[:3] == want[:3] and got[4:7] == want[4:7]
                assert got[3] in (None, want[3]) and got[7] in (None, want[7])
