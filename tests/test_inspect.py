"""``eventmig inspect URL`` and ``eventmig init --store URL``: what an existing database holds, and the settings for it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from eventmig import command
from eventmig.backends.sql.layouts import from_columns
from eventmig.jobs.seed import seed
from eventmig.errors import ExitCode
from eventmig.backends import open_store
from eventsourcing_app import write_history
from test_cli import REPO, eventmig
from test_columns_layout import COLUMNS, application_table
from test_false_clean import expected_table, tables


def test_inspect_recognises_an_eventsourcing_store_and_counts_its_events(store_url: str):
    write_history(store_url, dogs=2, tricks=3)
    before = tables(store_url)
    result = eventmig("inspect", store_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    table = expected_table(store_url)
    assert report["events_table"] == table
    found = {t["table"]: t for t in report["tables"]}
    assert found[table]["layout"] == "eventsourcing" and found[table]["events"] == 8
    assert {(c["type"], c["version"]): c["events"] for c in found[table]["counts"]} == {
        ("eventsourcing_app:Dog.Registered", 1): 2, ("eventsourcing_app:Dog.TrickAdded", 1): 6}
    settings = tomllib.loads(report["snippet"])["tool"]["eventmig"]
    assert settings["events_table"] == table and settings["layout"] == "eventsourcing"
    assert tables(store_url) == before  # inspect writes nothing
    human = eventmig("inspect", store_url)
    assert human.returncode == 0 and f'events_table = "{table}"' in human.stdout


def test_inspect_prefers_the_active_eventmig_table_and_maps_a_hand_rolled_one(sqlite_url: str):
    with open_store(sqlite_url) as store:
        seed(store, 50)
    assert eventmig("migrate", store=sqlite_url).returncode == 0  # events_e2 now sits beside events
    report = command.inspect(sqlite_url)
    assert report.events_table == "events"
    assert {t.table: t.layout for t in report.tables if t.layout} == {"events": "eventmig", "events_e2": "eventmig"}
    assert "layout" not in tomllib.loads(report.snippet)["tool"]["eventmig"]


def test_init_with_a_store_writes_the_settings_for_its_events_table(store_url: str, tmp_path: Path):
    application_table(store_url)
    with open_store(store_url, table="domain_events", layout=from_columns(COLUMNS)) as store:
        seed(store, 80)
    created = eventmig("init", str(tmp_path), "--store", store_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["eventmig"]
    assert settings["layout"] == "columns" and settings["events_table"] == "domain_events"
    assert settings["columns"] == COLUMNS
    # the settings written work as they are: the plan reads the table through them
    planned = eventmig("plan", "--config", str(tmp_path / "pyproject.toml"), "--json", env={"PYTHONPATH": str(REPO)})
    assert planned.returncode == 0, planned.stderr
    assert sum(p["events"] for p in json.loads(planned.stdout)["stored"]) == 81


def test_init_with_a_store_of_no_events_table_sets_eventmig_up_in_it(sqlite_url: str, tmp_path: Path):
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    engine.dispose()
    assert eventmig("migrate", "--store", sqlite_url).returncode == ExitCode.USAGE  # refused: not set up
    created = eventmig("init", str(tmp_path), "--store", sqlite_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "eventmig_epochs" in tables(sqlite_url)
    settings = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["eventmig"]
    assert settings["store"] == sqlite_url and "layout" not in settings
