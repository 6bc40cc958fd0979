"""``eventmig rebuild`` and ``eventmig rollback --read-models`` end to end: real processes, --json, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

import projections as shop
from eventmig.jobs.seed import seed
from eventmig.projection.fold import replay
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.backends.sql.rowdigests import digest_table_rows
from eventmig.urls import mask_url
from eventmig.backends import open_store

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def as_json(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_rebuild_and_rollback_through_the_cli(store_url: str, tmp_path: Path):
    with open_store(store_url) as store:
        seed(store, 3000)
    env = {"EVENTMIG_STORE": store_url}

    first = eventmig("rebuild", "--workers", "2", "--json", **env)
    assert first.returncode == 0, first.stderr
    report = as_json(first)
    assert report["ok"] and report["swapped"] and report["events_read"] == 3000 and report["workers"] == 2
    assert {p["name"]: p["status"] for p in report["projections"]} == {
        "order_summary": "swapped", "customer_totals": "swapped", "order_snapshots": "swapped"}
    assert set(report["timings"]) == {"fold", "verify", "swap"}

    again = as_json(eventmig("rebuild", "order_summary", "--workers", "1", "--json", **env))
    (p,) = again["projections"]
    assert p["live_version"] == 1 and p["tables"][0]["changed"] == 0 and p["tables"][0]["digest"] == p["tables"][0]["live_digest"]

    human = eventmig("rebuild", "customer_totals", "--no-swap", **env)
    assert human.returncode == 0, human.stderr
    assert "customer_totals" in human.stdout and "not swapped" in human.stdout

    rolled = eventmig("rollback", "--read-models", "--json", **env)
    assert rolled.returncode == 0, rolled.stderr
    # only order_summary was swapped twice: the others have no previous tables to go back to
    assert [s["projection"] for s in as_json(rolled)["swaps"]] == ["order_summary"]
    rolled_text = eventmig("rollback", "--read-models", **env)
    assert rolled_text.returncode == 0 and "rolled back: order_summary" in rolled_text.stdout

    unknown = eventmig("rebuild", "no_such_projection", "--json", **env)
    assert unknown.returncode == 2 and "unknown projection" in as_json(unknown)["error"]


def test_read_models_url_option_and_env(sqlite_url: str, tmp_path: Path):
    with open_store(sqlite_url) as store:
        seed(store, 500)
    flag = f"sqlite:///{tmp_path / 'by-flag.db'}"
    env_db = f"sqlite:///{tmp_path / 'by-env.db'}"
    by_flag = eventmig("rebuild", "--read-models", flag, "--workers", "1", "--json",
                       EVENTMIG_STORE=sqlite_url, EVENTMIG_READ_MODELS=env_db)
    assert by_flag.returncode == 0, by_flag.stderr
    assert as_json(by_flag)["read_models"] == flag
    by_env = eventmig("rebuild", "--workers", "1", "--json", EVENTMIG_STORE=sqlite_url, EVENTMIG_READ_MODELS=env_db)
    assert as_json(by_env)["read_models"] == env_db
    for url in (flag, env_db):
        with ReadModelDB(url) as db:
            assert "order_summary" in db.live_models()


def test_changed_version_is_refused_with_exit_1_then_accepted(sqlite_url: str, tmp_path: Path):
    with open_store(sqlite_url) as store:
        seed(store, 1500)
    service = tmp_path / "service"
    (service / "shopv2").mkdir(parents=True)
    (service / "pyproject.toml").write_text(textwrap.dedent(f"""
        [tool.eventmig]
        store = "{sqlite_url}"
        upcasters = "upcasters:registry"
        projections = "shopv2:projections"
    """))
    (service / "shopv2" / "__init__.py").write_text(textwrap.dedent("""
        from eventmig.projection.api import STREAM, Projection
        from projections.orders import order_summary as v1

        # version 2 of the order summary: cancelled orders are not listed any more
        order_summary = Projection("order_summary", version=2, tables=v1.tables, state=v1.state_type, key=STREAM)
        for event_type, handler in v1.handlers.items():
            order_summary.on(event_type)(handler)

        @order_summary.rows
        def rows(stream, s):
            if not s.order_id or s.status == "cancelled":
                return []
            return [(s.order_id, s.customer_id, s.status, s.item_count, s.total_cents, s.currency)]

        projections = [order_summary]
    """))
    assert eventmig("rebuild", "order_summary", "--workers", "2", "--json", EVENTMIG_STORE=sqlite_url).returncode == 0

    refused = eventmig("rebuild", "--workers", "2", "--json", cwd=service)
    assert refused.returncode == 1, refused.stderr
    report = as_json(refused)
    (p,) = report["projections"]
    assert not report["ok"] and not report["swapped"] and p["status"] == "refused"
    assert p["live_version"] == 1 and p["version"] == 2
    (t,) = p["tables"]
    assert t["removed"] > 0 and t["added"] == 0 and t["changed"] == 0 and t["sample"]
    assert "--accept-changes" in report["problems"][0]

    human = eventmig("rebuild", "--workers", "2", cwd=service)
    assert human.returncode == 1 and "swap refused" in human.stdout and "--accept-changes" in human.stderr

    accepted = eventmig("rebuild", "--workers", "2", "--accept-changes", "--json", cwd=service)
    assert accepted.returncode == 0, accepted.stderr
    assert as_json(accepted)["swapped"]
    with ReadModelDB(sqlite_url) as db:
        assert db.live_models()["order_summary"].version == 2


def test_busy_and_bad_configuration_exit_codes(sqlite_url: str, tmp_path: Path):
    with open_store(sqlite_url) as store:
        seed(store, 100)
    with ReadModelDB(sqlite_url) as db, db.lock("rebuild"):
        busy = eventmig("rebuild", "--json", EVENTMIG_STORE=sqlite_url)
        assert busy.returncode == 4 and "rebuild" in as_json(busy)["error"]
    no_projections = eventmig("rebuild", "--json", EVENTMIG_STORE=sqlite_url, EVENTMIG_PROJECTIONS="no_such_module:projections")
    assert no_projections.returncode == 2 and "not found" in as_json(no_projections)["error"]
    not_a_list = eventmig("rebuild", "--json", EVENTMIG_STORE=sqlite_url, EVENTMIG_PROJECTIONS="projections.orders:order_summary")
    assert not_a_list.returncode == 2 and "not a list" in as_json(not_a_list)["error"]
    nothing = eventmig("rollback", "--read-models", "--json", EVENTMIG_STORE=sqlite_url)
    assert nothing.returncode == 2 and "nothing to roll back" in as_json(nothing)["error"]


FORCED_FORK = (
    "import runpy, sys; import eventmig.jobs.rebuild.workers as r; r.FORK_MIN_EVENTS = 0; sys.argv[0] = 'eventmig'; "
    "runpy.run_module('eventmig', run_name='__main__')"
)


@pytest.mark.parametrize("direction", ["sqlite-store-postgres-read-models", "postgres-store-sqlite-read-models"])
def test_read_models_in_another_database_through_the_cli(direction: str, sqlite_url: str, postgres_url: str,
                                                         tmp_path: Path, shop_registry):
    """Store on one backend, read models on the other: rebuild in worker processes, verify, swap, roll back."""
    store_url, read_models = ((sqlite_url, postgres_url) if direction.startswith("sqlite")
                              else (postgres_url, f"sqlite:///{tmp_path}/read-models.db"))
    with open_store(store_url) as store:
        seed(store, 2000)
        rows = [r for batch in store.read_all_rows() for r in batch]
    tables = {t.name: t for p in shop.projections for t in p.tables}
    expected = {name: digest_table_rows(tables[name], produced)
                for name, produced in replay(shop.projections, shop_registry, rows).items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    env.update(EVENTMIG_STORE=store_url, PYTHONPATH=str(REPO))
    forked = subprocess.run([sys.executable, "-c", FORCED_FORK, "rebuild", "--read-models", read_models, "--workers", "2",
                             "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert forked.returncode == 0, forked.stderr
    report = as_json(forked)
    assert report["ok"] and report["swapped"] and report["processes"] == 2 and report["events_read"] == 2000
    assert report["read_models"] == mask_url(read_models)
    assert {t["table"]: t["digest"] for p in report["projections"] for t in p["tables"]} == expected

    again = as_json(eventmig("rebuild", "--read-models", read_models, "--workers", "2", "--json", EVENTMIG_STORE=store_url))
    assert again["swapped"] and all(t["changed"] == t["added"] == t["removed"] == 0
                                    for p in again["projections"] for t in p["tables"])
    rolled = eventmig("rollback", "--read-models", "--read-models-url", read_models, "--json", EVENTMIG_STORE=store_url)
    assert rolled.returncode == 0, rolled.stderr
    assert {s["projection"] for s in as_json(rolled)["swaps"]} == {"order_summary", "customer_totals", "order_snapshots"}

    with open_store(store_url) as store, store.engine.connect() as conn:  # the event store got none of it
        assert not [n for n in sa.inspect(conn).get_table_names() if n.startswith(("order_", "customer_", "eventmig_rebuild", "eventmig_read", "eventmig_rbs"))]
    with ReadModelDB(read_models) as db, db.read() as conn:  # and the read-model database no events
        assert not db.table_exists("events", conn)
        assert {n: m.run_id for n, m in db.live_models(conn).items()} == {
            p["name"]: p["run_id"] for p in report["projections"]}


def test_rebuild_of_an_empty_store(store_url: str):
    """No events yet: every projection gets its (empty) tables, swapped in; the next rebuild fills them."""
    open_store(store_url).close()
    env = {"EVENTMIG_STORE": store_url}
    empty = eventmig("rebuild", "--workers", "2", "--json", **env)
    assert empty.returncode == 0, empty.stderr
    report = as_json(empty)
    assert report["ok"] and report["swapped"] and report["until"] is None and report["events_read"] == 0
    assert {t["table"]: t["rows"] for p in report["projections"] for t in p["tables"]} == {
        "order_summary": 0, "customer_totals": 0, "order_snapshots": 0}
    human = eventmig("rebuild", "--workers", "2", **env)
    assert human.returncode == 0 and "(no events)" in human.stdout and "swapped in" in human.stdout
    with open_store(store_url) as store:
        seed(store, 300)
    # the same code, the same version: the new rows are the new events' doing, swapped in without a flag
    filled = as_json(eventmig("rebuild", "--workers", "2", "--json", **env))
    assert filled["swapped"] and filled["events_read"] == 300
    assert all(t["rows"] == t["added"] > 0 for p in filled["projections"] for t in p["tables"])
    assert len(filled["notes"]) == 3 and all("from events appended since" in n for n in filled["notes"])
