"""The store conformance suite (eventmig.testing.conformance), run against every backend and table layout.

Under ``CI=true`` the PostgreSQL class fails, never skips, when the server
is unreachable (the ``postgres_url`` fixture of conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from eventmig.backends import open_store
from eventmig.backends.sql.layouts import from_columns
from eventmig.ports import EventStore
from eventmig.testing.conformance import StoreConformance
from test_columns_layout import COLUMNS, create_domain_events


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        return sqlite_url


class TestPostgreSQLStore(StoreConformance):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        return postgres_url


class _ColumnsLayout(StoreConformance):
    """A hand-rolled events table mapped with ``layout = "columns"`` (jsonb, timestamptz and bigserial on
    PostgreSQL): the store eventmig adopts rather than creates."""

    def open_another(self, store_url: str, **options: Any) -> EventStore:
        options.setdefault("table", "domain_events")  # a test may name another table (the limit's)
        return open_store(store_url, layout=from_columns(COLUMNS), **options)


class TestSQLiteColumnsLayout(_ColumnsLayout):
    @pytest.fixture
    def store_url(self, sqlite_url: str) -> str:
        create_domain_events(sqlite_url)
        return sqlite_url


class TestPostgreSQLColumnsLayout(_ColumnsLayout):
    @pytest.fixture
    def store_url(self, postgres_url: str) -> str:
        create_domain_events(postgres_url)
        return postgres_url


class TestEventStoreDB(StoreConformance):
    """EventStoreDB / KurrentDB, on a fresh stand-in node per test (an empty store)."""

    @pytest.fixture
    def store_url(self, esdb_node: Any) -> str:
        return esdb_node.url


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
