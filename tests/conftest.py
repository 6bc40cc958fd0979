"""Fixtures shared by the test suite: real SQLite files and a real PostgreSQL server.

PostgreSQL tests get a schema of their own (through ``search_path`` in the
URL), dropped afterwards, so they can run against a shared database. When
the server is unreachable they are skipped on a developer's machine and
*fail* under ``CI=true``: a green CI run always means PostgreSQL was tested.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmig.ports import EventStore
from eventmig.backends import open_store
from eventmig.testing.plugin import check_reachable, fresh_schema

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("EVENTMIG_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

if str(REPO) not in sys.path:  # the reference service (upcasters/, projections/) lives at the repo root
    sys.path.insert(0, str(REPO))


# The schema-per-test and skip-or-fail logic is eventmig's pytest plugin's
# (eventmig/testing/plugin.py), which service teams use too; here it gets the
# suite's server, which has a default, and the plugin's own fixtures
# (eventmig_postgres_store...) get the same one.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: under pytest-xdist they then run alongside the rest, not after it."""
    items.sort(key=lambda item: item.get_closest_marker("wheel") is None)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server URL, once checked reachable."""
    return check_reachable(POSTGRES_URL)


@pytest.fixture(scope="session")
def eventmig_postgres_server(postgres_server: str) -> str:
    return postgres_server


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped after the test."""
    with fresh_schema(postgres_server) as url:
        yield url


@pytest.fixture
def sqlite_url(eventmig_sqlite_url: str) -> str:
    return eventmig_sqlite_url


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


# ------------------------------------------------------------- EventStoreDB
# No EventStoreDB/KurrentDB server can be installed where the suite runs, so
# the ESDB tests talk to a protocol-level stand-in (tests/esdb_standin/), and
# the contract tests (test_esdb_contract.py) also to a real server when
# EVENTMIG_ESDB_URI names one. Without it those runs are skipped, under CI
# too: a green run says which ran (see pytest_terminal_summary below).
ESDB_URI = os.environ.get("EVENTMIG_ESDB_URI", "")


@pytest.fixture(scope="session")
def esdb_standin():
    """One stand-in node per test process (each xdist worker has its own, on its own port).

    It lives in this process, so a client process a test kills with SIGKILL
    leaves it serving; tests share it, so each uses streams of its own.
    """
    from esdb_standin import StandIn

    with StandIn() as node:
        yield node


@pytest.fixture(params=["stand-in", "server"])
def esdb_uri(request: pytest.FixtureRequest) -> str:
    """The stand-in's URL, then a real server's (EVENTMIG_ESDB_URI), skipped when none is given."""
    if request.param == "stand-in":
        return request.getfixturevalue("esdb_standin").url
    if not ESDB_URI:
        pytest.skip("no EventStoreDB/KurrentDB server: set EVENTMIG_ESDB_URI to run the contract against one")
    return ESDB_URI


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Say plainly which EventStoreDB the contract tests ran against."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])
               if "test_esdb_contract" in getattr(r, "nodeid", "") and getattr(r, "when", "call") == "call"]
    if not reports:
        return
    server = sum(re.search(r"[\[-]server[\]-]", r.nodeid) is not None for r in reports)
    standin = len(reports) - server
    target = f"and {server} against the server at {_masked(ESDB_URI)}" if server else \
        "and none against a real server (EVENTMIG_ESDB_URI not set)"
    terminalreporter.write_line(f"EventStoreDB contract: {standin} tests ran against the stand-in {target}")


def _masked(url: str) -> str:
    """A connection URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
