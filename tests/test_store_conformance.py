"""The store conformance suite (eventmig.testing.conformance), run against both SQL backends.

Under ``CI=true`` the PostgreSQL class fails, never skips, when the server
is unreachable (the ``postgres_url`` fixture of conftest.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventmig.testing.conformance import StoreConformance


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestPostgreSQLStore(StoreConformance):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url


def test_neither_eventmig_nor_its_plugin_imports_the_suite() -> None:
    """The suite imports pytest and hypothesis; ``import eventmig`` and the pytest plugin stay cheap."""
    code = (
        "import sys, eventmig, eventmig.ports, eventmig.backends\n"
        "print(sorted(m for m in ('pytest', 'hypothesis', 'eventmig.testing.conformance') if m in sys.modules))\n"
        "import eventmig.testing.plugin\n"
        "print(sorted(m for m in ('hypothesis', 'eventmig.testing.conformance') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert result.stdout.split() == ["[]", "[]"], result.stdout + result.stderr
