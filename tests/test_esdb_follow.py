"""follow reading an EventStoreDB source into SQL read models: commit positions as the checkpoint, and a
catch-up subscription to ``$all`` waking the follower when events are appended."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import projections as shop
from eventmig import new_event
from eventmig.backends import open_store
from eventmig.backends.sql.following import FollowerDB
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.follow import follow
from eventmig.jobs.rebuild import rebuild
from eventmig.jobs.seed import ShopHistory
from test_follow import expected_digests, live_digests


def history(total: int) -> list:
    """The shop's history numbered as the server numbers streams: from 0."""
    return [e._replace(version=e.version - 1) for e in ShopHistory(total, 7).events()]


def test_follow_from_the_cluster_keeps_sql_read_models_equal_to_a_replay(tmp_path: Path, esdb_node, shop_registry):
    read_models = f"sqlite:///{tmp_path / 'rm.db'}"
    events = history(1500)
    with open_store(esdb_node.url) as store:
        store.write_batch(events[:600])
        assert rebuild(store, shop.projections, registry=shop_registry, workers=1, read_models=read_models).ok
        store.write_batch(events[600:1100])
        first = follow(store, shop.projections, registry=shop_registry, read_models=read_models, once=True, batch_size=97)
        assert first.ok and {s.checkpoint for s in first.segments} == {store.head_position()}
        assert live_digests(read_models) == expected_digests(store, shop_registry)
        store.write_batch(events[1100:])
        second = follow(store, shop.projections, registry=shop_registry, read_models=read_models, once=True)
        assert second.applied == 3 * 400  # resumed after the checkpoint's event, not from it: nothing twice
        assert live_digests(read_models) == expected_digests(store, shop_registry)


def test_a_waiting_follower_is_woken_by_an_append_and_not_without_one(esdb_node):
    with open_store(esdb_node.url) as store, open_store(esdb_node.url) as writer:
        writer.append("w-1", [new_event("E", {"i": 0})])
        assert store.wait_for_appends(0.2) is False  # subscribed at the head: what was there wakes nothing
        appended = threading.Timer(0.1, lambda: writer.append("w-1", [new_event("E", {"i": 1})]))
        appended.start()
        try:
            assert store.wait_for_appends(120) is True  # returns when the event arrives, long before the timeout
        finally:
            appended.join()
        assert store.wait_for_appends(0.2) is False  # that one was told once


def test_a_live_follower_applies_appends_without_polling(tmp_path: Path, esdb_node, shop_registry):
    """poll interval one hour: only the subscription can bring the follower to the appended events."""
    read_models = f"sqlite:///{tmp_path / 'rm.db'}"
    events = history(901)
    with open_store(esdb_node.url) as store:
        store.write_batch(events[:500])
        assert rebuild(store, shop.projections, registry=shop_registry, workers=1, read_models=read_models).ok
        done = threading.Event()

        def run() -> None:
            with open_store(esdb_node.url) as source:
                follow(source, shop.projections, registry=shop_registry, read_models=read_models, poll_s=3600,
                       stop=done.is_set)

        follower = threading.Thread(target=run, daemon=True)  # a follower that never wakes must not hold the run
        follower.start()
        try:
            store.write_batch(events[500:900])
            head = store.head_position()
            deadline = time.monotonic() + 120
            while not checkpoints_at(read_models, head) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert checkpoints_at(read_models, head)
            assert live_digests(read_models) == expected_digests(store, shop_registry)
        finally:
            done.set()
            store.write_batch(events[900:])  # wakes the follower, which then sees that it is asked to stop
            follower.join(timeout=60)
        assert not follower.is_alive()


def checkpoints_at(read_models: str, head: int | None) -> bool:
    """Whether every projection's follower checkpoint has reached ``head``."""
    with ReadModelDB(read_models) as db:
        rows = FollowerDB(db).followers()
    return len({r.projection for r in rows}) == len(shop.projections) and all(r.checkpoint == head for r in rows)
