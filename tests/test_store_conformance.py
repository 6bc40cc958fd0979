"""The store conformance suite (eventmig.testing.conformance), run against both SQL backends.

Under ``CI=true`` the PostgreSQL class fails, never skips, when the server
is unreachable (the ``postgres_url`` fixture of conftest.py).
"""

from __future__ import annotations

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
