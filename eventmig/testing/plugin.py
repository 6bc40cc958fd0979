"""The pytest plugin of eventmig: fixtures for testing a service's upcasters and projections.

Installed with eventmig (entry point ``pytest11``), so any project that
installs eventmig gets it in every pytest run. It therefore imports nothing
but pytest and the standard library when loaded: eventmig's own modules,
msgspec, SQLAlchemy and hypothesis are imported by the fixtures, when a test
asks for one.

Fixtures:

``eventmig_settings`` (session)
    :class:`~eventmig.config.Settings` of the project under test: its
    ``[tool.eventmig]`` (``--eventmig-config``, ``EVENTMIG_CONFIG``, or the
    nearest ``pyproject.toml`` from pytest's root directory).
``eventmig_registry`` (session)
    the configured upcaster registry, compiled (a
    :class:`~eventmig.CompiledRegistry`; ``.registry`` is the Registry).
``eventmig_sqlite_url``, ``eventmig_sqlite_store``
    a throwaway SQLite store in the test's ``tmp_path``.
``eventmig_make_sqlite_store``
    a factory of throwaway SQLite stores, for tests that need a fresh store
    per hypothesis example or several stores.
``eventmig_postgres_url``, ``eventmig_postgres_store``
    a store in a schema of its own on the PostgreSQL server given by
    ``--eventmig-postgres``, ``EVENTMIG_TEST_POSTGRES`` or the ini option
    ``eventmig_postgres`` (first found), dropped after the test. Without a
    URL the test is skipped; with one that cannot be reached it is skipped,
    or fails when ``CI=true``, so a green CI run means PostgreSQL was tested.

Items: a name in a test module bound to
:func:`~eventmig.testing.suite.upcaster_tests()` is collected as one item per
example and one per ``(type, version)`` of the registry, each running what
``eventmig check`` runs for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from eventmig.config import Settings
    from eventmig.ports import EventStore
    from eventmig.model.chains import CompiledRegistry

POSTGRES_ENV = "EVENTMIG_TEST_POSTGRES"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eventmig", "eventmig event store fixtures")
    group.addoption(
        "--eventmig-config",
        metavar="PATH",
        help="pyproject.toml with the [tool.eventmig] of the service under test (default: the nearest one).",
    )
    group.addoption(
        "--eventmig-postgres",
        metavar="URL",
        help=f"PostgreSQL server for the eventmig_postgres_* fixtures (env {POSTGRES_ENV}).",
    )
    parser.addini("eventmig_postgres", "PostgreSQL server URL for the eventmig_postgres_* fixtures.", default="")


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> pytest.Collector | None:
    """Collect ``test_upcasters = upcaster_tests()`` into its items (see eventmig.testing.suite)."""
    from eventmig.testing.suite import UpcasterTests

    if not isinstance(obj, UpcasterTests):
        return None
    from eventmig.testing.collect import UpcasterSuite

    return UpcasterSuite.from_parent(collector, name=name, spec=obj)


# ----------------------------------------------------------------- the service
@pytest.fixture(scope="session")
def eventmig_settings(pytestconfig: pytest.Config) -> Settings:
    """Settings from the ``[tool.eventmig]`` of the project under test."""
    from eventmig.config import find_config, load_settings
    from eventmig.errors import ConfigError

    path: str | Path | None = pytestconfig.getoption("eventmig_config") or os.environ.get("EVENTMIG_CONFIG")
    if not path:
        path = find_config(Path(pytestconfig.rootpath))
        if path is None:
            pytest.fail(
                f"eventmig: no pyproject.toml with [tool.eventmig] in {pytestconfig.rootpath} or above; "
                "pass --eventmig-config",
                pytrace=False,
            )
    try:
        return load_settings(path)
    except ConfigError as exc:
        pytest.fail(f"eventmig: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def eventmig_registry(eventmig_settings: Settings) -> CompiledRegistry:
    """The service's upcaster registry, imported as ``eventmig`` commands do, and compiled."""
    from eventmig.config import load_registry
    from eventmig.errors import ConfigError

    try:
        return load_registry(eventmig_settings)
    except ConfigError as exc:
        pytest.fail(f"eventmig: {exc}", pytrace=False)


# ---------------------------------------------------------------------- SQLite
@pytest.fixture
def eventmig_sqlite_url(tmp_path: Path) -> str:
    """The URL of a SQLite store that does not exist yet, in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def eventmig_make_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], EventStore]]:
    """A factory of fresh, empty SQLite stores; all are closed after the test."""
    from eventmig.backends import open_store

    opened: list[EventStore] = []
    directory = tmp_path_factory.mktemp("eventmig-stores")

    def make() -> EventStore:
        store = open_store(f"sqlite:///{directory / f'events-{len(opened)}.db'}")
        opened.append(store)
        return store

    try:
        yield make
    finally:
        for store in opened:
            store.close()


@pytest.fixture
def eventmig_sqlite_store(eventmig_sqlite_url: str) -> Iterator[EventStore]:
    """An empty SQLite event store, closed after the test."""
    from eventmig.backends import open_store

    store = open_store(eventmig_sqlite_url)
    try:
        yield store
    finally:
        store.close()


# ------------------------------------------------------------------ PostgreSQL
def postgres_server_url(config: pytest.Config) -> str | None:
    """The PostgreSQL server URL configured for this run, if any."""
    return config.getoption("eventmig_postgres") or os.environ.get(POSTGRES_ENV) or config.getini("eventmig_postgres") or None


def check_reachable(url: str) -> str:
    """Return ``url`` if the server answers; otherwise skip, or fail when ``CI=true``."""
    import sqlalchemy as sa

    from eventmig.urls import mask_url

    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 (e.g. the driver is not installed)
        _unavailable(f"cannot use PostgreSQL at {mask_url(url)}: {type(exc).__name__}: {exc}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as exc:
        _unavailable(f"PostgreSQL at {mask_url(url)} is unreachable: {str(exc.orig).strip().splitlines()[0]}")
    finally:
        engine.dispose()
    return url


def _unavailable(message: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def fresh_schema(server_url: str) -> Iterator[str]:
    """A URL on ``server_url`` whose connections use a new, empty schema, dropped on exit."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in server_url else "?"
        try:
            yield f"{server_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def eventmig_postgres_server(pytestconfig: pytest.Config) -> str:
    """The configured PostgreSQL server URL, checked reachable once per run."""
    url = postgres_server_url(pytestconfig)
    if url is None:
        pytest.skip(f"no PostgreSQL server given: pass --eventmig-postgres URL or set {POSTGRES_ENV}")
    return check_reachable(url)


@pytest.fixture
def eventmig_postgres_url(eventmig_postgres_server: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema on the PostgreSQL server, dropped after the test."""
    with fresh_schema(eventmig_postgres_server) as url:
        yield url


@pytest.fixture
def eventmig_postgres_store(eventmig_postgres_url: str) -> Iterator[EventStore]:
    """An empty PostgreSQL event store in a schema of its own, closed and dropped after the test."""
    from eventmig.backends import open_store

    store = open_store(eventmig_postgres_url)
    try:
        yield store
    finally:
        store.close()
