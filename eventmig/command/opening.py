"""Opening the store a command names, and the small shared pieces every command uses.

Every command opens the store from its settings the same way (URL, table layout,
retry policy); that path lives here once, with the few helpers for SQLite files
and JSON output that several command families share.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from eventmig.config import Settings, import_object
from eventmig.errors import ConfigError
from eventmig.ports import EventStore
from eventmig.backends import open_store


decode_json = msgspec.json.Decoder().decode


def open_configured_store(
    settings: Settings, *, create: bool = False, read_only: bool = False, init: bool = False
) -> EventStore:
    """The configured event store; a SQLite file must already exist unless ``create``.

    A mistyped path should be an error, not a new empty store that every
    command then reports on. The commands that only look open it
    ``read_only``: they work with a connection that cannot write, and write
    nothing themselves. ``init``: set eventmig up even in a database that
    holds other tables and no eventmig state (otherwise refused).
    """
    if settings.target:
        from eventmig.backends.pair import open_pair

        return open_pair(settings.store, settings.target, table=settings.events_table, read_only=read_only)
    return open_store(settings.store, table=settings.events_table, create=create, read_only=read_only, init=init,
                      layout=store_layout(settings))


def store_layout(settings: Settings) -> Any:
    """The events table's :class:`~eventmig.backends.sql.layouts.Layout` (ConfigError if the settings name none)."""
    from eventmig.backends.sql.layouts import resolve

    layout = resolve(settings.layout, settings.columns,
                     load=lambda spec: import_object(spec, settings.root, "layout"))
    where = settings.where_versions_live
    if where and where.startswith("data:"):  # in the payload: the store lifts it out for the registry
        layout = msgspec.structs.replace(layout, version_location=where)
    return layout


def nothing_read(settings: Settings, url: str) -> str:
    """The warning of a command that found no event at all: never to be taken for a clean run."""
    return (f"read 0 events from table {settings.events_table!r} of {url}: if the store should hold events, check "
            "store and events_table (`eventmig inspect URL` lists what the database holds)")


def missing_sqlite(url: str) -> str | None:
    """Why a SQLite URL names no store to check, or None for any other store."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):].split("?", 1)[0]
    if not path or path == ":memory:":
        return f"{url} is an in-memory database: nothing is stored there"
    if not os.path.exists(path):
        return f"{url} does not exist (yet): no events are stored there"
    return None


def load_stream_map(path: str | Path) -> dict[str, str]:
    """Read a JSON object ``{"old stream": "new stream", ...}``."""
    try:
        mapping = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"stream map {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stream map {path} is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"stream map {path} must be a JSON object of old name -> new name")
    return mapping


def remove_sqlite_files(url: str) -> None:
    path = url[len("sqlite:///"):]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def to_builtins(report: Any) -> Any:
    """A report as JSON-ready builtins (what ``--json`` prints)."""
    return msgspec.to_builtins(report)
