"""Fixtures shared by the test suite: real SQLite files and a real PostgreSQL server.

PostgreSQL tests get a schema of their own (through ``search_path`` in the
URL), dropped afterwards, so they can run against a shared database. When
the server is unreachable they are skipped on a developer's machine and
*fail* under ``CI=true``: a green CI run always means PostgreSQL was tested.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventmig.stores import EventStore, open_store

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("EVENTMIG_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

if str(REPO) not in sys.path:  # the reference service (upcasters/, projections/) lives at the repo root
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server URL, once checked reachable."""
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(exc.orig).splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in postgres_server else "?"
    try:
        yield f"{postgres_server}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per SQL backend."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def shop_registry():
    """The reference service's compiled registry."""
    import upcasters

    return upcasters.registry.compile()
