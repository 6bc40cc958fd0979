"""Conformance of :class:`~eventmig.ports.Epochs`: new epochs kept apart, switches, rollbacks, drops."""

from __future__ import annotations

import pytest

from eventmig.errors import ConfigError, HeadMoved, StoreError
from eventmig.ports import EventStore
from eventmig.testing.conformance_support import StoreFixtures, events, first, target


def needs_epochs(store: EventStore) -> None:
    """Skip a test of epochs on a store that declares it has none."""
    if not store.capabilities.epochs:
        pytest.skip(f"{type(store).__name__} declares no epochs")


class EpochConformance(StoreFixtures):
    """Generations of streams: created empty, written, switched to, rolled back, dropped."""

    def test_new_epoch_is_separate_until_switched(self, store: EventStore, store_url: str) -> None:
        needs_epochs(store)
        store.append("s", events(2))
        assert store.active_epoch() == 1
        epoch = store.create_epoch(1)
        assert epoch == 2
        new = store.at_epoch(epoch)
        assert new.head_position() is None
        new.write_batch([target("s", first(store), 2, "New")])
        assert store.count_events() == 2 and new.count_events() == 1
        with pytest.raises(StoreError, match="still being built"):
            store.switch_epoch(epoch, kind="switch", expect_heads={})
        store.finish_epoch(epoch)
        assert {e.epoch: e.status for e in store.epochs()} == {1: "active", 2: "ready"}
        if not store.capabilities.switch_after_tail_drop:  # the declaration holds: the dropped tail is refused
            with pytest.raises(ConfigError, match="dropped the last events"):
                store.switch_epoch(epoch, kind="switch", expect_heads={1: store.head_position()})
            assert store.active_epoch() == 1 and len(store.read_stream("s")) == 2
            return
        flip = store.switch_epoch(epoch, kind="switch", expect_heads={1: store.head_position()})
        assert (flip.from_epoch, flip.to_epoch) == (1, 2)
        with self.open_another(store_url) as fresh:
            assert fresh.active_epoch() == 2
            assert [e.type for e in fresh.read_stream("s")] == ["New"]  # the active handle sees the new epoch
            assert len(fresh.at_epoch(1).read_stream("s")) == 2  # the old one is kept
            fresh.append("s", events(1))  # applications keep appending to the active epoch
            assert fresh.stream_version("s") == first(store) + 1
        assert [s.kind for s in store.switches()] == ["switch"]

    def test_rollback_switches_back_and_keeps_what_each_epoch_holds(self, store: EventStore, store_url: str) -> None:
        needs_epochs(store)
        store.append("s", events(2))
        old_head = store.head_position()
        epoch = store.create_epoch(1)
        store.at_epoch(epoch).write_batch([target("s", first(store) + i, i, "New") for i in range(2)])
        store.finish_epoch(epoch)
        pinned_old = store.at_epoch(1)
        store.switch_epoch(epoch, kind="switch", expect_heads={1: old_head})
        store.append("s", events(1, "Late"))  # written to the new epoch while it is active
        new_head = store.at_epoch(epoch).head_position()
        back = store.switch_epoch(1, kind="rollback", expect_heads={epoch: new_head})
        assert (back.kind, back.from_epoch, back.to_epoch, back.to_head) == ("rollback", epoch, 1, old_head)
        assert [(s.kind, s.from_epoch, s.to_epoch) for s in store.switches()] == [("switch", 1, epoch), ("rollback", epoch, 1)]
        with self.open_another(store_url) as fresh:
            assert fresh.active_epoch() == 1 and {e.epoch: e.status for e in fresh.epochs()}[1] == "active"
            assert [e.type for e in fresh.read_stream("s")] == ["Happened", "Happened"]
            assert [e.type for e in fresh.at_epoch(epoch).read_stream("s")] == ["New", "New", "Late"]
        assert pinned_old.epoch == 1 and pinned_old.count_events() == 2  # a pinned handle never moved

    def test_switch_refuses_when_a_head_moved(self, store: EventStore) -> None:
        needs_epochs(store)
        store.append("s", events(1))
        head = store.head_position()
        epoch = store.create_epoch(1)
        store.finish_epoch(epoch)
        store.append("s", events(1))  # a late write after verification
        with pytest.raises(HeadMoved, match="changed since it was verified"):
            store.switch_epoch(epoch, kind="switch", expect_heads={1: head})
        assert store.active_epoch() == 1 and store.switches() == []

    def test_switch_refuses_an_unknown_or_active_epoch(self, store: EventStore) -> None:
        needs_epochs(store)
        with pytest.raises(StoreError):
            store.switch_epoch(99, kind="switch", expect_heads={})
        with pytest.raises(StoreError):
            store.switch_epoch(1, kind="switch", expect_heads={})
        assert store.active_epoch() == 1 and store.switches() == []

    def test_drop_epoch_refuses_the_active_one(self, store: EventStore) -> None:
        needs_epochs(store)
        epoch = store.create_epoch(1)
        with pytest.raises(StoreError, match="is active"):
            store.drop_epoch(1)
        store.drop_epoch(epoch)
        assert [e.epoch for e in store.epochs()] == [1]
        assert store.create_epoch(1) not in (1,)  # a dropped epoch's number may be reused, the active one's never
