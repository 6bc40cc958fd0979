"""A new epoch's table for a layout that is not eventmig's: a copy of the application's own table.

eventmig creates its own tables from its own DDL. A table it adopted (a
``columns`` layout, a layout of the service's) is the application's: the
new epoch gets the same columns, types, defaults and constraints, so that
after a switch the application writes into a table just like the one it
created. PostgreSQL copies it with ``LIKE ... INCLUDING ALL``; a ``serial``
column's default would still draw from the source table's sequence, so the
copy gets a sequence of its own. SQLite replays the ``CREATE TABLE``
statement it kept, under the new name, and the table's indexes after the
bulk load, under names derived from the new table's.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy.engine import Connection

from eventmig.errors import StoreError

_CREATE_TABLE = re.compile(
    r'^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[^\s(]+)\s*\(',
    re.IGNORECASE,
)
_CREATE_INDEX = re.compile(
    r'^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|\S+)\s+ON\s+'
    r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[^\s(]+)\s*\(',
    re.IGNORECASE,
)


def copy_table(c: Connection, dialect: str, quote: Callable[[str], str], source: str, target: str) -> None:
    """Create ``target`` (a bare name) as a copy of ``source``'s definition, empty."""
    if dialect == "postgresql":
        c.exec_driver_sql(f"CREATE TABLE {quote(target)} (LIKE {quote(source)} INCLUDING ALL)")
        _own_sequences(c, quote, target)
        return
    sql = c.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (source,)).scalar()
    if sql is None or not _CREATE_TABLE.match(sql):
        raise StoreError(f"cannot copy the definition of table {source!r}: SQLite holds no CREATE TABLE for it")
    c.exec_driver_sql(_CREATE_TABLE.sub(f"CREATE TABLE {quote(target)} (", sql, count=1))


def copy_indexes(c: Connection, dialect: str, quote: Callable[[str], str], source: str, target: str) -> None:
    """SQLite: create ``source``'s explicit indexes on ``target``, named ``<target>_ix<N>`` (PostgreSQL's
    ``LIKE ... INCLUDING ALL`` copied them with the table)."""
    if dialect == "postgresql":
        return
    rows = c.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
        (source,),
    ).scalars().all()
    for n, sql in enumerate(rows, 1):
        match = _CREATE_INDEX.match(sql)
        if match is None:
            raise StoreError(f"cannot copy an index of table {source!r}: {sql!r}")
        unique = "UNIQUE " if match.group(1) else ""
        name = quote(f"{target}_ix{n}")
        c.exec_driver_sql(_CREATE_INDEX.sub(f"CREATE {unique}INDEX IF NOT EXISTS {name} ON {quote(target)} (", sql, count=1))


def _own_sequences(c: Connection, quote: Callable[[str], str], table: str) -> None:
    """PostgreSQL: give each ``nextval`` default of ``table`` (a copy) a sequence of its own, owned by the column."""
    rows = c.exec_driver_sql(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_default LIKE 'nextval(%%'",
        (table,),
    ).fetchall()
    for column, data_type in rows:
        sequence = quote(f"{table}_{column}_seq")
        kind = "bigint" if data_type == "bigint" else "integer" if data_type == "integer" else "smallint"
        c.exec_driver_sql(f"CREATE SEQUENCE {sequence} AS {kind}")
        literal = sequence.replace("'", "''")  # DDL takes no parameters: the name as a string literal
        c.exec_driver_sql(
            f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} SET DEFAULT nextval('{literal}'::regclass)")
        c.exec_driver_sql(f"ALTER SEQUENCE {sequence} OWNED BY {quote(table)}.{quote(column)}")
