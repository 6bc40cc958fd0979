"""The read-model database: shadow tables, rebuild bookkeeping, row digests, swaps.

A rebuild never writes to the tables applications read. It writes *shadow*
tables (``<table>__<run id>``) next to them, then verifies them against the
live tables by row digests and swaps them in with one transaction of renames
(SQLite and PostgreSQL both have transactional DDL). The live tables it
replaces are kept as ``<table>__prev``, so a rollback is another swap.

Bookkeeping lives in the same database, so that a partition's checkpoint
commits in the same transaction as the states it covers:

* ``eventmig_rebuilds``: one run per projection rebuild (version, code
  fingerprint, partition count, epoch and position replayed up to, status);
* ``eventmig_rebuild_partitions``: each partition's checkpoint and counts;
* ``eventmig_read_models``: the version and run of each projection's live
  tables, and of the previous ones;
* ``eventmig_read_model_swaps``: the history of swaps and rollbacks.

Workers keep the states of the keys they fold in per-partition state tables
(``eventmig_rbs_<run>_<partition>``: key, msgspec-encoded state), dropped
once the rebuild is swapped in or abandoned.

SQLAlchemy provides engines, URLs and DDL from the projections' ``Table``
definitions; bulk paths use the driver: ``executemany`` on SQLite, ``COPY``
on PostgreSQL.

This module holds the database, its names, shadow tables and swaps; the
rebuild bookkeeping, state tables and digests are mixed in from
:mod:`~eventmig.backends.sql.readmodel_ledger`,
:mod:`~eventmig.backends.sql.readmodel_states` and
:mod:`~eventmig.backends.sql.readmodel_digests`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from eventmig.backends.sql.engine import SQLDatabase
from eventmig.errors import ConfigError
from eventmig.ports_readmodels import RUN_ID_LENGTH, LiveModel

_json = msgspec.json.Encoder()

PREVIOUS_SUFFIX = "__prev"
#: what a live table is renamed to for the moment a rollback exchanges it with its ``__prev``
ROLLBACK_SUFFIX = "__rollback"
from eventmig.backends.sql.readmodel_digests import ShadowDigests
from eventmig.backends.sql.readmodel_ledger import RebuildLedger
from eventmig.backends.sql.readmodel_states import StateTables


class ReadModelDB(ShadowDigests, StateTables, RebuildLedger, SQLDatabase):
    """A connection to the read-model database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True, read_only: bool = False) -> None:
        super().__init__(
            url,
            what="read-model database",
            create=create,
            busy_timeout_s=60,
            # rebuilds commit large batches and update state tables all over: checkpoint (and fsync)
            # the WAL less often than every 4 MB, and keep more pages cached
            sqlite_pragmas={"wal_autocheckpoint": 16384, "cache_size": -8192},
            read_only=read_only,
        )
        self._inserts: dict[tuple[str, tuple[str, ...]], str] = {}
        if not read_only:  # a reader (status) finds the bookkeeping, or none
            self._ensure_schema()

    def reopen(self) -> ReadModelDB:
        """A handle of its own, for a worker process (connections never cross a fork)."""
        handle = ReadModelDB(self.raw_url)
        handle.fences = list(self.fences)  # a worker's commits are fenced by the parent's lease
        return handle

    # --------------------------------------------------------------- names
    def shadow_name(self, name: str, run_id: str) -> str:
        """``<name>__<run id>``: a shadow table's name, or a shadow table's index's or constraint's."""
        return self.names.derive(name, f"__{run_id}", "read-model name", "its shadow copy's name",
                                 shown=f"__<{len(run_id)}-character run id>")

    def previous_name(self, table: str) -> str:
        """``<table>__prev``: where a swap keeps the tables it replaced."""
        return self.names.derive(table, PREVIOUS_SUFFIX, "read-model table name", "its previous tables' name")

    def rollback_name(self, table: str) -> str:
        return self.names.derive(table, ROLLBACK_SUFFIX, "read-model table name", "its name during a rollback")

    def check_names(self, projection_name: str, tables: Iterable[sa.Table]) -> None:
        """Refuse (ConfigError) a projection whose tables, columns, indexes or constraints have names too long
        here, as they are or once a rebuild derives its own from them; before anything is written."""
        run_id = "0" * RUN_ID_LENGTH
        try:
            for table in tables:
                self.shadow_name(self.names.check(table.name, "read-model table name"), run_id)
                self.previous_name(table.name)
                self.rollback_name(table.name)
                for column in table.columns:
                    self.names.check(column.name, f"column name of {table.name}")
                for item in (*table.indexes, *table.constraints):
                    if isinstance(item.name, str) and item.name:
                        self.shadow_name(item.name, run_id)
        except ConfigError as exc:
            raise ConfigError(f"projection {projection_name}: {exc}") from None

    # -------------------------------------------------------------- set-up
    def _ensure_schema(self) -> None:
        big = "BIGINT" if self.dialect == "postgresql" else "INTEGER"
        serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if self.dialect == "postgresql" else "INTEGER PRIMARY KEY"
        with self.write() as c:
            if self.dialect == "postgresql":
                c.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('eventmig:read-model-schema:' || current_schema()))")
            c.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS eventmig_rebuilds (id TEXT PRIMARY KEY, projection TEXT NOT NULL, "
                "version INTEGER NOT NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL, partitions INTEGER NOT NULL, "
                f"epoch INTEGER NOT NULL, until_position {big}, started_at DOUBLE PRECISION NOT NULL, "
                "updated_at DOUBLE PRECISION NOT NULL, tables TEXT NOT NULL, stats TEXT NOT NULL)"
            )
            c.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS eventmig_rebuild_partitions (run_id TEXT NOT NULL, partition INTEGER NOT NULL, "
                f"checkpoint {big}, events {big} NOT NULL, keys {big} NOT NULL, status TEXT NOT NULL, "
                "PRIMARY KEY (run_id, partition))"
            )
            c.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS eventmig_read_models (projection TEXT PRIMARY KEY, version INTEGER NOT NULL, "
                "run_id TEXT NOT NULL, tables TEXT NOT NULL, previous_version INTEGER, previous_run_id TEXT, "
                "updated_at DOUBLE PRECISION NOT NULL)"
            )
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS eventmig_read_model_swaps (id {serial}, kind TEXT NOT NULL, "
                "projection TEXT NOT NULL, from_version INTEGER, to_version INTEGER NOT NULL, run_id TEXT NOT NULL, "
                "at DOUBLE PRECISION NOT NULL)"
            )

    # ------------------------------------------------------------- helpers
    def table_exists(self, name: str, conn: Connection | None = None) -> bool:
        if conn is None:
            with self.read() as c:
                return self.table_exists(name, c)
        if self.dialect == "sqlite":  # SQLite's names are case-insensitive: "Order" is the table "order"
            sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE"
        else:
            sql = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = %s"
        return bool(conn.exec_driver_sql(sql, (name,)).scalar())

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock across processes that dies with its holder.

        PostgreSQL: a lease (:mod:`eventmig.backends.sql.lease`) that fences
        every write of this handle and of its reopened copies; SQLite: an
        flock beside the file, which a live process cannot lose.
        """
        if self.dialect == "postgresql":
            from eventmig.backends.sql.lease import SQLLease

            with SQLLease(self, name).held():
                yield
        else:
            from eventmig.backends.sql.file_locks import file_lock

            with file_lock(self.sqlite_path, name, self.url):
                yield

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ReadModelDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- raw writes
    def raw(self, conn: Connection) -> Any:
        return conn.connection.driver_connection

    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        raw = self.raw(conn)
        sql = self._insert_sql(table, tuple(columns))
        if self.dialect == "postgresql":
            with raw.cursor() as cursor, cursor.copy(sql) as copy:
                write_row = copy.write_row
                for row in rows:
                    write_row(row)
        else:
            cursor = raw.cursor()
            cursor.executemany(sql, rows)
            cursor.close()

    def _insert_sql(self, table: str, columns: tuple[str, ...]) -> str:
        """The bulk insert into ``table`` (COPY on PostgreSQL), names quoted: made once per table and handle."""
        sql = self._inserts.get((table, columns))
        if sql is None:
            quote = self.names.quote
            cols = ", ".join(map(quote, columns))
            sql = (
                f"COPY {quote(table)} ({cols}) FROM STDIN" if self.dialect == "postgresql"
                else f"INSERT INTO {quote(table)} ({cols}) VALUES ({', '.join('?' * len(columns))})"
            )
            self._inserts[(table, columns)] = sql
        return sql

    # ------------------------------------------------------- shadow tables
    def shadow_table(self, table: sa.Table, name: str, run_id: str) -> sa.Table:
        """A copy of ``table`` named ``name``, its named indexes and constraints named ``<name>__<run id>`` (names
        are per schema: the live table's own keep theirs). Constraints without a name get one from the database."""
        copy = table.to_metadata(sa.MetaData(), name=name)
        for item in (*copy.indexes, *copy.constraints):
            if isinstance(item.name, str) and item.name:
                item.name = self.shadow_name(str(item.name), run_id)
        return copy

    def create_shadow(self, tx: Connection, table: sa.Table, name: str, run_id: str) -> None:
        """Create the shadow copy of ``table``, without its secondary indexes: they come after the bulk load."""
        tx.execute(CreateTable(self.shadow_table(table, name, run_id)))

    def index_shadow(self, tx: Connection, table: sa.Table, name: str, run_id: str) -> None:
        """Build a loaded shadow table's secondary indexes."""
        for index in self.shadow_table(table, name, run_id).indexes:
            tx.execute(CreateIndex(index, if_not_exists=True))

    def swap_in(self, tx: Connection, table: str, shadow: str) -> None:
        """Make ``shadow`` the live ``table``; the live one (if any) becomes ``<table>__prev``, replacing it."""
        quote = self.names.quote
        previous = quote(self.previous_name(table))
        tx.exec_driver_sql(f"DROP TABLE IF EXISTS {previous}")
        if self.table_exists(table, tx):
            tx.exec_driver_sql(f"ALTER TABLE {quote(table)} RENAME TO {previous}")
        tx.exec_driver_sql(f"ALTER TABLE {quote(shadow)} RENAME TO {quote(table)}")

    def exchange_previous(self, tx: Connection, table: str, *, has_previous: bool) -> None:
        """Exchange a live table with its ``__prev`` one (either may be absent)."""
        quote = self.names.quote
        live_name, previous, aside = quote(table), quote(self.previous_name(table)), quote(self.rollback_name(table))
        is_live = self.table_exists(table, tx)
        if is_live:
            tx.exec_driver_sql(f"ALTER TABLE {live_name} RENAME TO {aside}")
        if has_previous:
            tx.exec_driver_sql(f"ALTER TABLE {previous} RENAME TO {live_name}")
        if is_live:
            tx.exec_driver_sql(f"ALTER TABLE {aside} RENAME TO {previous}")

    def record_live(
        self, tx: Connection, projection: str, *, version: int | None, run_id: str, tables: list[str],
        previous: LiveModel | None, at: float, kind: str,
    ) -> None:
        """Record which tables are live now, and the swap (or rollback) in the history (version None, tables
        eventmig did not build, is stored as 0)."""
        version = version or 0
        from_version = (previous.version or 0) if previous else None
        tx.exec_driver_sql(
            self.q(
                "INSERT INTO eventmig_read_models (projection, version, run_id, tables, previous_version, "
                "previous_run_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (projection) DO UPDATE SET "
                "version = excluded.version, run_id = excluded.run_id, tables = excluded.tables, "
                "previous_version = excluded.previous_version, previous_run_id = excluded.previous_run_id, "
                "updated_at = excluded.updated_at"
            ),
            (
                projection, version, run_id, _json.encode(tables).decode(),
                from_version, previous.run_id if previous else None, at,
            ),
        )
        tx.exec_driver_sql(
            self.q(
                "INSERT INTO eventmig_read_model_swaps (kind, projection, from_version, to_version, run_id, at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (kind, projection, from_version, version, run_id, at),
        )

    def drop_tables(self, conn: Connection, names: Iterable[str]) -> None:
        for name in names:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.names.quote(name)}")
