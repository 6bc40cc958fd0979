"""The conformance suite every event store passes, written once, run per backend.

Expectations that legitimately differ between backends come from the
store's declared capabilities, never from its class: where stream versions
start, whether commit positions have gaps.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest

from eventmig import Busy, StreamState, WrongExpectedVersion, new_event
from eventmig.ports import EventStore
from eventmig.model.records import Run, TargetEvent
from eventmig.backends import open_store
from eventmig.model.records import QuarantinedEvent, StreamPartitions


def events(n: int, type_: str = "Happened", start: int = 0) -> list:
    return [new_event(type_, {"n": start + i}, {"trace": f"t{start + i}"}) for i in range(n)]


def first(store: EventStore) -> int:
    return store.capabilities.first_stream_version


# --------------------------------------------------------------------- append
def test_append_and_read_stream_in_order(store: EventStore):
    v = store.append("s-1", events(3), StreamState.NO_STREAM)
    assert v == first(store) + 2
    read = store.read_stream("s-1")
    assert [e.version for e in read] == [first(store) + i for i in range(3)]
    assert [e.decoded_data()["n"] for e in read] == [0, 1, 2]
    assert [e.decoded_metadata()["trace"] for e in read] == ["t0", "t1", "t2"]
    assert all(e.stream == "s-1" and e.type == "Happened" for e in read)


def test_read_stream_from_a_version_with_a_limit(store: EventStore):
    store.append("s", events(5))
    part = store.read_stream("s", from_version=first(store) + 2, limit=2)
    assert [e.decoded_data()["n"] for e in part] == [2, 3]
    assert store.read_stream("missing") == []


def test_expected_version_conflicts(store: EventStore):
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


def test_concurrent_writers_with_the_same_expected_version_one_wins(store_url: str):
    with open_store(store_url) as s:
        s.append("race", events(1))
        expected = s.stream_version("race")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_append_expecting, [(store_url, expected)] * 4)
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    with open_store(store_url) as s:
        assert len(s.read_stream("race")) == 2


def _append_expecting(url: str, expected: int) -> str:
    with open_store(url) as s:
        try:
            s.append("race", events(1), expected)
            return "ok"
        except WrongExpectedVersion:
            return "conflict"


def test_event_ids_are_kept_and_unique(store: EventStore):
    e = new_event("A", {}, event_id="11111111-1111-4111-8111-111111111111")
    store.append("s", [e])
    assert store.read_stream("s")[0].event_id == "11111111-1111-4111-8111-111111111111"
    with pytest.raises(Exception, match="duplicate event id"):
        store.append("t", [e])


# ----------------------------------------------------------------- read_all
def test_read_all_in_commit_order_in_batches_from_a_position(store: EventStore):
    for i in range(7):
        store.append(f"s-{i % 3}", events(1, start=i))
    batches = list(store.read_all(batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [e for b in batches for e in b]
    assert [e.decoded_data()["n"] for e in flat] == list(range(7))
    positions = [e.position for e in flat]
    assert positions == sorted(positions) and len(set(positions)) == 7
    if store.capabilities.contiguous_positions:
        assert positions == list(range(positions[0], positions[0] + 7))
    after = positions[3]
    rest = [e for b in store.read_all(after) for e in b]
    assert [e.decoded_data()["n"] for e in rest] == [4, 5, 6]
    bounded = [e for b in store.read_all(positions[0], until=positions[2]) for e in b]
    assert [e.decoded_data()["n"] for e in bounded] == [1, 2]
    rows = [r for b in store.read_all_rows(after) for r in b]
    assert [r[2] for r in rows] == positions[4:]


def test_head_position_counts_and_streams(store: EventStore):
    assert store.head_position() is None
    assert store.count_events() == 0
    store.append("b", events(2))
    store.append("a", events(3))
    head = store.head_position()
    assert head == [e for b in store.read_all() for e in b][-1].position
    assert store.count_events() == 5
    first_pos = next(iter(store.read_all()))[0].position
    assert store.count_events(after=first_pos) == 4
    assert store.count_events(after=first_pos, until=head) == 4
    assert sorted(store.list_streams()) == ["a", "b"]
    assert store.stream_version("a") == first(store) + 2
    assert store.stream_version("nope") is None
    assert store.stream_versions() == {"a": first(store) + 2, "b": first(store) + 1}


# ------------------------------------------------------------------- epochs
def test_new_epoch_is_separate_until_switched(store: EventStore):
    store.append("s", events(2))
    assert store.active_epoch() == 1
    epoch = store.create_epoch(1)
    assert epoch == 2
    target = store.at_epoch(epoch)
    assert target.head_position() is None
    target.write_batch([TargetEvent("s", first(store), "22222222-2222-4222-8222-222222222222", "New", b"{}", b"{}", 1)])
    assert store.count_events() == 2 and target.count_events() == 1
    with pytest.raises(Exception, match="still being built"):
        store.switch_epoch(epoch, kind="switch", expect_heads={})
    store.finish_epoch(epoch)
    assert {e.epoch: e.status for e in store.epochs()} == {1: "active", 2: "ready"}
    flip = store.switch_epoch(epoch, kind="switch", expect_heads={1: store.head_position()})
    assert (flip.from_epoch, flip.to_epoch) == (1, 2)
    with open_store_like(store) as fresh:
        assert fresh.active_epoch() == 2
        assert [e.type for e in fresh.read_stream("s")] == ["New"]  # the active handle sees the new epoch
        assert len(fresh.at_epoch(1).read_stream("s")) == 2  # the old one is kept
        fresh.append("s", events(1))  # applications keep appending to the active epoch
        assert fresh.stream_version("s") == first(store) + 1
    assert [s.kind for s in store.switches()] == ["switch"]


def test_switch_refuses_when_a_head_moved(store: EventStore):
    store.append("s", events(1))
    head = store.head_position()
    epoch = store.create_epoch(1)
    store.finish_epoch(epoch)
    store.append("s", events(1))  # a late write after verification
    with pytest.raises(Exception, match="changed since it was verified"):
        store.switch_epoch(epoch, kind="switch", expect_heads={1: head})
    assert store.active_epoch() == 1


def test_drop_epoch_refuses_the_active_one(store: EventStore):
    epoch = store.create_epoch(1)
    with pytest.raises(Exception, match="is active"):
        store.drop_epoch(1)
    store.drop_epoch(epoch)
    assert [e.epoch for e in store.epochs()] == [1]


def open_store_like(store: EventStore) -> EventStore:
    return open_store(store._raw_url)  # type: ignore[attr-defined]


# ------------------------------------------------------- runs and batches
def make_run(checkpoint: int | None = None) -> Run:
    now = time.time()
    return Run("r1", "migrate", 1, 2, "running", checkpoint, "fp", now, now, {"read": 1}, {})


def test_write_batch_commits_events_quarantine_and_checkpoint_together(store: EventStore):
    epoch = store.create_epoch(1)
    target = store.at_epoch(epoch)
    batch = [TargetEvent("s", first(store) + i, f"00000000-0000-4000-8000-00000000000{i}", "T", b"{}", b"{}", 5) for i in range(3)]
    q = QuarantinedEvent("r1", "s", 1, 9, "e", "Bad", b"{", b"{}", 1, "payload is not valid JSON")
    target.write_batch(batch, run=make_run(42), quarantined=[q])
    assert target.count_events() == 3
    (run,) = store.runs("migrate")
    assert run.checkpoint == 42 and run.stats == {"read": 1}
    (stored_q,) = store.quarantine("r1")
    assert stored_q.reason == "payload is not valid JSON" and stored_q.data == b"{" and not stored_q.accepted
    assert store.accept_quarantine("r1") == 1
    assert store.quarantine("r1")[0].accepted


def test_failed_batch_leaves_no_trace(store: EventStore):
    epoch = store.create_epoch(1)
    store.finish_epoch(epoch)  # unique indexes present
    target = store.at_epoch(epoch)
    target.write_batch([TargetEvent("s", 1, "aaaaaaaa-0000-4000-8000-000000000000", "T", b"{}", b"{}", 1)], run=make_run(1))
    duplicate = [TargetEvent("s", 2, "bbbbbbbb-0000-4000-8000-000000000000", "T", b"{}", b"{}", 1),
                 TargetEvent("s", 1, "cccccccc-0000-4000-8000-000000000000", "T", b"{}", b"{}", 1)]
    with pytest.raises(Exception):
        target.write_batch(duplicate, run=make_run(2))
    assert target.count_events() == 1
    assert store.runs()[0].checkpoint == 1


def test_lock_is_exclusive_across_processes_and_dies_with_its_holder(store_url: str):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(store_url, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with open_store(store_url) as s:
            with pytest.raises(Busy, match="holds the 'migrate' lock"):
                with s.lock("migrate"):
                    pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.join()
    with open_store(store_url) as s:
        with s.lock("migrate"):
            pass


def _hold_lock(url: str, ready, release) -> None:
    with open_store(url) as s:
        with s.lock("migrate"):
            ready.set()
            release.wait(60)


def test_capabilities_are_declared(store: EventStore):
    caps = store.capabilities
    assert caps.first_stream_version in (0, 1)
    assert isinstance(caps.atomic_batches, bool) and isinstance(caps.contiguous_positions, bool)


def test_url_never_shows_a_password(postgres_server: str):
    url = postgres_server.replace("postgres@", "postgres:hunter2@")
    with open_store(url) as s:
        assert "hunter2" not in s.url and "***" in s.url


# ------------------------------------------------------- partitioned reads
def test_read_all_rows_by_stream_partition_and_type(store: EventStore):
    """Every event falls in exactly one partition, each stream whole in one, in commit order."""
    names = [f"order-{i}" for i in range(40)] + ["é-ü", "", "x" * 300]
    for i in range(300):
        store.append(names[(i * 7) % len(names)], events(1, "Kept" if i % 3 else "Other", start=i))
    everything = [r for b in store.read_all_rows(batch_size=50) for r in b]
    head = everything[-1][2]
    for count in (1, 2, 3, 7):
        seen: list[tuple] = []
        owner: dict[str, int] = {}
        for index in range(count):
            part = StreamPartitions.of(index, count)
            rows = [r for b in store.read_all_rows(streams=part, batch_size=17) for r in b]
            assert all(len(b) <= 17 for b in store.read_all_rows(streams=part, batch_size=17))
            assert [r[2] for r in rows] == sorted(r[2] for r in rows)  # commit order kept
            for r in rows:
                assert owner.setdefault(r[0], index) == index  # a stream lies in one partition
                assert store.stream_partition(r[0], count) == index
            seen += rows
        assert sorted(seen, key=lambda r: r[2]) == everything  # each event exactly once
    # several partitions at once, a range, and a type filter, together
    after = everything[10][2]
    until = everything[-20][2]
    both = StreamPartitions.of({0, 2}, 3)
    expected = [r for r in everything if after < r[2] <= until and r[4] == "Kept"
                and store.stream_partition(r[0], 3) in both.indexes]
    got = [r for b in store.read_all_rows(after, until=until, streams=both, types=["Kept"], batch_size=9) for r in b]
    assert got == expected and expected
    assert [r for b in store.read_all_rows(types=[]) for r in b] == []
    assert [r for b in store.read_all_rows(types=["Other", "Nope"]) for r in b] == [r for r in everything if r[4] == "Other"]
    assert [r for b in store.read_all_rows(until=head, streams=StreamPartitions.of({0, 1}, 2)) for r in b] == everything
    # the interface's default (filtering what read_all returns) keeps exactly what the backend keeps
    default = [r for b in EventStore.read_all_rows(store, after, until=until, streams=both, types=["Kept"]) for r in b]
    assert default == expected
    with pytest.raises(ValueError):
        StreamPartitions.of(3, 3)


def test_read_all_rows_by_stream_name_range(store: EventStore):
    """Partitions given as name ranges: each event in exactly the range its stream's name falls in, in code point
    order (not the database's collation), whether the store offers bounds or not."""
    names = [f"order-{i}" for i in range(40)] + ["B", "a", "é-ü", "z\u00ff", "", "x" * 300, "order-1-x"]
    for i in range(400):
        store.append(names[(i * 7) % len(names)], events(1, "Kept" if i % 3 else "Other", start=i))
    everything = [r for b in store.read_all_rows(batch_size=50) for r in b]
    offered = store.stream_bounds(3)
    assert offered == () or (len(offered) == 2 and list(offered) == sorted(offered))
    for bounds in [offered or ("order-1", "x"), ("", "order-2"), ("b", "b"), ("é", "é-ü")]:
        seen: list[tuple] = []
        for index in range(3):
            part = StreamPartitions.of(index, 3, bounds)
            rows = [r for b in store.read_all_rows(streams=part, batch_size=13) for r in b]
            assert [r[2] for r in rows] == sorted(r[2] for r in rows)
            edges = (None, *bounds, None)
            for r in rows:
                assert (edges[index] is None or r[0] >= edges[index]) and (edges[index + 1] is None or r[0] < edges[index + 1])
            seen += rows
        assert sorted(seen, key=lambda r: r[2]) == everything
        # two ranges at once, with a type filter, as the interface's default filters them
        pair = StreamPartitions.of({0, 2}, 3, bounds)
        got = [r for b in store.read_all_rows(streams=pair, types=["Kept"], batch_size=9) for r in b]
        assert got == [r for b in EventStore.read_all_rows(store, streams=pair, types=["Kept"]) for r in b]
    if offered:  # about as many events in each range
        sizes = [sum(len(b) for b in store.read_all_rows(streams=StreamPartitions.of(i, 3, offered))) for i in range(3)]
        assert min(sizes) > len(everything) // 6, sizes
    with pytest.raises(ValueError):
        StreamPartitions.of(0, 3, ("b", "a"))
    with pytest.raises(ValueError):
        StreamPartitions.of(0, 3, ("a",))


def test_lean_rows_leave_out_only_ids_and_times(store: EventStore):
    """A lean read may blank event ids and record times, and nothing else; filters work as before."""
    for i in range(120):
        store.append(f"s-{i % 9}", events(1, "Kept" if i % 4 else "Other", start=i))
    full = [r for b in store.read_all_rows(batch_size=25) for r in b]
    part = StreamPartitions.of(1, 3)
    for kwargs in ({}, {"streams": part, "types": ["Kept"]}):
        lean = [r for b in store.read_all_rows(batch_size=25, lean=True, **kwargs) for r in b]
        wanted = [r for b in store.read_all_rows(batch_size=25, **kwargs) for r in b]
        assert lean and len(lean) == len(wanted) and len(wanted) <= len(full)
        for got, want in zip(lean, wanted):
            assert len(got) == len(want)
            assert got[:3] == want[:3] and got[4:7] == want[4:7]
            assert got[3] in (None, want[3]) and got[7] in (None, want[7])
