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

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eventmig.errors import Busy, ConfigError
from eventmig.backends.sql.engine import SQLDatabase

_json = msgspec.json.Encoder()
_encode_row = msgspec.json.Encoder(order="sorted").encode
_blake2b = hashlib.blake2b

PREVIOUS_SUFFIX = "__prev"
#: what a live table is renamed to for the moment a rollback exchanges it with its ``__prev``
ROLLBACK_SUFFIX = "__rollback"
#: characters of a rebuild run's id, the suffix of its shadow tables' names (``<table>__<run id>``)
RUN_ID_LENGTH = 12
#: the run id standing for tables eventmig did not build: the live tables a projection's first swap replaced
#: (their version is stored as 0 and read back as None)
UNMANAGED_RUN = "-"


class RebuildRun(msgspec.Struct):
    """One projection's rebuild: which code, into which shadow tables, up to where."""

    id: str
    projection: str
    version: int
    fingerprint: str
    status: str  # "running" | "folded" | "verified" | "swapped" | "abandoned"
    partitions: int
    epoch: int
    until: int | None  # the last commit position replayed (None: the epoch was empty)
    started_at: float
    updated_at: float
    tables: dict[str, str]  # live name -> shadow name
    stats: dict[str, Any] = {}


class Partition(msgspec.Struct):
    run_id: str
    partition: int
    checkpoint: int | None  # position of the last event folded, None before the first batch
    events: int
    keys: int
    status: str  # "folding" | "folded" | "done"


class LiveModel(msgspec.Struct):
    projection: str
    version: int | None  # None: tables eventmig did not build (run_id is UNMANAGED_RUN)
    run_id: str
    tables: list[str]
    previous_version: int | None
    previous_run_id: str | None
    updated_at: float


class SwapRecord(msgspec.Struct):
    id: int
    kind: str  # "swap" | "rollback"
    projection: str
    from_version: int | None
    to_version: int | None  # None: back to the tables the projection's first swap replaced
    run_id: str
    at: float


class TableDiff(msgspec.Struct):
    """How a shadow table differs from the live one, by primary key."""

    table: str
    live_rows: int
    rows: int
    live_digest: str | None
    digest: str
    added: int = 0
    removed: int = 0
    changed: int = 0
    sample: list[str] = []  # primary keys of some differing rows, as JSON

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)


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
        return ReadModelDB(self.raw_url)

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
        """An exclusive lock across processes that dies with its holder."""
        if self.dialect == "postgresql":
            with self.engine.connect() as c:
                key = f"eventmig:{name}:"
                got = c.exec_driver_sql("SELECT pg_try_advisory_lock(hashtext(%s || current_schema()))", (key,)).scalar()
                c.commit()
                if not got:
                    raise Busy(f"another eventmig job holds the {name!r} lock on {self.url}")
                try:
                    yield
                finally:
                    c.exec_driver_sql("SELECT pg_advisory_unlock(hashtext(%s || current_schema()))", (key,))
                    c.commit()
        else:
            from eventmig.backends.sql.store import _file_lock

            with _file_lock(self.sqlite_path, name, self.url):
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

    # ------------------------------------------------------- state tables
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


# ------------------------------------------------------------------ digests
# A table's digest combines, independently of row order, the hash of each
# row (as :func:`eventmig.model.checksums.combine` does for streams); rows are
# hashed over their JSON encoding, primary key included, so a row's part
# names its key too.
_MOD = 1 << 128


def _plain(value: Any) -> Any:
    """One representation per value whichever side it came from (SQLite has no booleans)."""
    if value.__class__ is bool:
        return int(value)
    if value.__class__ is memoryview:
        return bytes(value)
    return value


def _needs_plain(table: sa.Table) -> bool:
    return any(isinstance(c.type, (sa.Boolean, sa.LargeBinary)) for c in table.columns)


def _row_part(row: Sequence[Any], plain: bool) -> int:
    """A row's part of its table's digest."""
    if plain:
        row = [_plain(v) for v in row]
    return int.from_bytes(_blake2b(_encode_row(row), digest_size=16).digest(), "big")


def _key_text(row: Sequence[Any], pk: Sequence[int], plain: bool) -> str:
    """A row's primary key as JSON (the samples of differing rows)."""
    return _encode_row([_plain(row[i]) if plain else row[i] for i in pk]).decode()


def digest_rows(rows: Iterable[Sequence[Any]], pk: Sequence[int], *, plain: bool = True) -> tuple[str, int]:
    """Order-independent digest of rows keyed by their primary key, and their count."""
    total = n = 0
    encode, blake2b, from_bytes = _encode_row, _blake2b, int.from_bytes
    for row in rows:
        if plain:
            row = [_plain(v) for v in row]
        total += from_bytes(blake2b(encode(row), digest_size=16).digest(), "big")
        n += 1
    return f"{total % _MOD:032x}", n


