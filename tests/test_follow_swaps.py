"""follow beside rebuild: tables swapped in under a running follower, and epoch rollbacks it carries over."""

from __future__ import annotations

import json
import signal

from eventmig.backends import open_store
from eventmig.backends.sql.readmodels import ReadModelDB
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
