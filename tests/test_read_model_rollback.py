"""``rollback --read-models``: what the last swap replaced, and only that, comes back.

Covers the last swap against earlier ones, a rollback of a rollback,
rolling back named projections, and the application's own tables (live
before eventmig's first swap) coming back, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import projections as shop
from eventmig.jobs.cutover import rollback_read_models
from eventmig.jobs.seed import seed
from eventmig.errors import ConfigError
from eventmig.projection.api import STREAM, Projection
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.ports_readmodels import UNMANAGED_RUN
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store

REPO = Path(__file__).resolve().parent.parent


def _summary_v2() -> Projection:
    """order_summary v2: statuses in capitals."""
    base = shop.order_summary
    v2 = Projection("order_summary", version=2, tables=base.tables, state=base.state_type, key=STREAM)
    for event_type, handler in base.handlers.items():
        v2.on(event_type)(handler)
    v2.rows(lambda k, s: [(s.order_id, s.customer_id, s.status.upper(), s.item_count, s.total_cents, s.currency)]
            if s.order_id else [])
    return v2


def _live_runs(url: str) -> dict[str, tuple[int | None, str]]:
    with ReadModelDB(url) as db:
        return {name: (m.version, m.run_id) for name, m in db.live_models().items()}


def _count(url: str, table: str) -> int | None:
    with ReadModelDB(url) as db, db.read() as conn:
        if not db.table_exists(table, conn):
            return None
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar())


def test_rollback_undoes_the_last_swap_only(store_url, shop_registry):
    with open_store(store_url) as store:
        seed(store, 1500)
        first = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
        with ReadModelDB(store_url) as db, pytest.raises(ConfigError, match="replaced no tables"):
            rollback_read_models(db)  # the first swap replaced nothing
        second = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
        after_second = _live_runs(store_url)
        third = rebuild(store, [_summary_v2()], registry=shop_registry, read_models=store_url, workers=2,
                        accept_changes=True)
        assert first.swapped and second.swapped and third.swapped
    runs = {n: {p.name: p.run_id for p in r.projections} for n, r in (("first", first), ("second", second))}

    with ReadModelDB(store_url) as db:
        back = rollback_read_models(db)
        # only what the last swap replaced: order_summary v2 -> v1; the others stay on the second rebuild
        assert [(s.projection, s.from_version, s.to_version, s.run_id) for s in back.swaps] == [
            ("order_summary", 2, 1, runs["second"]["order_summary"])]
        assert _live_runs(store_url) == after_second
        again = rollback_read_models(db)  # the last operation is now the rollback: undone
        assert [(s.projection, s.to_version) for s in again.swaps] == [("order_summary", 2)]
        named = rollback_read_models(db, ["customer_totals"])  # a named projection's own last swap
        assert [(s.projection, s.run_id) for s in named.swaps] == [("customer_totals", runs["first"]["customer_totals"])]
        live = _live_runs(store_url)
        assert live["order_summary"][0] == 2 and live["order_snapshots"] == after_second["order_snapshots"]
        assert [s.kind for s in db.swaps()][-3:] == ["rollback", "rollback", "rollback"]


def test_the_applications_own_tables_come_back(store_url, shop_registry):
    """Tables live before eventmig's first swap are kept as __prev and put back by a rollback, even when the
    application had fewer tables than the projection has."""
    metadata = sa.MetaData()
    pair_a = sa.Table("pair_a", metadata, sa.Column("stream", sa.Text, primary_key=True), sa.Column("n", sa.BigInteger))
    pair_b = sa.Table("pair_b", metadata, sa.Column("stream", sa.Text, primary_key=True), sa.Column("n", sa.BigInteger))
    pair = Projection("pair", version=1, tables=[pair_a, pair_b], state=int, initial=int, key=STREAM)
    pair.on("OrderPlaced", "LineItemAdded")(lambda n, e: n + 1)
    pair.rows(lambda k, n: {"pair_a": [(k, n)], "pair_b": [(k, -n)]})

    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as conn:  # the application's own read models, before eventmig
            shop.order_summary.tables[0].create(conn)
            conn.execute(shop.order_summary.tables[0].insert(), [dict(
                order_id="legacy", customer_id="c", status="old", item_count=1, total_cents=1, currency="EUR")])
            pair_a.create(conn)
            conn.execute(pair_a.insert(), [dict(stream="legacy", n=7)])
    finally:
        engine.dispose()

    # the application's database: eventmig is set up beside its tables because it is told to (init)
    with open_store(store_url, init=True) as store:
        seed(store, 1000)
        refused = rebuild(store, [shop.order_summary, pair, shop.customer_totals], registry=shop_registry,
                          read_models=store_url, workers=2)
        assert not refused.ok and "unversioned tables" in refused.problems[0]
        swapped = rebuild(store, [shop.order_summary, pair, shop.customer_totals], registry=shop_registry,
                          read_models=store_url, workers=2, accept_changes=True)
        assert swapped.swapped
        built = {t: _count(store_url, t) for t in ("order_summary", "pair_a", "pair_b")}
        assert built["order_summary"] > 1 and built["pair_a"] == built["pair_b"] > 1

        with ReadModelDB(store_url) as db:
            back = rollback_read_models(db)
            assert {(s.projection, s.from_version, s.to_version, s.run_id) for s in back.swaps} == {
                ("order_summary", 1, None, UNMANAGED_RUN), ("pair", 1, None, UNMANAGED_RUN)}
            assert back.notes == ["customer_totals: its first swap replaced no tables; left as it is"]
            # exactly what the application had: its one row each, and no pair_b
            assert (_count(store_url, "order_summary"), _count(store_url, "pair_a"), _count(store_url, "pair_b")) == (1, 1, None)
            assert _live_runs(store_url)["order_summary"] == (None, UNMANAGED_RUN)

        # a rebuild against them is a change from unversioned tables again
        again = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2)
        assert not again.ok and again.projections[0].live_version is None

        with ReadModelDB(store_url) as db:
            forth = rollback_read_models(db, ["order_summary", "pair"])  # and back to eventmig's tables
            assert {(s.projection, s.from_version, s.to_version) for s in forth.swaps} == {
                ("order_summary", None, 1), ("pair", None, 1)}
        assert {t: _count(store_url, t) for t in ("order_summary", "pair_a", "pair_b")} == built


def _eventmig(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_rollback_read_models_through_the_cli(sqlite_url: str, tmp_path: Path):
    with open_store(sqlite_url) as store:
        seed(store, 600)
    env = {"EVENTMIG_STORE": sqlite_url}
    for _ in range(2):
        assert _eventmig("rebuild", "--workers", "1", "--json", **env).returncode == 0
    assert _eventmig("rebuild", "order_summary", "--workers", "1", "--json", **env).returncode == 0

    named = _eventmig("rollback", "--read-models", "customer_totals", **env)
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("rolled back: customer_totals v1 (run ")
    last = _eventmig("rollback", "--read-models", **env)  # the last swap now is that rollback
    assert last.returncode == 0 and last.stdout.startswith("rolled back: customer_totals v1")

    unknown = _eventmig("rollback", "--read-models", "no_such", **env)
    assert unknown.returncode == 2 and "no swapped read models named no_such" in unknown.stderr
    misplaced = _eventmig("rollback", "order_summary", **env)
    assert misplaced.returncode == 2 and "--read-models" in misplaced.stderr
    typo = tmp_path / "typo.db"
    missing = _eventmig("rollback", "--read-models", "--read-models-url", f"sqlite:///{typo}", "--json", **env)
    assert missing.returncode == 2 and "no read-model database" in missing.stdout and not typo.exists()
    for result in (unknown, misplaced, missing):
        assert "Traceback" not in result.stderr + result.stdout
