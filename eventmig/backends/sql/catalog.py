"""What a SQL database holds: its tables and their columns, read from the catalog.

The guard against false-clean runs and ``eventmig inspect`` both look at a
database before eventmig writes anything to it. PostgreSQL is read in the
connection's current schema (the schema eventmig's own tables would go to);
SQLite lists ``sqlite_master``, leaving out SQLite's own tables, and counts
the implicit ``rowid`` of a rowid table as a column, because eventsourcing's
``stored_events`` uses it as its notification id.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from .layouts import ROWID

#: the table that says eventmig keeps epochs in a database: its state
STATE_TABLE = "eventmig_epochs"
#: eventmig's own tables start with this; they are not "the application's tables"
OWN_PREFIX = "eventmig_"


def tables(c: Connection, dialect: str) -> list[str]:
    """The names of the tables (not views) of the database, sorted."""
    if dialect == "postgresql":
        rows = c.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).scalars()
    else:
        rows = c.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name"
        ).scalars()
    return list(rows)


def columns(c: Connection, dialect: str, table: str) -> list[str]:
    """The columns of ``table`` (a bare name, bound as a value), in order; [] if there is no such table."""
    if dialect == "postgresql":
        return list(c.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).scalars())
    found = [row[1] for row in c.exec_driver_sql("SELECT * FROM pragma_table_info(?)", (table,))]
    if found and _has_rowid(c, table) and ROWID not in {f.lower() for f in found}:
        found.append(ROWID)
    return found


def column_types(c: Connection, dialect: str, table: str) -> dict[str, str]:
    """Column name (lower case) -> its declared type (lower case) of ``table``; {} if there is no such table."""
    if dialect == "postgresql":
        rows = c.exec_driver_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (table,))
    else:
        rows = c.exec_driver_sql("SELECT name, type FROM pragma_table_info(?)", (table,))
    return {str(n).lower(): str(t or "").lower() for n, t in rows}


def _has_rowid(c: Connection, table: str) -> bool:
    sql = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    return sql is not None and "WITHOUT ROWID" not in " ".join(sql.upper().split())


def application_tables(names: list[str], events_table: str) -> list[str]:
    """The tables of ``names`` that are neither eventmig's own nor one of its events tables."""
    return [
        n for n in names
        if not n.startswith(OWN_PREFIX) and n != events_table and not _is_epoch_of(n, events_table)
    ]


def _is_epoch_of(name: str, events_table: str) -> bool:
    head, sep, number = name.rpartition("_e")
    return bool(sep) and head == events_table and number.isdigit()
