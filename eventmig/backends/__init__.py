"""Event store backends behind one interface; :func:`open_store` picks one by URL scheme.

Each backend is a package of its own under ``eventmig.backends``, found by
the scheme of the store's URL through :data:`BACKENDS` and imported only
when a URL asks for it, so a backend's driver (psycopg, a gRPC client) is
needed only by those who use it.

A backend outside eventmig registers its scheme as an entry point of the
group ``eventmig.backends`` (``mystore = "mypackage.store:MyStore"``); the
built-in schemes of :data:`BACKENDS` win over any entry point of the same
name, so an installed package cannot take over ``sqlite`` or ``postgresql``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from eventmig.errors import ConfigError
from eventmig.ports import EventStore
from eventmig.ports_readmodels import (
    FollowerStore,
    PartitionClaims,
    ReadModelSink,
    register_claims_opener,
    register_follower_opener,
    register_opener,
)
from eventmig.urls import url_shown_unparsed

__all__ = ["BACKENDS", "ENTRY_POINT_GROUP", "READ_MODELS", "backend_class", "open_read_models", "open_store"]

#: the entry-point group in which other packages register backends, by URL scheme
ENTRY_POINT_GROUP = "eventmig.backends"

#: URL scheme (before any ``+driver``) -> ``"module:class"`` of the store that serves it
BACKENDS: dict[str, str] = {
    "sqlite": "eventmig.backends.sql.store:SQLEventStore",
    "postgresql": "eventmig.backends.sql.store:SQLEventStore",
    "postgres": "eventmig.backends.sql.store:SQLEventStore",
    # EventStoreDB / KurrentDB, in kurrentdbclient's spellings (esdb+discover://... too)
    "esdb": "eventmig.backends.esdb.store:ESDBEventStore",
    "kurrentdb": "eventmig.backends.esdb.store:ESDBEventStore",
    "kdb": "eventmig.backends.esdb.store:ESDBEventStore",
}


def backend_class(url: str) -> type[EventStore]:
    """The store class that serves ``url``, or a configuration error naming the supported schemes."""
    scheme = url.partition(":")[0].split("+")[0].lower()
    target = BACKENDS.get(scheme)
    if target is not None:
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    registered = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not registered:
        raise ConfigError(
            f"unknown store URL {url_shown_unparsed(url)!r}: expected sqlite:///PATH, postgresql+psycopg://USER@HOST/DB "
            "or esdb://HOST:PORT"
        )
    entry = next(iter(registered))
    try:
        return entry.load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"the {scheme!r} store backend ({entry.value}) cannot be loaded: {exc}") from None


def open_store(
    url: str, *, table: str = "events", create: bool = True, read_only: bool = False, init: bool = False,
    layout: Any = None,
) -> EventStore:
    """Open the event store at ``url``, creating eventmig's schema on first use.

    ``sqlite:///path.db`` and ``postgresql+psycopg://user@host/db`` are SQL
    stores, ``esdb://host:2113`` (and ``esdb+discover://``, ``kurrentdb://``)
    an EventStoreDB cluster; anything else is refused with a message naming what is supported.
    With ``create=False`` a SQLite file that does not exist is an error
    rather than a new, empty store. ``read_only`` opens it for reading only
    (a SQLite file read-only, PostgreSQL sessions read-only) and creates
    nothing: a store eventmig never wrote to reads as its first epoch.

    eventmig creates nothing in a database that holds other tables and no
    eventmig state (an application's database, reached with the wrong URL or
    table name): that is refused with a ConfigError naming what is there,
    unless ``init`` says to set eventmig up beside those tables. ``layout``
    (:class:`~eventmig.backends.sql.layouts.Layout`, SQL stores) says which
    column of the events table holds what; eventmig's own table by default.
    """
    options: dict[str, Any] = {"table": table, "create": create, "read_only": read_only}
    if init:
        options["init"] = True
    if layout is not None:
        options["layout"] = layout
    return backend_class(url)(url, **options)


#: URL scheme -> ``"module:class"`` of the read-model database that serves it
READ_MODELS: dict[str, str] = {
    "sqlite": "eventmig.backends.sql.readmodels:ReadModelDB",
    "postgresql": "eventmig.backends.sql.readmodels:ReadModelDB",
    "postgres": "eventmig.backends.sql.readmodels:ReadModelDB",
}


def open_read_models(url: str, *, create: bool = True) -> ReadModelSink:
    """Open the read-model database at ``url`` (shadow tables, rebuild bookkeeping, swaps)."""
    scheme = url.partition(":")[0].split("+")[0].lower()
    target = READ_MODELS.get(scheme)
    if target is None:
        raise ConfigError(
            f"unknown read-model database URL {url_shown_unparsed(url)!r}: "
            "expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(url, create=create)


def open_followers(sink: ReadModelSink) -> FollowerStore:
    """The follower bookkeeping beside a read-model database this package opened (SQL: ``FollowerDB``)."""
    from eventmig.backends.sql.following import FollowerDB
    from eventmig.backends.sql.readmodels import ReadModelDB

    if not isinstance(sink, ReadModelDB):
        raise ConfigError(f"follow keeps read models in SQLite or PostgreSQL, not in {sink.url}")
    return FollowerDB(sink)


def open_claims(sink: ReadModelSink) -> PartitionClaims:
    """The rebuild partition claims of a read-model database this package opened (PostgreSQL only)."""
    from eventmig.backends.sql.claims import SQLPartitionClaims
    from eventmig.backends.sql.readmodels import ReadModelDB

    if not isinstance(sink, ReadModelDB):
        raise ConfigError(f"rebuild --join shares runs through PostgreSQL read models, not {sink.url}")
    return SQLPartitionClaims(sink)


# jobs given a URL open read models through the port, which knows no backend
register_opener(open_read_models)
register_follower_opener(open_followers)
register_claims_opener(open_claims)
