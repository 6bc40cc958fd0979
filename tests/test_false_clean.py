"""No false-clean runs: eventmig pointed at an application's database refuses, creates nothing, and says why.

The application here is a real one, written with the ``eventsourcing``
library, on SQLite and on PostgreSQL; the commands are run as an operator
runs them, in processes of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventmig import ConfigError
from eventmig.errors import ExitCode
from eventmig.backends import open_store
from eventsourcing_app import write_history
from test_cli import eventmig

REGISTRY = "[tool.eventmig]\nupcasters = \"upcasters:registry\"\n"


def tables(url: str) -> list[str]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def service(tmp_path: Path, store: str, extra: str = "") -> Path:
    """A service directory using the repository's reference upcasters, its store at ``store``."""
    (tmp_path / "pyproject.toml").write_text(REGISTRY + f'store = "{store}"\n' + extra)
    return tmp_path / "pyproject.toml"


@pytest.fixture
def app_url(store_url: str) -> str:
    """A database holding an eventsourcing application's history (and nothing of eventmig's)."""
    write_history(store_url)
    return store_url


def expected_table(url: str) -> str:
    return "stored_events" if url.startswith("sqlite") else "dogschool_events"


def test_migrate_with_the_default_settings_refuses_and_creates_nothing(app_url: str, tmp_path: Path):
    before = tables(app_url)
    config = service(tmp_path, app_url)
    for args in (("migrate",), ("migrate", "--dry-run"), ("switch",)):
        result = eventmig(*args, "--config", str(config), "--json")
        assert result.returncode == ExitCode.USAGE, (args, result.stdout, result.stderr)
        error = json.loads(result.stdout or result.stderr.splitlines()[-1])["error"]
        assert "no events table 'events' and no eventmig state" in error
        assert f"'{expected_table(app_url)}' looks like the eventsourcing layout" in error
        assert f'events_table = "{expected_table(app_url)}", layout = "eventsourcing"' in error
        assert "\n" not in error
    assert tables(app_url) == before


def test_read_only_commands_name_the_tables_that_are_there(app_url: str, tmp_path: Path):
    result = eventmig("plan", "--config", str(service(tmp_path, app_url)))
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "has no events table 'events'" in result.stderr
    assert "looks like the eventsourcing layout" in result.stderr


def test_a_table_of_another_layout_is_named_with_its_missing_columns(app_url: str, tmp_path: Path):
    table = expected_table(app_url)
    before = tables(app_url)
    config = service(tmp_path, app_url, f'events_table = "{table}"\n')
    for args in (("plan",), ("migrate",)):
        result = eventmig(*args, "--config", str(config))
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert (f"table '{table}' lacks the column(s) stream, version, global_position, event_id, type, data, "
                "metadata, recorded_at of the eventmig layout") in result.stderr
        assert "looks like the eventsourcing layout" in result.stderr
    assert tables(app_url) == before


