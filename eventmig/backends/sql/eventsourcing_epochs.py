"""Epochs of a table eventmig adopted whose lineage lives beside the events: the ``eventsourcing`` layout.

An ``eventsourcing`` application turns every key of an event's state into an
attribute of the domain event, and its table has no metadata column: a
migrated event's lineage (its source event and upcaster chain) cannot travel
with it. It goes to ``eventmig_lineage`` instead, one row per target event,
keyed by the events table, the epoch and the event's position there, written
in bulk with the batch it describes (same transaction).

Positions are the application's notification ids (SQLite's rowid,
PostgreSQL's ``notification_id``), which its followers keep in their tracking
tables. So a migration writes each target event at an explicit position: the
position of its source event, or one past the last position written if that
is larger. A 1:1 migration therefore keeps every position, a drop leaves a
gap (which followers skip), and only a split would move the events after it:
that is refused with one line, while migrating or, for events caught up
inside the switch transaction, by refusing the switch, since the followers'
tracking rows would point at other events (eventmig does not translate
them). At the switch, with writers held off:

* PostgreSQL's sequence of the new table is set past its largest position, so
  the application's next save continues after the migrated events;
* the application's snapshots of the aggregates in the table made active are
  deleted: they were taken from events of the other epoch and would be stale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from eventmig.errors import ConfigError
from eventmig.model.events import LINEAGE_KEY
from eventmig.ports import Capabilities

from .layouts import Layout
from .table_sql import TableSQL, insert_rows

#: the side table of lineage, for layouts whose lineage lives in a table
LINEAGE_TABLE = "eventmig_lineage"
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Written(msgspec.Struct, frozen=True):
    """A target event as written: its position, and its lineage (None for an event with none)."""

    position: int
    source_position: int | None
    lineage: Any


def in_side_table(layout: Layout) -> bool:
    """Whether a table of ``layout`` keeps lineage in :data:`LINEAGE_TABLE`."""
    return layout.lineage == "table"


def capabilities(caps: Capabilities, layout: Layout, dialect: str) -> Capabilities:
    """``caps`` as a table of ``layout`` keeps them: lineage beside the events, metadata and event ids only
    where the table has a column for them, and on SQLite no switch that drops the last events
    (see :func:`before_swap`)."""
    if in_side_table(layout):
        caps = msgspec.structs.replace(caps, lineage=frozenset({"table"}),
                                       switch_after_tail_drop=dialect != "sqlite")
    if layout.metadata is None:
        caps = msgspec.structs.replace(caps, keeps_metadata=False, keeps_event_ids=layout.event_id is not None)
    return caps


def ensure_lineage_table(c: Connection, dialect: str) -> None:
    big = "BIGINT" if dialect == "postgresql" else "INTEGER"
    c.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {LINEAGE_TABLE} (events_table TEXT NOT NULL, epoch INTEGER NOT NULL, "
        f"position {big} NOT NULL, source_position {big}, lineage TEXT NOT NULL, "
        "PRIMARY KEY (events_table, epoch, position))"
    )


def write_events(
    c: Connection, q: Callable[[str], str], dialect: str, sql: TableSQL, layout: Layout, table: str, base: str,
    epoch: int, events: Sequence[Any],
) -> None:
    """Insert target events into ``table`` (SQL text) at explicit positions, and their lineage beside them.

    ``base``: the events table's configured name, ``epoch``: the epoch ``table`` holds.
    """
    ensure_lineage_table(c, dialect)
    last = c.exec_driver_sql(f"SELECT max({sql.position}) FROM {table}").scalar()
    written = placed(layout, events, last)
    rows = [(w.position, *row) for w, row in zip(written, insert_rows(layout, events))]
    cursor = c.connection.driver_connection.cursor()
    cursor.executemany(
        q(f"INSERT INTO {table} ({sql.position}, {sql.insert_columns}) VALUES (?, {sql.insert_values})"), rows)
    lineage = [(base, epoch, w.position, w.source_position, _encode(w.lineage).decode())
               for w in written if w.lineage is not None]
    if lineage:
        cursor.executemany(
            q(f"INSERT INTO {LINEAGE_TABLE} (events_table, epoch, position, source_position, lineage) "
              "VALUES (?, ?, ?, ?, ?)"), lineage)
    cursor.close()


def placed(layout: Layout, events: Sequence[Any], last: int | None) -> list[Written]:
    """Each event's position: its source's; refused (ConfigError) where that is not past the previous one's."""
    out = []
    previous = last if last is not None else 0
    for event in events:
        metadata = _decode(event[5]) if event[5] else {}
        lineage = metadata.get(LINEAGE_KEY) if type(metadata) is dict else None
        source = lineage.get("source") if type(lineage) is dict else None
        source_position = source.get("position") if type(source) is dict else None
        if type(source_position) is not int:
            source_position = None
        position = previous + 1 if source_position is None else max(source_position, previous + 1)
        if source_position is not None and position != source_position:
            raise ConfigError(
                f"the {layout.name} layout keeps positions, and this migration would write an event from position "
                f"{source_position} at {position} (a split): the application's followers track positions; "
                "migrate it with upcasters that map each event to at most one")
        out.append(Written(position, source_position, lineage))
        previous = position
    return out


