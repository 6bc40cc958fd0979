"""The parallel rebuilder against real stores: equal to a sequential fold, swap, rollback, resume, versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections as shop
from eventmig.jobs.cutover import rollback_read_models, switch
from eventmig.jobs.seed import seed
from eventmig.errors import Busy, ConfigError
from eventmig.jobs.migrate import migrate
from eventmig import load_snapshot
from eventmig.projection.api import STREAM, Projection
from eventmig.projection.fold import replay
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.backends.sql.rowdigests import digest_table_rows
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store
from eventmig.model.records import TargetEvent

REPO = Path(__file__).resolve().parent.parent
TABLES = {t.name: t for p in shop.projections for t in p.tables}
_encode = msgspec.json.Encoder().encode


# ------------------------------------------------------------------ histories
def _event(stream: str, version: int, type_: str, data: dict, schema_version: int = 1) -> TargetEvent:
    metadata = {"schema_version": schema_version} if schema_version > 1 else {}
    return TargetEvent(stream, version, str(uuid.uuid4()), type_, _encode(data), _encode(metadata), 1_700_000_000_000_000)


@st.composite
def shop_histories(draw: st.DrawFn) -> list[TargetEvent]:
    """Random shop histories: customers, orders with items, payments, shipments, cancellations.

    Events come at legacy and head schema versions alike (the rebuild upcasts
    the old ones on the way), interleaved across streams in a random order.
    """
    customers = [f"c{i}" for i in range(draw(st.integers(1, 4)))]
    plans: dict[str, list[tuple[str, dict, int]]] = {}
    for c in customers:
        if draw(st.booleans()):
            plans[f"customer-{c}"] = [("CustomerRegistered", {"customer_id": c, "name": f"N {c}", "email": f"{c}@x"}, 1)]
        else:
            plans[f"customer-{c}"] = [("CustomerRegistered", {"customer_id": c, "full_name": f"N {c}", "email": f"{c}@x",
                                                              "marketing_opt_in": True}, 2)]
    for o in range(draw(st.integers(0, 10))):
        order, customer = f"o{o}", draw(st.sampled_from(customers))
        total = draw(st.integers(0, 50_000))
        placed = {"order_id": order, "customer_id": customer, "placed_at": f"2024-01-{1 + o % 28:02d}", "channel": "web"}
        placed_version = draw(st.sampled_from([1, 2, 3]))
        if placed_version == 1:
            placed["total"] = total / 100
        else:
            placed["total_cents"] = total
            if placed_version == 3:
                placed["currency"] = draw(st.sampled_from(["EUR", "GBP"]))
        events = [("OrderPlaced", placed, placed_version)]
        for _ in range(draw(st.integers(0, 5))):
            qty, cents = draw(st.integers(1, 4)), draw(st.integers(1, 9_999))
            if draw(st.booleans()):
                events.append(("ItemAdded", {"order_id": order, "sku": "S", "name": "n", "qty": qty, "price": cents / 100}, 1))
            else:
                events.append(("LineItemAdded", {"order_id": order, "sku": "S", "name": "n", "quantity": qty,
                                                 "unit_price_cents": cents}, 1))
            if draw(st.integers(0, 4)) == 0:
                events.append(("CartViewed", {"order_id": order, "session_id": "s", "page": "/", "user_agent": "u"}, 1))
        if draw(st.booleans()):
            events.append(("PaymentCaptured", {"order_id": order, "amount_cents": draw(st.integers(0, 50_000)),
                                               "method": "card", "captured_at": "t"}, 1))
        ending = draw(st.sampled_from(["open", "shipped-legacy", "shipped", "cancelled"]))
        if ending == "shipped-legacy":
            events.append(("OrderShipped", {"order_id": order, "carrier": "DHL", "address": "1 Road|Lyon|69001",
                                            "shipped_at": "t"}, 1))
        elif ending == "shipped":
            events.append(("ShippingAddressRecorded", {"order_id": order, "street": "1 Road", "city": "Gent",
                                                       "postcode": "9000"}, 1))
            events.append(("OrderShipped", {"order_id": order, "carrier": "UPS", "shipped_at": "t"}, 2))
        elif ending == "cancelled":
            events.append(("OrderCancelled", {"order_id": order, "reason": "r", "cancelled_at": "t"}, 1))
        plans[f"order-{order}"] = events
    # interleave the streams, each in its own order
    pending = {s: list(evs) for s, evs in plans.items()}
    order_of_streams = draw(st.permutations([s for s, evs in plans.items() for _ in evs]))
    history, versions = [], {}
    for stream in order_of_streams:
        type_, data, schema_version = pending[stream].pop(0)
        versions[stream] = versions.get(stream, 0) + 1
        history.append(_event(stream, versions[stream], type_, data, schema_version))
    return history


def _all_rows(store):
    return [row for batch in store.read_all_rows(batch_size=1000) for row in batch]


def _expected_digests(store, registry) -> dict[str, str]:
    rows = replay(shop.projections, registry, _all_rows(store))
    return {name: digest_table_rows(TABLES[name], produced) for name, produced in rows.items()}


def _digests(report) -> dict[str, str]:
    return {t.table: t.digest for p in report.projections for t in p.tables}


# ------------------------------------------------------------------- property
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(history=shop_histories(), workers=st.sampled_from([2, 3]), batch=st.sampled_from([1, 3, 50]),
       cache=st.sampled_from([None, 1, 3]), fork=st.booleans())
def test_rebuilt_tables_equal_a_sequential_fold(shop_registry, history, workers, batch, cache, fork):
    """For any history, the tables rebuilt by one worker or several equal a plain sequential fold.

    Several workers fold their partitions in worker processes (``fork``) or,
    as a history this small otherwise is, all in this process. Tiny caches
    make workers drop states from memory and reload them from their state
    tables, as they do on large stores.
    """
    with tempfile.TemporaryDirectory() as tmp, _cache_size(cache), _fork_always(fork):
        url = f"sqlite:///{tmp}/events.db"
        with open_store(url) as store:
            if history:
                store.write_batch(history)
            expected = _expected_digests(store, shop_registry)
            for n in (1, workers):
                report = rebuild(store, shop.projections, registry=shop_registry, read_models=f"sqlite:///{tmp}/rm{n}.db",
                                 workers=n, batch_size=batch)
                assert report.ok, report.problems
                assert report.processes == (n if fork and n > 1 else 0)
                assert report.events_read == len(history)
                assert _digests(report) == expected


@contextmanager
def _fork_always(fork: bool) -> Iterator[None]:
    """Worker processes however small the history (no monkeypatch: hypothesis runs many examples per test)."""
    import eventmig.jobs.rebuild.workers as rebuild_workers

    saved = rebuild_workers.FORK_MIN_EVENTS
    rebuild_workers.FORK_MIN_EVENTS = 0 if fork else saved
    try:
        yield
    finally:
        rebuild_workers.FORK_MIN_EVENTS = saved


@contextmanager
def _cache_size(size: int | None) -> Iterator[None]:
    saved = [(p, p.cache_size) for p in shop.projections]
    try:
        for p in shop.projections:
            p.cache_size = size
        yield
    finally:
        for p, value in saved:
            p.cache_size = value


def test_rebuild_on_both_backends_equals_the_fold(store_url, shop_registry):
    with open_store(store_url) as store:
        seed(store, 3000)
        migrate(store, shop_registry)
        switch(store, shop_registry)
        active = store.at_epoch(store.active_epoch())
        expected = _expected_digests(active, shop_registry)
        report = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=3, batch_size=500)
        assert report.ok and report.swapped and report.epoch == 2
        assert _digests(report) == expected
        assert report.events_read == active.count_events()
        assert {p.partitions for p in report.projections if p.name != "customer_totals"} == {3}
        assert next(p for p in report.projections if p.name == "customer_totals").partitions == 1
        # the live tables hold the rows, and nothing of the rebuild is left behind
        db = ReadModelDB(store_url)
        try:
            with db.read() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(TABLES["order_summary"])).scalar() == \
                    report.projections[0].tables[0].rows
                leftovers = _tables(db, conn, "eventmig_rbs_") + _tables(db, conn, "order_summary__")
                assert leftovers == []
        finally:
            db.close()


def test_worker_processes_fold_what_one_process_folds(store_url, shop_registry, monkeypatch):
    """Forced into worker processes, a small rebuild gives the same tables (each worker reads its streams)."""
    import eventmig.jobs.rebuild.workers as rebuild_workers

    with open_store(store_url) as store:
        seed(store, 2500)  # legacy events: upcast on the way
        expected = _expected_digests(store, shop_registry)
        alone = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2, swap=False)
        assert alone.ok and alone.processes == 0 and alone.workers == 2 and _digests(alone) == expected
        monkeypatch.setattr(rebuild_workers, "FORK_MIN_EVENTS", 0)
        forked = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2,
                         batch_size=300, restart=True)
        assert forked.ok and forked.processes == 2 and forked.events_read == store.count_events()
        assert _digests(forked) == expected


def test_stream_keyed_runs_record_how_their_streams_are_cut(store_url, shop_registry, monkeypatch):
    """SQLite cuts streams into name ranges, PostgreSQL hashes names; the workers read the ranges their run
    records."""
    import eventmig.jobs.rebuild.workers as rebuild_workers

    with open_store(store_url) as store:
        seed(store, 2000)
        expected = _expected_digests(store, shop_registry)
        first = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=3, swap=False)
        assert first.ok
        with ReadModelDB(store_url) as db:
            runs = {r.projection: r for r in db.runs()}
        stats = runs["order_summary"].stats
        if store.dialect == "sqlite":
            bounds = stats["stream_bounds"]
            assert stats["stream_partitioning"] == "ranges" and len(bounds) == 2 and bounds == sorted(bounds)
        else:
            assert stats["stream_partitioning"] == "postgresql-hashtext" and "stream_bounds" not in stats
        assert "stream_bounds" not in runs["customer_totals"].stats  # one partition: nothing to cut
        # ranges other than the store's own (on PostgreSQL too, which compares names in code point order)
        monkeypatch.setattr(type(store), "stream_bounds", lambda self, count: ("order-8",) if count == 2 else ())
        monkeypatch.setattr(rebuild_workers, "FORK_MIN_EVENTS", 0)
        interrupted = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2,
                              restart=True, swap=False, names=["order_summary"])
        assert interrupted.ok and _digests(interrupted) == {k: v for k, v in expected.items() if k == "order_summary"}
        with ReadModelDB(store_url) as db:
            run = next(r for r in db.runs() if r.projection == "order_summary" and r.status == "verified")
        assert run.stats["stream_partitioning"] == "ranges" and run.stats["stream_bounds"] == ["order-8"]


def _tables(db: ReadModelDB, conn, prefix: str) -> list[str]:
    if db.dialect == "sqlite":
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars().all()
    else:
        names = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars().all()
    return sorted(n for n in names if n.startswith(prefix))


@pytest.mark.parametrize("direction", ["sqlite-store-postgres-read-models", "postgres-store-sqlite-read-models"])
def test_read_models_in_another_database(direction, sqlite_url, postgres_url, tmp_path, shop_registry):
    store_url, read_models = (sqlite_url, postgres_url) if direction.startswith("sqlite") else (postgres_url, f"sqlite:///{tmp_path}/rm.db")
    with open_store(store_url) as store:
        seed(store, 1500)  # legacy events: upcast during the rebuild
        expected = _expected_digests(store, shop_registry)
        report = rebuild(store, shop.projections, registry=shop_registry, read_models=read_models, workers=2)
        assert report.ok and _digests(report) == expected
    db = ReadModelDB(read_models)
    try:
        assert set(db.live_models()) == {"order_summary", "customer_totals", "order_snapshots"}
    finally:
        db.close()
    with open_store(store_url) as store:  # the event store got none of it
        with store.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
        assert not any(n.startswith(("order_", "customer_totals", "eventmig_rebuild")) for n in names)


# ------------------------------------------------------------- swap, rollback
def _order_summary_v2() -> Projection:
    """order_summary at version 2: statuses in capitals, and cancelled orders drop out."""
    base = shop.order_summary
    v2 = Projection("order_summary", version=2, tables=base.tables, state=base.state_type, key=STREAM)
    for event_type, handler in base.handlers.items():
        v2.on(event_type)(handler)

    @v2.rows
    def rows(stream, s):
        if not s.order_id or s.status == "cancelled":
            return []
        return [(s.order_id, s.customer_id, s.status.upper(), s.item_count, s.total_cents, s.currency)]

    return v2


def test_swap_then_rollback_read_models(store_url, shop_registry):
    with open_store(store_url) as store:
        seed(store, 2000)
        first = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
        assert first.ok and first.swapped
        assert all(p.live_version is None for p in first.projections)
        v1_rows = _rows(store_url, "order_summary")

        v2 = [_order_summary_v2()]
        refused = rebuild(store, v2, registry=shop_registry, read_models=store_url, workers=2)
        assert not refused.ok and not refused.swapped
        (p,) = refused.projections
        assert p.status == "refused" and p.live_version == 1 and p.version == 2
        (t,) = p.tables
        cancelled = sum(1 for r in v1_rows if r[2] == "cancelled")
        assert (t.added, t.removed, t.changed) == (0, cancelled, len(v1_rows) - cancelled)
        assert t.sample and "--accept-changes" in refused.problems[0]
        assert _rows(store_url, "order_summary") == v1_rows  # untouched

        accepted = rebuild(store, v2, registry=shop_registry, read_models=store_url, workers=2, accept_changes=True)
        assert accepted.ok and accepted.swapped
        assert any("resuming" in n for n in accepted.notes)  # the verified shadow tables were reused
        v2_rows = _rows(store_url, "order_summary")
        assert len(v2_rows) == len(v1_rows) - cancelled and all(r[2].isupper() for r in v2_rows)

    with ReadModelDB(store_url) as db:
        back = rollback_read_models(db, ["order_summary"])
        assert [(s.projection, s.from_version, s.to_version) for s in back.swaps] == [("order_summary", 2, 1)]
        assert _rows(store_url, "order_summary") == v1_rows
        assert db.live_models()["order_summary"].version == 1
        again = rollback_read_models(db, ["order_summary"])  # a rollback of the rollback
        assert again.swaps[0].to_version == 2 and _rows(store_url, "order_summary") == v2_rows
        with pytest.raises(ConfigError):
            rollback_read_models(db, ["no_such_projection"])
        assert [s.kind for s in db.swaps() if s.projection == "order_summary"] == ["swap", "swap", "rollback", "rollback"]


def test_version_unchanged_but_rows_differ_is_refused_even_with_accept(sqlite_url, shop_registry):
    with open_store(sqlite_url) as store:
        seed(store, 800)
        assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=sqlite_url, workers=1).ok
        with store.engine.begin() as conn:  # the live table drifted
            conn.exec_driver_sql("UPDATE order_summary SET status = 'lost' WHERE rowid = 1")
        report = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=sqlite_url, workers=1,
                         accept_changes=True)
        assert not report.ok and report.projections[0].tables[0].changed == 1
        assert "did not change" in report.problems[0]


def test_events_appended_since_the_live_tables_explain_differences_of_the_same_code(store_url, shop_registry):
    """Same version and code: rows that differ because events were appended since the live tables were built
    are swapped in (noted); the same difference under changed code of the same version is refused."""
    late = {"order_id": "late", "customer_id": "c", "total_cents": 5, "placed_at": "t", "channel": "web", "currency": "EUR"}
    with open_store(store_url) as store:
        seed(store, 600)
        assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2).swapped
        store.write_batch([_event("order-late", 1, "OrderPlaced", late, 3)])
        recoded = _order_summary_v2()
        recoded.version = 1  # the rows changed, the version did not
        refused = rebuild(store, [recoded], registry=shop_registry, read_models=store_url, workers=2,
                          accept_changes=True)
        assert not refused.ok and "did not change" in refused.problems[0]
        same = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2)
        assert same.ok and same.swapped
        (t,) = same.projections[0].tables
        assert (t.added, t.removed, t.changed, t.sample) == (1, 0, 0, ['["late"]'])
        assert any("from events appended after position" in n for n in same.notes)


def test_no_swap_stops_after_verification(sqlite_url, shop_registry):
    with open_store(sqlite_url) as store:
        seed(store, 800)
        report = rebuild(store, shop.projections, registry=shop_registry, read_models=sqlite_url, swap=False)
        assert report.ok and not report.swapped and {p.status for p in report.projections} == {"verified"}
        with store.engine.connect() as conn:
            assert not sa.inspect(conn).has_table("order_summary")
        later = rebuild(store, shop.projections, registry=shop_registry, read_models=sqlite_url)
        assert later.ok and later.swapped and later.events_read == 0  # nothing folded again
        assert _digests(later) == _digests(report)


def test_a_second_rebuild_is_refused_while_one_runs(sqlite_url, shop_registry):
    with open_store(sqlite_url) as store:
        seed(store, 100)
        with ReadModelDB(sqlite_url) as db, db.lock("rebuild"):
            with pytest.raises(Busy):
                rebuild(store, shop.projections, registry=shop_registry, read_models=sqlite_url)


def test_events_appended_after_a_verified_rebuild_start_a_new_one(sqlite_url, shop_registry):
    with open_store(sqlite_url) as store:
        seed(store, 500)
        rebuild(store, shop.projections, registry=shop_registry, read_models=sqlite_url, swap=False)
        store.write_batch([_event("order-late", 1, "OrderPlaced", {"order_id": "late", "customer_id": "c", "total_cents": 5,
                                                                   "placed_at": "t", "channel": "web", "currency": "EUR"}, 3)])
        report = rebuild(store, shop.projections, registry=shop_registry, read_models=sqlite_url)
        assert report.ok and any("appended" in n for n in report.notes)
        assert _digests(report) == _expected_digests(store, shop_registry)


def _rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(TABLES[table]).order_by(TABLES[table].c.order_id))]
    finally:
        engine.dispose()


# ----------------------------------------------------------------- snapshots
def test_snapshots_decode_back_into_the_aggregate(store_url, shop_registry):
    from projections.orders import Order

    with open_store(store_url) as store:
        seed(store, 1500)
        report = rebuild(store, [shop.order_snapshots], registry=shop_registry, read_models=store_url, workers=2)
        assert report.ok
        rows = _all_rows(store)
    last_version = {}
    for row in rows:
        last_version[row[0]] = row[1]
    # the aggregate as a plain sequential fold of its own stream sees it
    expected = replay([shop.order_snapshots], shop_registry, rows)["order_snapshots"]
    assert expected
    engine = sa.create_engine(store_url)
    try:
        for aggregate_id, version, state, projection_version in expected[:50]:
            snapshot = load_snapshot(engine, shop.order_snapshots, aggregate_id)
            assert snapshot is not None and isinstance(snapshot.state, Order)
            assert snapshot.state == shop.order_snapshots.decode_state(state)
            assert snapshot.version == version == last_version[aggregate_id] and projection_version == 1
            assert snapshot.state.order_id and snapshot.state.status in {"placed", "paid", "shipped", "cancelled"}
        assert load_snapshot(store_url, shop.order_snapshots, "order-missing") is None
    finally:
        engine.dispose()


# ------------------------------------------------------------------ kill/resume
def _start_rebuild(store_url: str, read_models: str, fork: bool = False) -> subprocess.Popen:
    env = {**os.environ, "EVENTMIG_STORE": store_url, "EVENTMIG_READ_MODELS": read_models}
    # a history this small is folded in the calling process unless worker processes are forced
    command = ["-c", FORCED_FORK] if fork else ["-m", "eventmig"]
    return subprocess.Popen(
        [sys.executable, *command, "rebuild", "--workers", "2", "--batch-size", "150", "--json"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


FORCED_FORK = (
    "import runpy, sys; import eventmig.jobs.rebuild.workers as r; r.FORK_MIN_EVENTS = 0; sys.argv[0] = 'eventmig'; "
    "runpy.run_module('eventmig', run_name='__main__')"
)


def _checkpoints(read_models: str) -> int:
    db = ReadModelDB(read_models)
    try:
        with db.read() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM eventmig_rebuild_partitions WHERE checkpoint IS NOT NULL").scalar())
    finally:
        db.close()


@pytest.mark.parametrize("fork", [False, True], ids=["one-process", "worker-processes"])
def test_sigkill_mid_rebuild_then_resume(store_url, shop_registry, tmp_path, fork):
    read_models = store_url
    with open_store(store_url) as store:
        seed(store, 10_000)
        expected = _expected_digests(store, shop_registry)
    for _ in range(2):
        proc = _start_rebuild(store_url, read_models, fork)
        deadline = time.monotonic() + 120
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            committed = _checkpoints(read_models)
            if committed >= 5:  # every partition (2 + 2 + the global one) has committed one
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the rebuild finished before it could be killed"
        assert committed >= 5
    time.sleep(0.2)  # the workers die with their parent
    done = subprocess.run(
        [sys.executable, "-m", "eventmig", "rebuild", "--workers", "2", "--json"], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "EVENTMIG_STORE": store_url, "EVENTMIG_READ_MODELS": read_models}, timeout=300,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    report = msgspec.json.decode(done.stdout)
    assert all(p["resumed"] for p in report["projections"])
    assert 0 < report["events_read"] < 10_000
    assert {t["table"]: t["digest"] for p in report["projections"] for t in p["tables"]} == expected
    with ReadModelDB(read_models) as db:
        runs = db.runs()
        assert {r.status for r in runs} == {"swapped"} and len(runs) == 3
