"""Conformance of :class:`~eventmig.ports.JobLedger` and of ``write_batch``: runs, checkpoints,
quarantine, locks."""

from __future__ import annotations

import multiprocessing

import pytest

from eventmig.errors import Busy, StoreError
from eventmig.model.records import QuarantinedEvent
from eventmig.ports import EventStore
from eventmig.testing.conformance_epochs import needs_epochs
from eventmig.testing.conformance_support import StoreFixtures, events, first, flat, hold_lock, make_run, target


def quarantined(run_id: str, n: int) -> QuarantinedEvent:
    return QuarantinedEvent(run_id, "s", n, 9 + n, f"e{n}", "Bad", b"{", b"{}", 1, "payload is not valid JSON")


class LedgerConformance(StoreFixtures):
    """What jobs record: runs with their checkpoints, quarantined events, and their locks."""

    def test_write_batch_commits_events_quarantine_and_checkpoint_together(self, store: EventStore) -> None:
        needs_epochs(store)
        new = store.at_epoch(store.create_epoch(1))
        new.write_batch([target("s", first(store) + i, i) for i in range(3)], run=make_run(42),
                        quarantined=[quarantined("r1", 1)])
        assert new.count_events() == 3
        (run,) = store.runs("migrate")
        assert run.checkpoint == 42 and run.stats == {"read": 1}
        (stored,) = store.quarantine("r1")
        assert stored.reason == "payload is not valid JSON" and stored.data == b"{" and not stored.accepted
        assert store.accept_quarantine("r1") == 1
        assert store.quarantine("r1")[0].accepted

    def test_a_retried_batch_writes_nothing_twice(self, store: EventStore) -> None:
        """Atomic batches: a batch that fails leaves no event and no checkpoint behind. Others: the same
        batch written again (a retry after a crash) is recognised by its event ids."""
        needs_epochs(store)
        epoch = store.create_epoch(1)
        store.finish_epoch(epoch)  # unique indexes present
        new = store.at_epoch(epoch)
        new.write_batch([target("s", first(store), 1)], run=make_run(1))
        retried = [target("s", first(store), 1), target("s", first(store) + 1, 2)]  # sent again, in order
        if store.capabilities.atomic_batches:
            with pytest.raises(StoreError):
                new.write_batch(retried, run=make_run(2))
            assert new.count_events() == 1 and store.runs()[0].checkpoint == 1
        else:
            new.write_batch(retried, run=make_run(2))
            assert new.count_events() == 2 and store.runs()[0].checkpoint == 2
        assert len({e.event_id for e in flat(new.read_all())}) == new.count_events()

    def test_runs_are_saved_updated_and_listed_oldest_first(self, store: EventStore) -> None:
        store.save_run(make_run(None, "r1", started=100.0))
        store.save_run(make_run(None, "r2", kind="rebuild", started=200.0))
        done = make_run(7, "r1", started=100.0)
        done.status, done.stats, done.options = "completed", {"read": 9, "chains": {"A": [1, 2]}}, {"workers": 2}
        done.updated_at = 300.0
        store.save_run(done)
        assert [r.id for r in store.runs()] == ["r1", "r2"]
        (again,) = store.runs("migrate")
        assert again == done
        assert [r.kind for r in store.runs("rebuild")] == ["rebuild"] and store.runs("nope") == []

    def test_a_checkpoint_in_the_ledger_resumes_a_reader_in_a_new_handle(self, store: EventStore, store_url: str) -> None:
        for i in range(9):
            store.append(f"s-{i % 2}", events(1, start=i))
        positions = [e.position for e in flat(store.read_all())]
        store.save_run(make_run(positions[4]))
        with self.open_another(store_url) as later:
            (run,) = later.runs()
            assert [e.decoded_data()["n"] for e in flat(later.read_all(run.checkpoint))] == [5, 6, 7, 8]

    def test_quarantine_is_kept_per_run_and_accepted_by_id(self, store: EventStore) -> None:
        needs_epochs(store)
        new = store.at_epoch(store.create_epoch(1))
        new.write_batch([], run=make_run(1, "r1"), quarantined=[quarantined("r1", n) for n in range(3)])
        new.write_batch([], run=make_run(2, "r2"), quarantined=[quarantined("r2", 9)])
        assert [q.version for q in store.quarantine("r1")] == [0, 1, 2]
        assert len(store.quarantine()) == 4 and store.quarantine("nope") == []
        ids = [q.id for q in store.quarantine("r1")]
        assert all(i is not None for i in ids) and len(set(ids)) == 3
        assert store.accept_quarantine("r1", []) == 0
        assert store.accept_quarantine("r1", [ids[1]]) == 1  # type: ignore[list-item]
        assert [q.accepted for q in store.quarantine("r1")] == [False, True, False]
        assert store.accept_quarantine("r1") == 2 and store.accept_quarantine("r1") == 0
        assert not store.quarantine("r2")[0].accepted  # another run's are its own

    def test_a_second_holder_of_a_lock_is_refused(self, store: EventStore, store_url: str) -> None:
        with self.open_another(store_url) as other:
            with store.lock("migrate"):
                with pytest.raises(Busy, match="holds the 'migrate' lock"):
                    with other.lock("migrate"):
                        pass
                with other.lock("rebuild"):  # another name is another lock
                    pass
            with other.lock("migrate"):  # released on leaving
                pass

    def test_lock_is_exclusive_across_processes_and_dies_with_its_holder(self, store_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        ready, release = ctx.Event(), ctx.Event()
        holder = ctx.Process(target=hold_lock, args=(self, store_url, ready, release))
        holder.start()
        try:
            assert ready.wait(30)
            with self.open_another(store_url) as s:
                with pytest.raises(Busy, match="holds the 'migrate' lock"):
                    with s.lock("migrate"):
                        pass
        finally:
            holder.kill()  # SIGKILL: no cleanup code runs in the holder
            holder.join()
        with self.open_another(store_url) as s:
            with s.lock("migrate"):
                pass
