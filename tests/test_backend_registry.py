"""Backends chosen by URL scheme: the built-in ones, then those other packages register as entry points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventmig.backends import backend_class, open_store
from eventmig.backends.sql.store import SQLEventStore
from eventmig.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "backends.md"

STORE_MODULE = '''
from eventmig.backends.sql.store import SQLEventStore


class ThirdPartyStore(SQLEventStore):
    """A store from another package: SQLite under a scheme of its own."""

    def __init__(self, url, **options):
        super().__init__("sqlite:" + url.partition(":")[2], **options)
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package installed beside eventmig that registers ``thirdparty`` and (trying to) ``sqlite``."""
    (tmp_path / "thirdparty_store.py").write_text(STORE_MODULE)
    info = tmp_path / "thirdparty_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[eventmig.backends]\n"
        "thirdparty = thirdparty_store:ThirdPartyStore\n"
        "sqlite = thirdparty_store:ThirdPartyStore\n"
        "broken = thirdparty_store:NoSuchStore\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "thirdparty_store", raising=False)
    return tmp_path


def test_a_registered_scheme_opens_the_registered_store(installed: Path) -> None:
    with open_store(f"thirdparty:///{installed / 'events.db'}") as store:
        assert type(store).__name__ == "ThirdPartyStore"
        store.append("s", [])
        assert store.active_epoch() == 1


def test_built_in_schemes_win_over_entry_points(installed: Path) -> None:
    assert backend_class(f"sqlite:///{installed / 'x.db'}") is SQLEventStore


def test_unknown_and_unloadable_backends_are_configuration_errors(installed: Path) -> None:
    with pytest.raises(ConfigError, match="unknown store URL 'nosuch://x'"):
        backend_class("nosuch://x")
    with pytest.raises(ConfigError, match="the 'broken' store backend .*cannot be loaded"):
        backend_class("broken://x")


def test_the_documented_conformance_module_runs_against_a_registered_backend(installed: Path) -> None:
    """docs/backends.md's example test module, as a backend's author would copy it, against a backend
    registered by entry point only, including a test whose child processes open the store."""
    (block,) = re.findall(r"<!-- tested: backends-suite -->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    project = installed / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_conformance.py").write_text(block.replace('"mystore', '"thirdparty'))
    chosen = "append_and_read or lock_is_exclusive or resuming_after_a_checkpoint or capabilities_are_declared"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", chosen, "tests"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "4 passed" in result.stdout
