"""A hand-rolled events table, mapped with ``layout = "columns"`` and no code: migrate, verify, switch,
rebuild and roll back, on SQLite and PostgreSQL, with the application writing through its own SQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventmig.backends.sql.layouts import from_columns
from eventmig.jobs.seed import seed
from eventmig.errors import ExitCode
from eventmig.backends import open_store
from test_cli import REPO, eventmig

COLUMNS = {"stream": "stream_id", "version": "version", "position": "id", "type": "event_type", "data": "payload",
           "metadata": "metadata", "recorded_at": "created_at"}
#: the application's own DDL, as a team writes it (PostgreSQL: jsonb, timestamptz, bigserial)
DDL = {
    "postgresql": "CREATE TABLE domain_events (id bigserial PRIMARY KEY, stream_id text NOT NULL, version int NOT NULL, "
                  "event_type text NOT NULL, payload jsonb NOT NULL, metadata jsonb NOT NULL DEFAULT '{}', "
                  "created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, version))",
    "sqlite": "CREATE TABLE domain_events (id INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER NOT NULL, "
              "event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', "
              "created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, UNIQUE (stream_id, version))",
}


def create_domain_events(url: str) -> None:
    """The application's empty events table, created with its own DDL."""
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql(DDL[engine.dialect.name])
    engine.dispose()


def application_table(url: str) -> None:
    create_domain_events(url)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE orders_view (id TEXT PRIMARY KEY)")  # another table of the application's
        # what the application wrote itself, with the database's defaults for metadata and time
        c.exec_driver_sql(
            "INSERT INTO domain_events (stream_id, version, event_type, payload) VALUES "
            "('order-app-1', 1, 'OrderCancelled', '{\"order_id\": \"app-1\", \"reason\": \"typo\", \"cancelled_at\": \"2026-01-02\"}')")
    engine.dispose()


def rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.exec_driver_sql(
                f"SELECT id, stream_id, version, event_type, payload, metadata FROM {table} ORDER BY id")]
    finally:
        engine.dispose()


def test_a_columns_mapped_table_migrates_verifies_switches_rebuilds_and_rolls_back(store_url: str, tmp_path: Path):
    application_table(store_url)
    with open_store(store_url, table="domain_events", layout=from_columns(COLUMNS)) as store:
        assert seed(store, 600) == 600
        assert store.read_stream("order-app-1")[0].decoded_data() == {
            "order_id": "app-1", "reason": "typo", "cancelled_at": "2026-01-02"}
    before = rows(store_url, "domain_events")
    mapping = "".join(f'{k} = "{v}"\n' for k, v in COLUMNS.items())
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "{store_url}"\nupcasters = "upcasters:registry"\n'
        f'projections = "projections:projections"\nevents_table = "domain_events"\nlayout = "columns"\n'
        f'\n[tool.eventmig.columns]\n{mapping}')
    config = ("--config", str(tmp_path / "pyproject.toml"))
    env = {"PYTHONPATH": str(REPO)}

    def run(*args: str) -> dict:
        result = eventmig(*args, *config, "--json", env=env)
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout)

    migrated = run("migrate", "--workers", "2", "--batch-size", "150")
    assert migrated["events_read"] == 601 and not migrated["warnings"]
    assert run("verify")["ok"]
    assert run("switch")["to_epoch"] == 2
    after = rows(store_url, "domain_events")
    assert after != before and rows(store_url, "domain_events_e1") == before
    upcast = [json.loads(r[4]) if isinstance(r[4], str) else r[4] for r in after if r[3] == "OrderPlaced"]
    assert upcast and all("total_cents" in p for p in upcast)  # the shop's upcaster ran
    rebuilt = run("rebuild")
    assert rebuilt["ok"], rebuilt
    # the application carries on appending with its own SQL into the table it always used
    engine = sa.create_engine(store_url)
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO domain_events (stream_id, version, event_type, payload) VALUES "
                          "('order-app-2', 1, 'OrderCancelled', '{\"order_id\": \"app-2\", \"reason\": \"late\", \"cancelled_at\": \"2026-01-03\"}')")
    engine.dispose()
    assert run("rollback", "--force")["to_epoch"] == 1
    assert rows(store_url, "domain_events")[:len(before)] == before


def test_a_columns_layout_names_what_the_table_lacks(sqlite_url: str, tmp_path: Path):
    application_table(sqlite_url)
    mapping = "".join(f'{k} = "{v}"\n' for k, v in {**COLUMNS, "data": "body"}.items())
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "{sqlite_url}"\nupcasters = "upcasters:registry"\nevents_table = "domain_events"\n'
        f'layout = "columns"\n\n[tool.eventmig.columns]\n{mapping}')
    result = eventmig("plan", "--config", str(tmp_path / "pyproject.toml"), env={"PYTHONPATH": str(REPO)})
    assert result.returncode == ExitCode.USAGE
    assert "table 'domain_events' lacks the column(s) body of the columns layout" in result.stderr


@pytest.mark.parametrize(("columns", "message"), [
    ({"stream": "s"}, "needs [tool.eventmig.columns] to map version, position, type, data"),
    ({**COLUMNS, "colour": "c"}, "unknown field(s) colour"),
    ({**COLUMNS, "data": 3}, "data must name a column"),
])
def test_a_wrong_columns_table_is_a_one_line_configuration_error(columns: dict, message: str):
    from eventmig import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_columns(columns)