class WrittenDigest(msgspec.Struct):
    """The digest of the rows a rebuild wrote into one shadow table, summed as they were written.

    Equal to what :meth:`ReadModelDB.compare` computes by reading the table
    back, because it is only kept while every value written is of the one
    Python class its column gives back (``str`` for text, ``int`` for
    integers, ``bool``, ``bytes``, None): a value the database would convert
    on the way in (an int into a text column, a Decimal, a date) makes it
    ``exact = False``, and the table is read back instead.
    """

    total: int = 0
    rows: int = 0
    exact: bool = True
    #: partitions whose rows are all in it
    partitions: list[int] = []

    def add(self, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None:
        if not self.exact or not rows:
            return
        for values, allowed in zip(zip(*rows), _written_classes(table)):
            if not set(map(type, values)) <= allowed:
                self.exact = False
                return
        plain = _needs_plain(table)
        self.total += sum(_row_part(row, plain) for row in rows)
        self.rows += len(rows)

    def merge(self, other: WrittenDigest) -> None:
        self.total += other.total
        self.rows += other.rows
        self.exact = self.exact and other.exact
        self.partitions = sorted({*self.partitions, *other.partitions})

    @property
    def digest(self) -> str:
        return f"{self.total % _MOD:032x}"


_NONE = type(None)


def _written_classes(table: sa.Table) -> list[frozenset[type]]:
    """Per column, the classes a value may have to come back from the database as it went in."""
    out = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.Boolean):
            allowed: frozenset[type] = frozenset((bool, _NONE))
        elif isinstance(kind, sa.Integer):
            allowed = frozenset((int, _NONE))
        elif isinstance(kind, sa.String) and not isinstance(kind, (sa.Enum, sa.CHAR)):  # CHAR(n) pads
            allowed = frozenset((str, _NONE))
        elif isinstance(kind, sa.LargeBinary):
            allowed = frozenset((bytes, _NONE))
        else:  # floats (a 4-byte REAL), decimals, dates, JSON...: read back to be sure
            allowed = frozenset((_NONE,))
        out.append(allowed)
    return out


def replace_in_digest(digest: str, removed: str, added: str) -> str:
    """A table's digest once the rows digested as ``removed`` are taken out and those digested as ``added``
    put in: digests are sums, so that is arithmetic (the rows' primary keys must not collide)."""
    return f"{(int(digest, 16) - int(removed, 16) + int(added, 16)) % _MOD:032x}"


def digest_table_rows(table: sa.Table, rows: Iterable[Sequence[Any]]) -> str:
    """The digest :meth:`ReadModelDB.compare` computes, of rows given in memory (tests, replays)."""
    columns = [c.name for c in table.columns]
    return digest_rows(rows, [columns.index(c.name) for c in table.primary_key.columns])[0]


def merge_compare(
    name: str, live: Iterator[Sequence[Any]], shadow: Iterator[Sequence[Any]], pk: Sequence[int], sample: int = 10,
    *, plain: bool = True,
) -> TableDiff:
    """Merge two row streams ordered by primary key: counts of added, removed, changed rows, and digests."""
    diff = TableDiff(name, 0, 0, None, "")
    live_total = shadow_total = 0
    single = pk[0] if len(pk) == 1 else None

    def pk_of(row: Sequence[Any] | None) -> Any:
        if row is None:
            return None
        return row[single] if single is not None else tuple(row[i] for i in pk)

    def note(row: Sequence[Any]) -> None:
        if len(diff.sample) < sample:
            diff.sample.append(_key_text(row, pk, plain))

    a = next(live, None)
    b = next(shadow, None)
    ka, kb = pk_of(a), pk_of(b)
    while a is not None or b is not None:
        if b is None or (a is not None and ka < kb):
            live_total += _row_part(a, plain)  # type: ignore[arg-type]
            diff.live_rows += 1
            diff.removed += 1
            note(a)  # type: ignore[arg-type]
            a = next(live, None)
            ka = pk_of(a)
        elif a is None or kb < ka:
            shadow_total += _row_part(b, plain)
            diff.rows += 1
            diff.added += 1
            note(b)
            b = next(shadow, None)
            kb = pk_of(b)
        else:
            va = _row_part(a, plain)
            vb = _row_part(b, plain)
            live_total += va
            shadow_total += vb
            diff.live_rows += 1
            diff.rows += 1
            if va != vb:
                diff.changed += 1
                note(a)
            a = next(live, None)
            b = next(shadow, None)
            ka, kb = pk_of(a), pk_of(b)
    diff.live_digest = f"{live_total % _MOD:032x}"
    diff.digest = f"{shadow_total % _MOD:032x}"
    return diff


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]

