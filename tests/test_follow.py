"""follow against real stores: equal to a fresh replay, a failing projection stopped alone, epochs, checkpoints."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections as shop
from eventmig.jobs.cutover import switch
from eventmig.jobs.seed import ShopHistory
from eventmig.jobs.follow import follow
from eventmig.backends.sql.following import FollowerDB
from eventmig.jobs.migrate import migrate
from eventmig.projection.api import Projection
from eventmig.projection.fold import replay
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.backends.sql.rowdigests import digest_table_rows
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store

TABLES = {t.name: t for p in shop.projections for t in p.tables}


def history(total: int, seed: int = 7) -> list:
    return list(ShopHistory(total, seed).events())


def expected_digests(store, registry, projections=shop.projections) -> dict[str, str]:
    rows = [row for batch in store.read_all_rows(batch_size=1000) for row in batch]
    produced = replay(projections, registry, rows)
    tables = {t.name: t for p in projections for t in p.tables}
    return {name: digest_table_rows(tables[name], r) for name, r in produced.items()}


def live_digests(url: str, projections=shop.projections) -> dict[str, str]:
    with ReadModelDB(url) as db, db.read() as c:
        return {t.name: db.table_digest(c, t, t.name)[0] for p in projections for t in p.tables}


def test_follow_keeps_live_tables_equal_to_a_fresh_replay(store_url: str, shop_registry):
    events = history(3000)
    with open_store(store_url) as store:
        store.write_batch(events[:1500])
        rebuild(store, shop.projections, registry=shop_registry, workers=1)
        store.write_batch(events[1500:2200])
        first = follow(store, shop.projections, registry=shop_registry, once=True, batch_size=97)
        assert first.ok and first.stopped_by == "caught up"
        assert {s.checkpoint for s in first.segments} == {store.head_position()}
        assert live_digests(store_url) == expected_digests(store, shop_registry)
        store.write_batch(events[2200:])
        second = follow(store, shop.projections, registry=shop_registry, once=True)
        assert second.applied == 3 * 800  # three projections, each the 800 new events: nothing applied twice
        assert live_digests(store_url) == expected_digests(store, shop_registry)
        again = follow(store, shop.projections, registry=shop_registry, once=True)
        assert again.applied == 0


def test_follow_before_any_rebuild_says_what_to_run(sqlite_url: str, shop_registry):
    with open_store(sqlite_url) as store:
        store.write_batch(history(100))
        report = follow(store, shop.projections, registry=shop_registry, once=True, names=["order_summary"])
    assert not report.ok
    assert report.segments[0].status == "stopped"
    assert "eventmig rebuild order_summary" in (report.segments[0].error or "")


def _counting(fail_on: str | None) -> Projection:
    """Counts events per stream; raises on the event whose stream and version read ``fail_on``."""
    table = sa.Table("per_stream", sa.MetaData(), sa.Column("stream", sa.Text, primary_key=True),
                     sa.Column("events", sa.Integer, nullable=False))
    p = Projection("per_stream", version=1, tables=[table], initial=lambda: 0, state_type=int)

    @p.on("OrderPlaced", "LineItemAdded", "PaymentCaptured", "OrderCancelled", "OrderShipped")
    def count(n: int, e, info) -> int:
        if fail_on == f"{info.stream}@{info.version}":
            raise ValueError("no such thing")
        return n + 1

    @p.rows
    def rows(stream: str, n: int):
        return [(stream, n)]

    return p


def test_a_projection_that_raises_stops_alone_names_the_event_and_resumes_after_a_fix(sqlite_url: str, shop_registry):
    events = history(2000)
    with open_store(sqlite_url) as store:
        store.write_batch(events[:800])
        rebuild(store, [*shop.projections, _counting(None)], registry=shop_registry, workers=1)
        store.write_batch(events[800:])
        victim = next(e for e in events[1200:] if e.type == "ItemAdded")  # stored as ItemAdded, handled as LineItemAdded
        broken = [*shop.projections, _counting(f"{victim.stream}@{victim.version}")]
        report = follow(store, broken, registry=shop_registry, once=True, batch_size=100)
        assert not report.ok
        stopped = {s.projection: s for s in report.segments}
        assert stopped["per_stream"].status == "stopped"
        error = stopped["per_stream"].error or ""
        assert f"event ItemAdded at position" in error and repr(victim.stream) in error and "no such thing" in error
        assert all(s.status == "following" for n, s in stopped.items() if n != "per_stream")
        assert live_digests(sqlite_url) == expected_digests(store, shop_registry)  # the others went on
        row = next(r for r in FollowerDB(ReadModelDB(sqlite_url)).followers() if r.projection == "per_stream")
        assert row.error == error and row.checkpoint < store.head_position()

        fixed = [*shop.projections, _counting(None)]
        after = follow(store, fixed, registry=shop_registry, once=True)
        assert after.ok
        assert live_digests(sqlite_url, fixed) == expected_digests(store, shop_registry, fixed)
        row = next(r for r in FollowerDB(ReadModelDB(sqlite_url)).followers() if r.projection == "per_stream")
        assert row.error is None


def test_after_a_switch_followers_move_to_the_new_epoch_without_replaying(store_url: str, shop_registry):
    events = history(2000)
    names = ["order_summary", "customer_totals"]  # order_snapshots hold stream versions: they need a rebuild
    with open_store(store_url) as store:
        store.write_batch(events[:1000])
        rebuild(store, shop.projections, registry=shop_registry, workers=1)
        store.write_batch(events[1000:1400])
        follow(store, shop.projections, registry=shop_registry, once=True)
        store.write_batch(events[1400:1600])  # applied from the old epoch after the switch
        migrate(store, shop_registry)
        switch(store, shop_registry)
        store.write_batch(events[1600:])  # into the new epoch
        report = follow(store, shop.projections, registry=shop_registry, once=True)
        by_name = {s.projection: s for s in report.segments}
        active = store.active_epoch()
        for name in names:
            assert by_name[name].status == "following" and by_name[name].epoch == active
            assert by_name[name].checkpoint == store.head_position()
        assert by_name["order_snapshots"].status == "stopped"
        assert "rebuild is required" in (by_name["order_snapshots"].error or "")
        # 200 events of the old epoch and 400 of the new one each: none replayed
        assert report.applied == 2 * 600
        expected = expected_digests(store, shop_registry)
        live = live_digests(store_url)
        assert {t: live[t] for t in names} == {t: expected[t] for t in names}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 600), steps=st.lists(st.integers(1, 300), min_size=1, max_size=4),
       batch=st.sampled_from([1, 7, 1000]))
def test_follow_in_any_steps_equals_a_replay(tmp_path_factory, shop_registry, cut: int, steps: list[int], batch: int):
    url = f"sqlite:///{tmp_path_factory.mktemp('follow')}/s.db"
    events = history(600 + sum(steps), seed=cut)
    with open_store(url) as store:
        store.write_batch(events[:cut])
        rebuild(store, shop.projections, registry=shop_registry, workers=1)
        at = cut
        for step in steps:
            store.write_batch(events[at:at + step])
            at += step
            follow(store, shop.projections, registry=shop_registry, once=True, batch_size=batch)
        assert live_digests(url) == expected_digests(store, shop_registry)