def test_a_hand_rolled_events_table_is_recognised_with_its_columns(store_url: str):
    engine = sa.create_engine(store_url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE domain_events (id INTEGER PRIMARY KEY, stream_id TEXT, version INTEGER, "
                          "event_type TEXT, payload TEXT, metadata TEXT, created_at TEXT)")
    engine.dispose()
    with pytest.raises(ConfigError) as refused:
        open_store(store_url)
    assert ("'domain_events' looks like a plain events table (events_table = \"domain_events\", layout = \"columns\", "
            '[tool.eventmig.columns] stream = "stream_id", version = "version", position = "id", type = "event_type", '
            'data = "payload", metadata = "metadata", recorded_at = "created_at")') in str(refused.value)
    assert tables(store_url) == ["domain_events"]


def test_init_sets_eventmig_up_beside_the_application_and_an_empty_run_warns(app_url: str, tmp_path: Path):
    config = service(tmp_path, app_url)
    migrated = eventmig("migrate", "--init", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert "warning: read 0 events from table 'events'" in migrated.stderr
    assert "eventmig_epochs" in tables(app_url)
    planned = eventmig("plan", "--config", str(config), "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["warnings"][0].startswith("read 0 events from table 'events'")


def test_a_fresh_database_and_an_existing_eventmig_store_need_no_init(store_url: str):
    open_store(store_url).close()  # empty: eventmig sets itself up
    engine = sa.create_engine(store_url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE read_model (id INTEGER PRIMARY KEY)")  # the service's tables come later
    engine.dispose()
    open_store(store_url).close()


def test_an_eventsourcing_store_is_read_by_its_layout_and_migrated_beside_it(app_url: str, tmp_path: Path):
    """plan counts the application's events by (topic, class_version); migrate copies them into a sibling table
    and leaves the application's own table as it was."""
    (tmp_path / "dogs.py").write_text(
        "import msgspec\nfrom eventmig import Registry\nregistry = Registry()\n"
        "@registry.schema('eventsourcing_app:Dog.Registered', 1)\n"
        "class Registered(msgspec.Struct):\n    name: str\n    timestamp: dict\n    originator_topic: str\n"
        "@registry.schema('eventsourcing_app:Dog.TrickAdded', 1)\n"
        "class TrickAdded(msgspec.Struct):\n    trick: str\n    timestamp: dict\n")
    table = expected_table(app_url)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "{app_url}"\nupcasters = "dogs:registry"\nevents_table = "{table}"\n'
        'layout = "eventsourcing"\n')
    config = ("--config", str(tmp_path / "pyproject.toml"))
    before = tables(app_url)
    planned = eventmig("plan", *config, "--json")
    assert planned.returncode == 0, planned.stderr
    stored = {(p["type"], p["version"]): p["events"] for p in json.loads(planned.stdout)["stored"]}
    assert stored == {("eventsourcing_app:Dog.Registered", 1): 3, ("eventsourcing_app:Dog.TrickAdded", 1): 6}
    migrated = eventmig("migrate", *config)
    assert migrated.returncode == 0, migrated.stderr
    assert "read 9 events, wrote 9" in migrated.stdout
    created = set(tables(app_url)) - set(before)
    assert f"{table}_e2" in created and "eventmig_lineage" in created and "eventmig_epochs" in created
    assert set(before) <= set(tables(app_url))


def test_an_events_class_version_is_read_from_the_payload(store_url: str, tmp_path: Path):
    """class_version (written by eventsourcing only above 1) is the schema version; compressed state is refused."""
    from eventmig.backends.sql.layouts import EVENTSOURCING

    write_history(store_url, dogs=1, tricks=1)
    table = expected_table(store_url)
    engine = sa.create_engine(store_url)
    with engine.begin() as c:
        state = c.exec_driver_sql(f"SELECT state FROM {table} WHERE substr(topic, length(topic) - 9) = 'TrickAdded'").scalar()
        c.exec_driver_sql(f"UPDATE {table} SET state = ? WHERE substr(topic, length(topic) - 9) = 'TrickAdded'".replace(
            "?", "%s" if engine.dialect.name == "postgresql" else "?"),
            (bytes(state).replace(b'"trick"', b'"class_version":3,"trick"'),))
    with open_store(store_url, table=table, layout=EVENTSOURCING, read_only=True) as store:
        rows = [r for batch in store.read_all_rows() for r in batch]
        assert [json.loads(r[6]) for r in rows] == [{}, {"class_version": 3}]
        assert "class_version" not in json.loads(rows[1][5]) and json.loads(rows[1][5])["trick"] == "trick-0"
        assert rows[0][2] < rows[1][2] and rows[0][1] == 1 and rows[1][1] == 2
    with engine.begin() as c:
        import zlib

        c.exec_driver_sql(f"UPDATE {table} SET state = ? WHERE substr(topic, length(topic) - 9) = 'TrickAdded'".replace(
            "?", "%s" if engine.dialect.name == "postgresql" else "?"), (zlib.compress(bytes(state)),))
    engine.dispose()
    with open_store(store_url, table=table, layout=EVENTSOURCING, read_only=True) as store:
        with pytest.raises(ConfigError, match="payload is zlib-compressed: eventmig reads payloads that are JSON"):
            list(store.read_all_rows())