def read_lineage(c: Connection, q: Callable[[str], str], base: str, epoch: int,
                 positions: Sequence[int]) -> dict[int, Any]:
    """The lineage kept for these positions of ``base``'s epoch ``epoch``, by position."""
    if not positions or not _has_table(c, LINEAGE_TABLE):
        return {}
    found: dict[int, Any] = {}
    wanted = sorted(set(positions))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        rows = c.exec_driver_sql(
            q(f"SELECT position, lineage FROM {LINEAGE_TABLE} WHERE events_table = ? AND epoch = ? "
              f"AND position IN ({', '.join('?' * len(chunk))})"), (base, epoch, *chunk)).fetchall()
        found.update({int(p): _decode(text) for p, text in rows})
    return found


def forget_epoch(c: Connection, q: Callable[[str], str], base: str, epoch: int) -> None:
    """Delete the lineage of a dropped epoch (its number is never used again, its rows would only linger)."""
    if _has_table(c, LINEAGE_TABLE):
        c.exec_driver_sql(q(f"DELETE FROM {LINEAGE_TABLE} WHERE events_table = ? AND epoch = ?"), (base, epoch))


# ------------------------------------------------------------------- switch
def before_swap(c: Connection, dialect: str, sql: TableSQL, kind: str, old_table: str, new_table: str,
                quote: Callable[[str], str]) -> None:
    """Inside the switch transaction, writers held off, before the renames: the application's next save must
    come after every position its followers may have seen, those of the table being replaced included.

    PostgreSQL: the sequence of ``new_table`` (bare name) is set past both
    tables' largest position. SQLite gives a rowid table's next row the
    largest rowid plus one, which nothing can raise: a switch to a table
    whose last events were dropped is refused (``old_table``: SQL text).
    """
    table = quote(new_table)
    new_head, old_head = c.exec_driver_sql(
        f"SELECT (SELECT max({sql.position}) FROM {table}), (SELECT max({sql.position}) FROM {old_table})").one()
    head = max(new_head or 0, old_head or 0)
    if dialect == "postgresql":
        column = sql.position.strip('"').replace('""', '"')
        sequence = c.exec_driver_sql("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).scalar()
        if sequence is not None and head:
            c.exec_driver_sql("SELECT setval(%s, %s, true)", (sequence, head))
    elif kind == "switch" and (new_head or 0) < (old_head or 0):
        raise ConfigError(
            f"switch refused: the migration dropped the last events (positions {(new_head or 0) + 1} to {old_head}), "
            "and SQLite would give those positions to the application's next events, which its followers would "
            "take for seen; keep the last event, or switch once the application has appended after it")


def after_swap(c: Connection, q: Callable[[str], str], layout: Layout, sql: TableSQL, base: str,
               quote: Callable[[str], str]) -> int:
    """After the renames: delete the application's snapshots of the aggregates the active table holds; how many."""
    snapshots = snapshot_table(layout, base)
    if snapshots is None or not _has_table(c, snapshots):
        return 0
    return c.exec_driver_sql(
        f"DELETE FROM {quote(snapshots)} WHERE {sql.stream} IN (SELECT {sql.stream} FROM {quote(base)})"
    ).rowcount


def snapshot_table(layout: Layout, base: str) -> str | None:
    """The application's snapshot table beside events table ``base`` (eventsourcing: ``stored_snapshots``
    beside ``stored_events``, ``<app>_snapshots`` beside ``<app>_events``); None for other layouts."""
    if layout.name != "eventsourcing":
        return None
    if base == "stored_events":
        return "stored_snapshots"
    return base[: -len("_events")] + "_snapshots" if base.endswith("_events") else None


def _has_table(c: Connection, name: str) -> bool:
    if c.dialect.name == "postgresql":
        return c.exec_driver_sql("SELECT to_regclass(%s) IS NOT NULL", (name,)).scalar()
    return c.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).scalar() is not None
