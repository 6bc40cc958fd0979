"""Event store backends behind one interface; :func:`open_store` picks one from a URL."""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError
from .base import (
    Capabilities,
    EpochInfo,
    EventStore,
    ExpectedVersion,
    QuarantinedEvent,
    Run,
    StreamPartitions,
    StreamState,
    Switch,
    TargetEvent,
)

__all__ = [
    "Capabilities",
    "EpochInfo",
    "EventStore",
    "ExpectedVersion",
    "QuarantinedEvent",
    "Run",
    "StreamPartitions",
    "StreamState",
    "Switch",
    "TargetEvent",
    "mask_url",
    "open_store",
    "url_shown_unparsed",
]

_SQL_SCHEMES = ("sqlite", "postgresql", "postgres")
# up to the URL's last "@": a password may hold an unescaped "@" (over-masking is harmless)
_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)\S*@", re.IGNORECASE)
# libpq (and so psycopg) also takes the password as a query parameter: ...?password=...
# (up to the next parameter, a space or quote, or the ": " of a message quoting the URL)
_PASSWORD_PARAM = re.compile(r"(?P<head>[?&]password=)[^&\s'\"]*?(?=$|[&\s'\"]|:(?:\s|$))", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: the only form of a URL eventmig prints.

    Applied to whole messages too, so it finds URLs inside text.
    """
    url = _PASSWORD.sub(lambda m: f"{m.group('head')}***@", url)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('head')}***", url)


def url_shown_unparsed(url: str) -> str:
    """A URL that could not be parsed, as an error may show it: nothing before its last ``@``.

    Where a URL did not parse, nobody knows where its password ends; what
    follows the last ``@`` (host, port, database) is what its author needs
    to see to recognise it, and holds no part of a password.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return mask_url(head + sep + rest)


def open_store(
    url: str, *, table: str = "events", create: bool = True, read_only: bool = False, init: bool = False,
    layout: Any = None,
) -> EventStore:
    """Open the event store at ``url``, creating eventmig's schema on first use.

    ``sqlite:///path.db`` and ``postgresql+psycopg://user@host/db`` are SQL
    stores; anything else is refused with a message naming what is supported.
    With ``create=False`` a SQLite file that does not exist is an error
    rather than a new, empty store. ``read_only`` opens it for reading only
    (a SQLite file read-only, PostgreSQL sessions read-only) and creates
    nothing: a store eventmig never wrote to reads as its first epoch.

    eventmig creates nothing in a database that holds other tables and no
    eventmig state (an application's database, reached with the wrong URL or
    table name): that is refused with a ConfigError naming what is there,
    unless ``init`` says to set eventmig up beside those tables. ``layout``
    (:class:`~eventmig.backends.sql.layouts.Layout`) says which column of the
    events table holds what; eventmig's own table by default.
    """
    scheme = url.partition(":")[0].split("+")[0].lower()
    if scheme in _SQL_SCHEMES:
        from .sql import SQLEventStore

        from ..backends.sql.layouts import EVENTMIG

        return SQLEventStore(url, table=table, create=create, read_only=read_only, init=init, layout=layout or EVENTMIG)
    raise ConfigError(
        f"unknown store URL {url_shown_unparsed(url)!r}: expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
    )
