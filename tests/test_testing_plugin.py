"""The pytest plugin, its fixtures, and the example service that proves its upcasters with them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "3 passed" in result.stdout, result.stdout


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
        "heavy = ['msgspec', 'sqlalchemy', 'hypothesis', 'eventmig.upcasting', 'eventmig.stores', 'eventmig.config']\n"
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
