"""What an existing database holds, for ``eventmig inspect``: its tables, the layouts they look like, their events.

Everything here reads: the database is opened read-only, and a table that
looks like an events table is read through a read-only store of its layout,
so its events are counted by (type, schema version) exactly as eventmig
would see them (eventsourcing's ``class_version`` lifted from the state,
eventmig's ``schema_version`` from the metadata, absent meaning 1).
"""

from __future__ import annotations

from collections import Counter

import msgspec

from eventmig.errors import EventmigError
from eventmig.backends.sql.engine import SQLDatabase
from . import catalog
from .layouts import COLUMNS, PRESETS, Layout, Recognised, from_columns, recognise

#: events read per batch while counting
_BATCH = 10_000
#: the metadata key each layout's schema version is read from (as the store presents it)
_VERSION_KEYS = {"eventmig": "schema_version", "eventsourcing": "class_version", COLUMNS: "schema_version"}
_decode = msgspec.json.Decoder().decode


class TypeCount(msgspec.Struct, frozen=True):
    type: str
    version: int | None  # None: the version could not be read
    events: int


class TableSurvey(msgspec.Struct):
    """One table of the database: its layout if it looks like an events table, and what it holds."""

    table: str
    columns: list[str]
    #: "eventmig", "eventsourcing", "columns", "marten" or None (not an events table)
    layout: str | None = None
    #: for layout "columns": field -> column, as guessed from the names
    mapping: dict[str, str] = {}
    events: int | None = None
    counts: list[TypeCount] = []
    #: why the events could not be counted, if they could not
    problem: str | None = None


def survey(url: str) -> tuple[str, str, list[TableSurvey]]:
    """(the URL masked, its dialect, one TableSurvey per table), read-only."""
    db = SQLDatabase(url, what="database", create=False, read_only=True)
    try:
        with db.read() as c:
            found = []
            for name in catalog.tables(c, db.dialect):
                columns = catalog.columns(c, db.dialect, name)
                own = name.startswith(catalog.OWN_PREFIX)  # eventmig's bookkeeping, never events
                found.append((name, columns, None if own else recognise(name, columns, db.dialect)))
        tables = [_surveyed(url, name, columns, seen) for name, columns, seen in found]
        return db.url, db.dialect, tables
    finally:
        db.engine.dispose()


def _surveyed(url: str, name: str, columns: list[str], seen: Recognised | None) -> TableSurvey:
    entry = TableSurvey(name, columns)
    if seen is None:
        return entry
    entry.layout, entry.mapping = seen.layout, dict(seen.columns)
    layout: Layout | None = PRESETS.get(seen.layout) or (from_columns(seen.columns) if seen.layout == COLUMNS else None)
    if layout is None:
        entry.problem = f"eventmig does not read the {seen.layout} layout"
        return entry
    try:
        entry.counts = _count(url, name, layout)
    except EventmigError as exc:
        entry.problem = str(exc)
        return entry
    entry.events = sum(c.events for c in entry.counts)
    return entry


def _count(url: str, table: str, layout: Layout) -> list[TypeCount]:
    from eventmig.backends import open_store

    key = _VERSION_KEYS.get(layout.name, "schema_version")
    counts: Counter[tuple[str, int | None]] = Counter()
    with open_store(url, table=table, layout=layout, read_only=True) as store:
        for batch in store.read_all_rows(batch_size=_BATCH, lean=True):
            for row in batch:
                counts[(row[4], _version(row[6], key))] += 1
    return [TypeCount(t, v, n) for (t, v), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))]


def _parked_epoch(name: str, names: set[str]) -> bool:
    """Whether ``name`` is ``<table>_e<N>``, an epoch eventmig keeps beside the active ``<table>``."""
    head, sep, number = name.rpartition("_e")
    return bool(sep) and number.isdigit() and head in names


def _version(metadata: bytes, key: str) -> int | None:
    try:
        found = _decode(metadata) if metadata else {}
    except msgspec.DecodeError:
        return None
    version = found.get(key, 1) if type(found) is dict else None
    return version if type(version) is int and version >= 1 else None


def snippet(url: str, entry: TableSurvey) -> str:
    """The ``[tool.eventmig]`` lines that point eventmig at ``entry`` (``url`` masked: a password stays out)."""
    lines = ["[tool.eventmig]", f'store = "{url}"', 'upcasters = "upcasters:registry"',
             'projections = "projections:projections"', f'events_table = "{entry.table}"']
    if entry.layout and entry.layout != "eventmig":
        lines.append(f'layout = "{entry.layout}"')
    if entry.layout == COLUMNS:
        lines += ["", "[tool.eventmig.columns]", *(f'{k} = "{v}"' for k, v in entry.mapping.items())]
    return "\n".join(lines) + "\n"


def best(tables: list[TableSurvey]) -> TableSurvey | None:
    """The table eventmig should most likely be pointed at: a readable events table, the fullest one first."""
    order = {"eventmig": 0, "eventsourcing": 1, COLUMNS: 2}
    names = {t.table for t in tables}
    readable = [t for t in tables if t.layout in order and t.problem is None
                and not _parked_epoch(t.table, names)]
    return min(readable, key=lambda t: (-(t.events or 0), order[t.layout or ""], t.table), default=None)
