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
from eventmig.backends.sql.rowdigests import (
    WrittenDigest,
    _needs_plain,
    digest_rows,
    merge_compare,
    replace_in_digest,
)
from eventmig.errors import ConfigError
from eventmig.ports_readmodels import (
    RUN_ID_LENGTH,
    LiveModel,
    Partition,
    RebuildRun,
    SwapRecord,
    TableDiff,
)

_json = msgspec.json.Encoder()

PREVIOUS_SUFFIX = "__prev"
#: what a live table is renamed to for the moment a rollback exchanges it with its ``__prev``
ROLLBACK_SUFFIX = "__rollback"
class ReadModelDB(SQLDatabase):
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

    # ----------------------------------------------------------- bookkeeping
    def save_run(self, run: RebuildRun, conn: Connection | None = None) -> None:
        if conn is None:
            with self.write() as c:
                return self.save_run(run, c)
        conn.exec_driver_sql(
            self.q(
                "INSERT INTO eventmig_rebuilds (id, projection, version, fingerprint, status, partitions, epoch, "
                "until_position, started_at, updated_at, tables, stats) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, "
                "stats = excluded.stats"
            ),
            (
                run.id, run.projection, run.version, run.fingerprint, run.status, run.partitions, run.epoch, run.until,
                run.started_at, run.updated_at, _json.encode(run.tables).decode(), _json.encode(run.stats).decode(),
            ),
        )

    def runs(self, projection: str | None = None, conn: Connection | None = None) -> list[RebuildRun]:
        if conn is None:
            with self.read() as c:
                return self.runs(projection, c)
        sql = (
            "SELECT id, projection, version, fingerprint, status, partitions, epoch, until_position, started_at, "
            "updated_at, tables, stats FROM eventmig_rebuilds"
        )
        params: tuple[Any, ...] = ()
        if projection is not None:
            sql += " WHERE projection = ?"
            params = (projection,)
        rows = conn.exec_driver_sql(self.q(sql + " ORDER BY started_at, id"), params).fetchall()
        return [
            RebuildRun(*row[:10], tables=msgspec.json.decode(row[10]), stats=msgspec.json.decode(row[11])) for row in rows
        ]

    def save_partition(
        self, tx: Connection, run_id: str, partition: int, *, status: str | None = None,
        progress: tuple[int | None, int, int] | None = None,
    ) -> None:
        """Set a partition's status and/or its progress (checkpoint, events, keys), in the caller's transaction:
        a checkpoint commits with the states (or rows) it covers."""
        sets: list[str] = []
        params: list[Any] = []
        if status is not None:
            sets.append("status = ?")
            params.append(status)
        if progress is not None:
            sets.append("checkpoint = ?, events = ?, keys = ?")
            params.extend(progress)
        sql = f"UPDATE eventmig_rebuild_partitions SET {', '.join(sets)} WHERE run_id = ? AND partition = ?"
        tx.exec_driver_sql(self.q(sql), (*params, run_id, partition))

    def partition_status(self, tx: Connection, run_id: str, partition: int) -> str:
        return tx.exec_driver_sql(
            self.q("SELECT status FROM eventmig_rebuild_partitions WHERE run_id = ? AND partition = ?"),
            (run_id, partition),
        ).scalar()

    def create_partitions(self, run_id: str, partitions: int, conn: Connection) -> None:
        conn.exec_driver_sql(
            self.q("INSERT INTO eventmig_rebuild_partitions VALUES (?, ?, NULL, 0, 0, 'folding')"),
            [(run_id, p) for p in range(partitions)],
        )

    def partitions(self, run_id: str, conn: Connection | None = None) -> list[Partition]:
        if conn is None:
            with self.read() as c:
                return self.partitions(run_id, c)
        rows = conn.exec_driver_sql(
            self.q(
                "SELECT run_id, partition, checkpoint, events, keys, status FROM eventmig_rebuild_partitions "
                "WHERE run_id = ? ORDER BY partition"
            ),
            (run_id,),
        ).fetchall()
        return [Partition(*row) for row in rows]

    def live_models(self, conn: Connection | None = None) -> dict[str, LiveModel]:
        if conn is None:
            with self.read() as c:
                return self.live_models(c)
        rows = conn.exec_driver_sql(
            "SELECT projection, version, run_id, tables, previous_version, previous_run_id, updated_at "
            "FROM eventmig_read_models"
        ).fetchall()
        return {
            r[0]: LiveModel(r[0], r[1] or None, r[2], msgspec.json.decode(r[3]), r[4] or None, r[5], r[6]) for r in rows
        }

    def swaps(self) -> list[SwapRecord]:
        with self.read() as c:
            rows = c.exec_driver_sql(
                "SELECT id, kind, projection, from_version, to_version, run_id, at FROM eventmig_read_model_swaps ORDER BY id"
            ).fetchall()
        return [SwapRecord(r[0], r[1], r[2], r[3] or None, r[4] or None, r[5], r[6]) for r in rows]

    def last_swapped(self, conn: Connection) -> list[str]:
        """The projections of the last swap (or rollback): one transaction records them all at one time."""
        return list(conn.exec_driver_sql(
            "SELECT projection FROM eventmig_read_model_swaps WHERE at = "
            "(SELECT at FROM eventmig_read_model_swaps ORDER BY id DESC LIMIT 1) ORDER BY id"
        ).scalars())

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

    # ------------------------------------------------------- state tables
    def state_reader(self) -> StateReader:
        """Point reads of state tables on a connection of their own (see :class:`StateReader`)."""
        return StateReader(self)

    @staticmethod
    def state_table(run_id: str, partition: int) -> str:
        return f"eventmig_rbs_{run_id}_{partition}"

    def create_state_table(self, conn: Connection, name: str) -> None:
        table = self.names.quote(name)
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, state BYTEA NOT NULL)")
        else:
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID")

    def put_states(
        self, conn: Connection, name: str, items: Sequence[tuple[str, bytes]], deleted: Sequence[str] = (), *,
        empty: bool = False,
    ) -> None:
        """Insert or replace states (and delete some keys) in one partition's state table.

        ``empty``: the table holds no state yet (the keys are distinct), so
        they are simply inserted (PostgreSQL: copied straight in).
        """
        name = self.names.quote(name)
        raw = self.raw(conn)
        if self.dialect == "postgresql":
            with raw.cursor() as cursor:
                if deleted:
                    cursor.execute(f"DELETE FROM {name} WHERE key = ANY(%s)", (list(deleted),))
                if items and empty:
                    with cursor.copy(f"COPY {name} (key, state) FROM STDIN") as copy:
                        write_row = copy.write_row
                        for item in items:
                            write_row(item)
                elif items:
                    cursor.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS eventmig_rbs_stage (key TEXT, state BYTEA) ON COMMIT DELETE ROWS"
                    )
                    with cursor.copy("COPY eventmig_rbs_stage (key, state) FROM STDIN") as copy:
                        write_row = copy.write_row
                        for item in items:
                            write_row(item)
                    cursor.execute(
                        f"INSERT INTO {name} (key, state) SELECT key, state FROM eventmig_rbs_stage "
                        "ON CONFLICT (key) DO UPDATE SET state = excluded.state"
                    )
                    cursor.execute("TRUNCATE eventmig_rbs_stage")
        else:
            cursor = raw.cursor()
            if deleted:
                cursor.executemany(f"DELETE FROM {name} WHERE key = ?", [(k,) for k in deleted])
            if items:
                cursor.executemany(f"INSERT OR REPLACE INTO {name} (key, state) VALUES (?, ?)", items)
            cursor.close()

    def get_states(self, conn: Connection, name: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored states of those keys that have one."""
        name = self.names.quote(name)
        raw = self.raw(conn)
        found: dict[str, bytes] = {}
        if self.dialect == "postgresql":
            with raw.cursor() as cursor:
                for chunk in _chunks(keys, 5000):
                    cursor.execute(f"SELECT key, state FROM {name} WHERE key = ANY(%s)", (list(chunk),))
                    found.update((k, bytes(s)) for k, s in cursor.fetchall())
        else:
            cursor = raw.cursor()
            for chunk in _chunks(keys, 500):
                cursor.execute(f"SELECT key, state FROM {name} WHERE key IN ({', '.join('?' * len(chunk))})", chunk)
                found.update(cursor.fetchall())
            cursor.close()
        return found

    def scan_states(
        self, conn: Connection, name: str, batch: int = 5000, *, keys_only: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Every state of a partition, in batches, streamed (a server-side cursor on PostgreSQL)."""
        raw = self.raw(conn)
        columns = "key" if keys_only else "key, state"
        if self.dialect == "postgresql":
            cursor = raw.cursor(name=f"eventmig_scan_{name}"[:60])
            cursor.itersize = batch
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(f"SELECT {columns} FROM {self.names.quote(name)}")
            while True:
                rows = cursor.fetchmany(batch)
                if not rows:
                    return
                yield rows
        finally:
            cursor.close()

    def drop_tables(self, conn: Connection, names: Iterable[str]) -> None:
        for name in names:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.names.quote(name)}")

    # ------------------------------------------------------------- digests
    def new_digest(self) -> WrittenDigest:
        return WrittenDigest()

    def replace_in_digest(self, digest: str, removed: str, added: str) -> str:
        return replace_in_digest(digest, removed, added)

    def scratch_digest(
        self, tx: Connection, table: sa.Table, scratch_id: str, rows: list[tuple[Any, ...]]
    ) -> tuple[str, int]:
        """The digest and count of ``rows`` as this database gives them back (a float column, a date), from a
        scratch copy of ``table`` (``<table>__<scratch id>``) written, read and dropped again."""
        name = self.shadow_name(table.name, scratch_id)
        tx.execute(CreateTable(self.shadow_table(table, name, scratch_id)))
        self.bulk_insert(tx, name, [c.name for c in table.columns], rows)
        digest = self.table_digest(tx, table, name)
        self.drop_tables(tx, [name])
        return digest

    def compare(
        self, conn: Connection, table: sa.Table, live: str | None, shadow: str, sample: int = 10, *,
        written: WrittenDigest | None = None,
    ) -> TableDiff:
        """Row digests of the shadow table against the live one, joined on the primary key.

        Both tables are read in primary-key order and merged, so memory stays
        flat whatever their size. ``written``: the digest of every row of the
        shadow table as the rebuild wrote them, when it is exact; the shadow
        table is then not read again unless its digest differs from the live
        table's (to tell which rows differ).
        """
        columns = [c.name for c in table.columns]
        pk = [columns.index(c.name) for c in table.primary_key.columns]
        plain = _needs_plain(table)
        if written is not None and written.exact:
            if live is None:
                return TableDiff(table.name, 0, written.rows, None, written.digest, added=written.rows, sample=[])
            live_digest, live_count = digest_rows(self._ordered_rows(conn, table, live, ordered=False), pk, plain=plain)
            if live_digest == written.digest and live_count == written.rows:
                return TableDiff(table.name, live_count, written.rows, live_digest, written.digest)
        if live is None:  # nothing to merge with: any order will do
            digest, rows = digest_rows(self._ordered_rows(conn, table, shadow, ordered=False), pk, plain=plain)
            return TableDiff(table.name, 0, rows, None, digest, added=rows, sample=[])
        shadow_rows = self._ordered_rows(conn, table, shadow)
        live_rows = self._ordered_rows(conn, table, live)
        return merge_compare(table.name, live_rows, shadow_rows, pk, sample, plain=plain)

    def table_digest(self, conn: Connection, table: sa.Table, name: str) -> tuple[str, int]:
        """The digest and row count :meth:`compare` finds for the table ``name`` (shaped like ``table``)."""
        columns = [c.name for c in table.columns]
        pk = [columns.index(c.name) for c in table.primary_key.columns]
        return digest_rows(self._ordered_rows(conn, table, name, ordered=False), pk, plain=_needs_plain(table))

    def _ordered_rows(
        self, conn: Connection, table: sa.Table, name: str, *, ordered: bool = True
    ) -> Iterator[tuple[Any, ...]]:
        quote = self.names.quote
        columns = [quote(c.name) for c in table.columns]
        order = []
        for c in table.primary_key.columns:
            text = isinstance(c.type, (sa.String, sa.Text))
            order.append(f'{quote(c.name)} COLLATE "C"' if text and self.dialect == "postgresql" else quote(c.name))
        sql = f"SELECT {', '.join(columns)} FROM {quote(name)}" + (f" ORDER BY {', '.join(order)}" if ordered else "")
        raw = self.raw(conn)
        if self.dialect == "postgresql":
            cursor = raw.cursor(name=f"eventmig_cmp_{name}"[:60])
            cursor.itersize = 5000
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(sql)
            while True:
                rows = cursor.fetchmany(5000)
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()


class StateReader:
    """Point reads of a worker's state tables: a connection and a cursor kept for the purpose (one prepared
    statement per table), closed before the worker writes (SQLite: an open read would block its own write)."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self._conn: Connection | None = None
        self._cursor: Any = None
        self._sql: dict[str, str] = {}

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.db.engine.connect()
        return self._conn

    def get(self, table: str, key: str) -> bytes | None:
        """One state by key."""
        if self._cursor is None:
            self._cursor = self.db.raw(self._connection()).cursor()
        self._cursor.execute(self._sql.get(table) or self._sql.setdefault(
            table, self.db.q(f"SELECT state FROM {self.db.names.quote(table)} WHERE key = ?")), (key,))
        row = self._cursor.fetchone()
        return bytes(row[0]) if row is not None else None

    def keys(self, table: str) -> Iterator[str]:
        """Every key a state table holds."""
        for batch in self.db.scan_states(self._connection(), table, keys_only=True):
            for (text,) in batch:
                yield text

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]

