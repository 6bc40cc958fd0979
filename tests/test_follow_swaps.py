"""follow beside rebuild: tables swapped in under a running follower, and epoch rollbacks it carries over."""

from __future__ import annotations

import json
import signal

from eventmig.backends import open_store
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.follow import follow
from eventmig.jobs.migrate import migrate
from eventmig.jobs.rebuild import rebuild
from eventmig.jobs.seed import ShopHistory

import projections as shop
from test_follow import expected_digests, live_digests
from test_follow_processes import caught_up, followers, prepared, start_follow, wait_until


def test_a_rebuild_swapped_in_under_a_running_follower_is_followed_from_its_own_checkpoint(
    store_url: str, shop_registry
):
    """The follower is behind when the rebuild's tables go live: it must not apply the events between its
    checkpoint and the rebuild's on top of the new tables, nor leave out those between the rebuild's and its own."""
    total = 4000
    prepared(store_url, shop_registry, total, 500)
    events = list(ShopHistory(total, 11).events())
    follower = start_follow(store_url, "--batch-size", "5", "--lease", "5")
    try:
        wait_until(lambda: len(followers(store_url)) == 3, 60, follower, "the follower to start")
        with open_store(store_url) as store:
            store.write_batch(events[500:3000])
            rebuilt_to = store.head_position()
            report = rebuild(store, shop.projections, registry=shop_registry, workers=1)
            assert report.swapped, report.problems
            behind = [r.checkpoint for r in followers(store_url)]
            assert min(c or 0 for c in behind) < rebuilt_to, "the follower caught up before the swap: nothing tested"
            store.write_batch(events[3000:])
            head = store.head_position()
        wait_until(lambda: caught_up(store_url, head), 180, follower, "the follower to catch up")
    finally:
        if follower.poll() is None:
            follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    report = json.loads(out)
    assert all(s["status"] == "following" for s in report["segments"]), report
    with ReadModelDB(store_url) as db:
        live = {name: model.run_id for name, model in db.live_models().items()}
    assert {r.projection: r.run_id for r in followers(store_url)} == live  # each follows the tables swapped in
    with open_store(store_url) as store:
        assert live_digests(store_url) == expected_digests(store, shop_registry)


NAMES = ["order_summary", "customer_totals"]  # order_snapshots hold stream versions: any epoch change needs a rebuild


def _followed_into_epoch_two(store, registry, events: list) -> None:
    """Rebuilt and followed in epoch 1, switched to epoch 2 and followed there."""
    store.write_batch(events[:1000])
    rebuild(store, shop.projections, registry=registry, workers=1)
    store.write_batch(events[1000:1200])
    follow(store, shop.projections, registry=registry, names=NAMES, once=True)
    migrate(store, registry)
    switch(store, registry)
    moved = follow(store, shop.projections, registry=registry, names=NAMES, once=True)
    assert {s.epoch for s in moved.segments} == {store.active_epoch()} == {2}


def test_after_an_epoch_rollback_followers_carry_over_without_replaying(store_url: str, shop_registry):
    events = list(ShopHistory(1600, 5).events())
    with open_store(store_url) as store:
        _followed_into_epoch_two(store, shop_registry, events)
        back = rollback(store, read_models=store_url)
        assert back.to_epoch == store.active_epoch() == 1
        store.write_batch(events[1200:])  # into epoch 1, active again
        report = follow(store, shop.projections, registry=shop_registry, names=NAMES, once=True)
        assert report.ok and all(s.status == "following" and s.epoch == 1 for s in report.segments), report
        assert {s.checkpoint for s in report.segments} == {store.head_position()}
        assert report.applied == len(NAMES) * 400  # only the events appended after the rollback: none replayed
        expected = expected_digests(store, shop_registry)
    live = live_digests(store_url)
    tables = [t.name for p in shop.projections if p.name in NAMES for t in p.tables]
    assert {t: live[t] for t in tables} == {t: expected[t] for t in tables}


def test_after_a_rollback_that_hid_applied_events_followers_say_a_rebuild_is_required(store_url: str, shop_registry):
    events = list(ShopHistory(1600, 5).events())
    with open_store(store_url) as store:
        _followed_into_epoch_two(store, shop_registry, events)
        store.write_batch(events[1200:1400])  # into epoch 2 only
        assert follow(store, shop.projections, registry=shop_registry, names=NAMES, once=True).applied == 400
        rollback(store, force=True, read_models=store_url)  # hides those 200 events
        stopped = follow(store, shop.projections, registry=shop_registry, names=NAMES, once=True)
        assert not stopped.ok
        for s in stopped.segments:
            assert s.status == "stopped" and "a rebuild is required" in (s.error or ""), s
        assert stopped.applied == 0
        rebuild(store, shop.projections, registry=shop_registry, names=NAMES, workers=1)
        store.write_batch(events[1400:])
        again = follow(store, shop.projections, registry=shop_registry, names=NAMES, once=True)
        assert again.ok and {s.checkpoint for s in again.segments} == {store.head_position()}, again
        expected = expected_digests(store, shop_registry)
    live = live_digests(store_url)
    tables = [t.name for p in shop.projections if p.name in NAMES for t in p.tables]
    assert {t: live[t] for t in tables} == {t: expected[t] for t in tables}
