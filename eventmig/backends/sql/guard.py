"""The guard against false-clean runs: look at a database before eventmig creates anything in it.

Pointed at an application's database with the default settings, eventmig
used to create ``events`` and its bookkeeping beside the application's own
tables, read 0 events from its new empty table and report success. These
checks run first, read-only, and refuse with one line that names what is
there instead:

* a database with tables of its own and no eventmig state (``eventmig_epochs``)
  gets nothing created unless the caller says so (``init=True``: ``eventmig
  init --store``, or ``migrate --init``);
* an events table that is there but lacks the layout's columns is named,
  with the columns it lacks and the layout it most likely has.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from eventmig.errors import ConfigError
from . import catalog
from .layouts import EVENTMIG, Layout, likely, recognise

#: how many of an application's tables an error lists by name
_SHOWN = 5


def check_before_create(c: Connection, dialect: str, url: str, table: str, layout: Layout, *, init: bool) -> bool:
    """Refuse (ConfigError) to set up eventmig in this database; True if eventmig's state is already there."""
    names = catalog.tables(c, dialect)
    if catalog.STATE_TABLE in names:
        return True
    if table in names:
        check_columns(c, dialect, url, table, layout)
        return False
    if layout.columns() != EVENTMIG.columns():
        raise ConfigError(f"{url} has no table {table!r}: the {layout.name} layout adopts an existing events table, "
                          f"it creates none{_hints(c, dialect, catalog.application_tables(names, table))}")
    others = catalog.application_tables(names, table)
    if others and not init:
        raise ConfigError(
            f"{url} has tables ({_listed(others)}) but no events table {table!r} and no eventmig state: "
            f"refusing to create eventmig's tables beside them{_hints(c, dialect, others)}; to start an empty "
            "eventmig store in this database anyway, run `eventmig init --store URL` (or migrate --init)"
        )
    return False


def check_readable(c: Connection, dialect: str, url: str, table: str, layout: Layout) -> bool:
    """Read-only: True if eventmig's state is there; otherwise the events table must be, with its columns."""
    names = catalog.tables(c, dialect)
    if catalog.STATE_TABLE in names:
        return True
    if table not in names:
        others = catalog.application_tables(names, table)
        there = f" (it has {_listed(others)}{_hints(c, dialect, others)})" if others else ""
        raise ConfigError(f"{url} has no events table {table!r} (and no eventmig tables): nothing to read{there}")
    check_columns(c, dialect, url, table, layout)
    return False


def check_columns(c: Connection, dialect: str, url: str, table: str, layout: Layout) -> None:
    """Refuse an events table that lacks a column ``layout`` reads, naming them and the likely layout."""
    present = catalog.columns(c, dialect, table)
    missing = layout.for_dialect(dialect).missing(present)
    if missing:
        raise ConfigError(
            f"{url}: table {table!r} lacks the column(s) {', '.join(missing)} of the {layout.name} layout; "
            f"{likely(table, present, dialect)}"
        )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _hints(c: Connection, dialect: str, names: list[str]) -> str:
    """``; 'stored_events' looks like ...`` for the tables that look like events tables, or nothing."""
    found = [likely(n, catalog.columns(c, dialect, n), dialect) for n in names
             if recognise(n, catalog.columns(c, dialect, n), dialect) is not None]
    return "".join(f"; {f}" for f in found[:_SHOWN])
