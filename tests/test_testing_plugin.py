"""The pytest plugin, its fixtures, and the example service that proves its upcasters with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

import eventmig
from eventmig import CompiledRegistry, EventStore

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "testing-upcasters"


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_") and k != "PYTEST_ADDOPTS"}
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(tmp_path / ".hypothesis")  # keep the example's tree clean
    return {**env, **extra}


def test_the_example_service_proves_its_upcasters_with_the_plugin(tmp_path: Path, postgres_server: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=EXAMPLE, env=clean_env(tmp_path, EVENTMIG_TEST_POSTGRES=postgres_server),
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # 6 registered examples, 4 cases and 10 schemas as items of their own, two histories migrated and
    # verified, one legacy history
    assert "23 passed" in result.stdout, result.stdout


def test_eventmig_check_passes_in_the_example_without_creating_its_store(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventmig", "check", "--examples", "20"],
        cwd=EXAMPLE, env=clean_env(tmp_path), capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check passed" in result.stdout
    assert "accounts.db does not exist" in result.stdout.replace("\n", "")
    assert not (EXAMPLE / "accounts.db").exists()


def test_loading_the_plugin_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys, eventmig.testing.plugin\n"
        "heavy = ['msgspec', 'sqlalchemy', 'hypothesis', 'eventmig.model.registry', 'eventmig.model.chains', 'eventmig.backends', 'eventmig.config']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(tmp_path), capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_plugin_is_registered_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("eventmig")
    assert pytestconfig.getoption("eventmig_postgres", default=None) is None


def test_public_names_resolve_on_first_use() -> None:
    for name in eventmig.__all__:
        assert getattr(eventmig, name) is not None
    assert set(eventmig.__all__) <= set(dir(eventmig))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        eventmig.Nope  # noqa: B018


def test_settings_and_registry_come_from_the_project_under_test(eventmig_settings, eventmig_registry) -> None:
    assert eventmig_settings.config_file == REPO / "pyproject.toml"
    assert eventmig_settings.upcasters == "upcasters:registry"
    assert isinstance(eventmig_registry, CompiledRegistry)
    assert eventmig_registry.heads["OrderPlaced"] == 3


def test_throwaway_stores(eventmig_sqlite_store: EventStore, eventmig_make_sqlite_store, eventmig_postgres_store) -> None:
    for store in (eventmig_sqlite_store, eventmig_make_sqlite_store(), eventmig_make_sqlite_store(),
                  eventmig_postgres_store):
        assert store.head_position() is None
        store.append("s", [eventmig.new_event("T", {"n": 1})])
        assert store.stream_version("s") == 1


PROJECT_TEST = '''
import msgspec
from eventmig import new_event


def test_registry_of_the_project(eventmig_registry):
    assert eventmig_registry.heads == {"Pinged": 1}


def test_postgres_store(eventmig_postgres_store, eventmig_postgres_url):
    open("schema-url.txt", "w").write(eventmig_postgres_url)
    eventmig_postgres_store.append("s", [new_event("Pinged", {"n": 1})])
    assert eventmig_postgres_store.stream_version("s") == 1
'''


def plugin_project(tmp_path: Path, ini: str = "") -> Path:
    """A service with one schema and a test of the plugin's registry and PostgreSQL fixtures."""
    root = tmp_path / "svc"
    (root / "pings").mkdir(parents=True)
    (root / "pings" / "__init__.py").write_text(
        "import msgspec\nfrom eventmig import Registry\nregistry = Registry()\n\n"
        "@registry.schema('Pinged', 1)\nclass Pinged(msgspec.Struct):\n    n: int\n"
    )
    (root / "pyproject.toml").write_text(
        f'[tool.eventmig]\nupcasters = "pings:registry"\n\n[tool.pytest.ini_options]\npythonpath = ["."]\n{ini}'
    )
    (root / "test_service.py").write_text(PROJECT_TEST)
    return root


def run_pytest(root: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", *args], cwd=root,
        env=clean_env(tmp_path, **env), capture_output=True, text=True, check=False, timeout=300,
    )


def test_without_a_postgres_url_the_postgres_fixtures_skip(tmp_path: Path) -> None:
    result = run_pytest(plugin_project(tmp_path), tmp_path, CI="false")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "no PostgreSQL server given: pass --eventmig-postgres URL" in result.stdout


def test_a_postgres_url_from_the_option_or_the_ini_file_gives_a_store_in_a_dropped_schema(
    tmp_path: Path, postgres_server: str
) -> None:
    for root, args in [
        (plugin_project(tmp_path / "option"), ["--eventmig-postgres", postgres_server]),
        (plugin_project(tmp_path / "ini", ini=f'eventmig_postgres = "{postgres_server}"\n'), []),
    ]:
        result = run_pytest(root, tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout, result.stdout
        url = (root / "schema-url.txt").read_text()
        schema = url.rsplit("search_path%3D", 1)[1]
        engine = sqlalchemy.create_engine(postgres_server)
        try:
            with engine.connect() as conn:
                left = conn.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
                ).scalar()
        finally:
            engine.dispose()
        assert left == 0, f"schema {schema} was not dropped"


def test_an_unreachable_postgres_skips_but_fails_under_ci(tmp_path: Path) -> None:
    root = plugin_project(tmp_path)
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    skipped = run_pytest(root, tmp_path, "--eventmig-postgres", unreachable, CI="false")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 passed, 1 skipped" in skipped.stdout and "is unreachable" in skipped.stdout

    failed = run_pytest(root, tmp_path, "--eventmig-postgres", unreachable, CI="true")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "1 passed, 1 error" in failed.stdout, failed.stdout  # the fixture fails the test's setup
    assert "PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:1/test is unreachable" in failed.stdout
