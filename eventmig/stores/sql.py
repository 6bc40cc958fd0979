"""The SQLAlchemy event store: SQLite (the embedded default) and PostgreSQL.

Layout, created on first use:

* one events table per epoch. The active epoch's table always has the
  configured name (``events``), so applications keep reading and writing the
  same table after a switch; the others are ``events_e<N>``. A switch renames
  the two tables inside one transaction (both SQLite and PostgreSQL have
  transactional DDL), which is what makes it atomic.
* ``eventmig_epochs``, ``eventmig_runs``, ``eventmig_quarantine`` and
  ``eventmig_switches``: the bookkeeping, in the same database so that a
  migration's checkpoint commits in the same transaction as its events.

SQLAlchemy provides engines, pooling and URL handling; the hot paths use the
driver directly (``executemany`` on SQLite, ``COPY`` on PostgreSQL), because
a migration moves millions of rows and per-row overhead is what it is paid in.

On PostgreSQL, appends take an EXCLUSIVE table lock so positions are
committed in the order they are assigned: a reader following the commit order
(a migration catching up) can then never skip an event that a slower
concurrent transaction commits later with a smaller position.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import Busy, ConfigError, HeadMoved, StoreError, WrongExpectedVersion
from ..events import NewEvent, RecordedEvent
from .base import (
    CatchUp,
    Capabilities,
    EpochInfo,
    EventStore,
    ExpectedVersion,
    QuarantinedEvent,
    Run,
    StreamState,
    Switch,
    TargetEvent,
)

_EVENT_COLUMNS = "stream, version, event_id, type, data, metadata, recorded_at"
_READ_COLUMNS = "stream, version, global_position, event_id, type, data, metadata, recorded_at"
_QUARANTINE_COLUMNS = (
    "run_id, stream, version, position, event_id, type, data, metadata, recorded_at, reason, accepted"
)
_RUN_COLUMNS = (
    "id, kind, source_epoch, target_epoch, status, checkpoint, fingerprint, started_at, updated_at, stats, options"
)
_json = msgspec.json.Encoder()


def normalize_sql_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` onto the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class SQLEventStore(EventStore):
    """An event store in a SQLite file or a PostgreSQL database."""

    capabilities = Capabilities(first_stream_version=1, contiguous_positions=False, atomic_batches=True)

    def __init__(
        self, url: str, *, table: str = "events", epoch: int | None = None, create: bool = True,
        _engine: Engine | None = None, _create_schema: bool = True,
    ) -> None:
        self._raw_url = normalize_sql_url(url)
        try:
            parsed = make_url(self._raw_url)
        except sa.exc.ArgumentError:
            raise ConfigError(f"not a store URL: {url!r}") from None
        self.url = parsed.render_as_string(hide_password=True)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported SQL store {self.url}: use sqlite:/// or postgresql+psycopg://")
        if not table.isidentifier():
            raise ConfigError(f"events table name must be an identifier, got {table!r}")
        self.table_base = table
        self._create = create
        self._owns_engine = _engine is None
        self.engine = _engine or self._create_engine(parsed)
        self._sqlite_path = parsed.database if self.dialect == "sqlite" else None
        if _engine is None and _create_schema:
            self._ensure_schema()
        # a handle opened without an epoch follows the active one, as applications do: after a
        # switch it reads and writes the new epoch through the same table name
        self._pinned = epoch

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self._pinned if self._pinned is not None else self.active_epoch()

    @property
    def _table(self) -> str:
        return self.table_base if self._pinned is None else self._table_name(self._pinned)

    # -------------------------------------------------------------- set-up
    def _create_engine(self, parsed: sa.URL) -> Engine:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                directory = os.path.dirname(os.path.abspath(parsed.database))
                if not os.path.isdir(directory):
                    raise ConfigError(f"cannot open {self.url}: directory {directory} does not exist")
                if not self._create and not os.path.exists(parsed.database):
                    raise ConfigError(f"no event store at {self.url}: {os.path.abspath(parsed.database)} does not exist")
            engine = sa.create_engine(parsed, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                # pysqlite's own transaction handling does not cover DDL; take it over
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                # writers take the lock up front so two writers never deadlock upgrading
                write = conn.get_execution_options().get("eventmig_write")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        else:
            engine = sa.create_engine(parsed, pool_pre_ping=True)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError as exc:
            engine.dispose()
            raise StoreError(f"cannot connect to {self.url}: {_first_line(exc.orig)}") from None
        return engine

    def _ensure_schema(self) -> None:
        big = "BIGINT" if self.dialect == "postgresql" else "INTEGER"
        blob = "BYTEA" if self.dialect == "postgresql" else "BLOB"
        serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if self.dialect == "postgresql" else "INTEGER PRIMARY KEY"
        with self._write() as c:
            if self.dialect == "postgresql":
                # several processes may create the schema at once; serialise them
                c.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('eventmig:schema:' || current_schema()))")
            c.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS eventmig_epochs (epoch INTEGER PRIMARY KEY, status TEXT NOT NULL, "
                "source_epoch INTEGER, created_at DOUBLE PRECISION NOT NULL)"
            )
            c.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS eventmig_runs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                "source_epoch INTEGER NOT NULL, target_epoch INTEGER NOT NULL, status TEXT NOT NULL, "
                f"checkpoint {big}, fingerprint TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL, "
                "updated_at DOUBLE PRECISION NOT NULL, stats TEXT NOT NULL, options TEXT NOT NULL)"
            )
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS eventmig_quarantine (id {serial}, run_id TEXT NOT NULL, "
                f"stream TEXT NOT NULL, version {big} NOT NULL, position {big} NOT NULL, event_id TEXT NOT NULL, "
                f"type TEXT NOT NULL, data {blob} NOT NULL, metadata {blob} NOT NULL, recorded_at {big} NOT NULL, "
                "reason TEXT NOT NULL, accepted BOOLEAN NOT NULL)"
            )
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS eventmig_switches (id {serial}, kind TEXT NOT NULL, "
                "from_epoch INTEGER NOT NULL, to_epoch INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, "
                f"to_head {big})"
            )
            if c.exec_driver_sql("SELECT count(*) FROM eventmig_epochs").scalar() == 0:
                self._create_events_table(c, self.table_base, 1, indexes=True)
                c.exec_driver_sql(
                    self._q("INSERT INTO eventmig_epochs VALUES (1, 'active', NULL, ?)"), (time.time(),)
                )

    def _create_events_table(self, c: Connection, name: str, epoch: int, *, indexes: bool) -> None:
        if self.dialect == "postgresql":
            columns = (
                "global_position BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, stream TEXT NOT NULL, "
                "version BIGINT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, data BYTEA NOT NULL, "
                "metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL"
            )
        else:
            columns = (
                "global_position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, "
                "event_id TEXT NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
                "recorded_at INTEGER NOT NULL"
            )
        c.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
        if indexes:
            self._create_indexes(c, name, epoch)

    def _create_indexes(self, c: Connection, name: str, epoch: int) -> None:
        prefix = f"{self.table_base}_e{epoch}"
        c.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {prefix}_stream_version ON {name} (stream, version)")
        c.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {prefix}_event_id ON {name} (event_id)")

    # ------------------------------------------------------------- helpers
    def _q(self, sql: str) -> str:
        """Write SQL once with ``?`` placeholders; psycopg wants ``%s``."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(eventmig_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"{self.url}: {_first_line(exc.orig)}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as exc:
            raise StoreError(f"{self.url}: {_first_line(exc.orig)}") from None

    def _table_name(self, epoch: int, active: int | None = None) -> str:
        if active is None:
            active = self.active_epoch()
        return self.table_base if epoch == active else f"{self.table_base}_e{epoch}"

    def _lock_table(self, c: Connection, table: str) -> None:
        if self.dialect == "postgresql":
            c.exec_driver_sql(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    # ------------------------------------------------------------- streams
    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = StreamState.ANY
    ) -> int:
        with self._write() as c:
            self._lock_table(c, self._table)
            current = c.exec_driver_sql(
                self._q(f"SELECT max(version) FROM {self._table} WHERE stream = ?"), (stream,)
            ).scalar()
            _check_expected(stream, expected_version, current)
            if not events:
                return current if current is not None else self.capabilities.first_stream_version - 1
            start = (current or 0) + 1
            rows = [
                (stream, start + i, e.event_id or _uuid4(), e.type, e.data, e.metadata, e.recorded_at or _now())
                for i, e in enumerate(events)
            ]
            try:
                c.exec_driver_sql(self._q(f"INSERT INTO {self._table} ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"), rows)
            except sa.exc.IntegrityError as exc:
                raise WrongExpectedVersion(stream, expected_version, current) if "version" in str(exc.orig) else StoreError(
                    f"duplicate event id appending to {stream!r}: {_first_line(exc.orig)}"
                ) from None
            return start + len(events) - 1

    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        sql = f"SELECT {_READ_COLUMNS} FROM {self._table} WHERE stream = ? AND version >= ? ORDER BY version"
        params: tuple[Any, ...] = (stream, from_version or 0)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._read() as c:
            return [RecordedEvent(*row) for row in c.exec_driver_sql(self._q(sql), params)]

    def read_all(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000
    ) -> Iterator[list[RecordedEvent]]:
        for rows in self.read_all_rows(after, until=until, batch_size=batch_size):
            yield [RecordedEvent(*row) for row in rows]

    def read_all_rows(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Like :meth:`read_all`, as raw tuples in :class:`RecordedEvent` field order (the fast path)."""
        bound = " AND global_position <= ?" if until is not None else ""
        sql = self._q(
            f"SELECT {_READ_COLUMNS} FROM {self._table} WHERE global_position > ?{bound} "
            "ORDER BY global_position LIMIT ?"
        )
        position = after if after is not None else -1
        while True:
            params = (position, until, batch_size) if until is not None else (position, batch_size)
            try:
                with self.engine.connect() as c:
                    driver = c.connection.driver_connection
                    # PostgreSQL: binary results, so payloads arrive as bytes with no hex decoding
                    cursor = driver.cursor(binary=True) if self.dialect == "postgresql" else driver.cursor()
                    cursor.execute(sql, params)
                    rows = cursor.fetchall()
                    cursor.close()
                    if self.dialect == "postgresql":
                        c.connection.driver_connection.rollback()
            except sa.exc.DBAPIError as exc:
                raise StoreError(f"{self.url}: {_first_line(exc.orig)}") from None
            except Exception as exc:  # raw driver errors outside SQLAlchemy's wrapping
                if type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg"):
                    raise StoreError(f"{self.url}: {_first_line(exc)}") from None
                raise
            if not rows:
                return
            yield rows
            if len(rows) < batch_size:
                return
            position = rows[-1][2]

    def position_after(self, after: int | None, count: int, *, until: int | None = None) -> int | None:
        bound = " AND global_position <= ?" if until is not None else ""
        params: tuple[Any, ...] = (after if after is not None else -1,) + ((until,) if until is not None else ())
        with self._read() as c:
            position = c.exec_driver_sql(
                self._q(f"SELECT global_position FROM {self._table} WHERE global_position > ?{bound} "
                        "ORDER BY global_position LIMIT 1 OFFSET ?"),
                params + (count - 1,),
            ).scalar()
            if position is None:
                position = c.exec_driver_sql(
                    self._q(f"SELECT max(global_position) FROM {self._table} WHERE global_position > ?{bound}"), params
                ).scalar()
        return position

    def reopen(self) -> SQLEventStore:
        return SQLEventStore(self._raw_url, table=self.table_base, epoch=self.epoch, _create_schema=False)

    def list_streams(self) -> Iterator[str]:
        with self._read() as c:
            rows = c.exec_driver_sql(f"SELECT DISTINCT stream FROM {self._table} ORDER BY stream").fetchall()
        return iter([r[0] for r in rows])

    def stream_version(self, stream: str) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(self._q(f"SELECT max(version) FROM {self._table} WHERE stream = ?"), (stream,)).scalar()

    def stream_versions(self) -> dict[str, int]:
        with self._read() as c:
            return dict(c.exec_driver_sql(f"SELECT stream, max(version) FROM {self._table} GROUP BY stream").fetchall())

    def head_position(self) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(f"SELECT max(global_position) FROM {self._table}").scalar()

    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        sql = f"SELECT count(*) FROM {self._table} WHERE global_position > ?"
        params: tuple[Any, ...] = (after if after is not None else -1,)
        if until is not None:
            sql += " AND global_position <= ?"
            params += (until,)
        with self._read() as c:
            return int(c.exec_driver_sql(self._q(sql), params).scalar() or 0)

    # -------------------------------------------------------------- epochs
    def epochs(self) -> list[EpochInfo]:
        with self._read() as c:
            rows = c.exec_driver_sql(
                "SELECT epoch, status, source_epoch, created_at FROM eventmig_epochs ORDER BY epoch"
            ).fetchall()
        return [EpochInfo(*row) for row in rows]

    def active_epoch(self) -> int:
        with self._read() as c:
            epoch = c.exec_driver_sql("SELECT epoch FROM eventmig_epochs WHERE status = 'active'").scalar()
        if epoch is None:
            raise StoreError(f"{self.url}: no active epoch recorded in eventmig_epochs")
        return int(epoch)

    def at_epoch(self, epoch: int) -> SQLEventStore:
        if epoch not in {e.epoch for e in self.epochs()}:
            raise StoreError(f"{self.url}: there is no epoch {epoch}")
        return SQLEventStore(self._raw_url, table=self.table_base, epoch=epoch, _engine=self.engine)

    def create_epoch(self, source_epoch: int) -> int:
        with self._write() as c:
            epoch = int(c.exec_driver_sql("SELECT max(epoch) FROM eventmig_epochs").scalar()) + 1
            # secondary indexes come in finish_epoch: building them after the bulk load is much faster
            self._create_events_table(c, f"{self.table_base}_e{epoch}", epoch, indexes=False)
            c.exec_driver_sql(
                self._q("INSERT INTO eventmig_epochs VALUES (?, 'building', ?, ?)"), (epoch, source_epoch, time.time())
            )
        return epoch

    def refresh_statistics(self) -> None:
        """PostgreSQL: ANALYZE this epoch's table.

        Right after a bulk load the planner still believes the table empty and
        sorts the whole remaining range for every page of a paged read, which
        makes a scan quadratic; autovacuum fixes it eventually, a scan cannot wait.
        """
        if self.dialect != "postgresql":
            return
        try:
            with self._write() as c:
                c.exec_driver_sql(f"ANALYZE {self._table}")
        except StoreError:
            pass  # not the table's owner: the scan is slower, not wrong

    def finish_epoch(self, epoch: int) -> None:
        with self._write() as c:
            active = self._active(c)
            self._create_indexes(c, self._table_name(epoch, active), epoch)
            if self.dialect == "postgresql":
                c.exec_driver_sql(f"ANALYZE {self._table_name(epoch, active)}")
            c.exec_driver_sql(
                self._q("UPDATE eventmig_epochs SET status = 'ready' WHERE epoch = ? AND status = 'building'"), (epoch,)
            )

    def drop_epoch(self, epoch: int) -> None:
        with self._write() as c:
            active = self._active(c)
            if epoch == active:
                raise StoreError(f"epoch {epoch} is active; switch to another epoch before dropping it")
            c.exec_driver_sql(f"DROP TABLE IF EXISTS {self._table_name(epoch, active)}")
            c.exec_driver_sql(self._q("DELETE FROM eventmig_epochs WHERE epoch = ?"), (epoch,))

    def switch_epoch(
        self, to_epoch: int, *, kind: str, expect_heads: dict[int, int | None], catch_up: CatchUp | None = None
    ) -> Switch:
        with self._write() as c:
            active = self._active(c)
            status = c.exec_driver_sql(self._q("SELECT status FROM eventmig_epochs WHERE epoch = ?"), (to_epoch,)).scalar()
            if status is None:
                raise StoreError(f"there is no epoch {to_epoch}")
            if to_epoch == active:
                raise StoreError(f"epoch {to_epoch} is already active")
            if status == "building":
                raise StoreError(f"epoch {to_epoch} is still being built; finish its migration first")
            old_table, new_table = self.table_base, self._table_name(to_epoch, active)
            if self.dialect == "postgresql":
                c.exec_driver_sql(f"LOCK TABLE {old_table}, {new_table} IN ACCESS EXCLUSIVE MODE")
            # from here on writers of either table wait (PostgreSQL: the lock above; SQLite: BEGIN IMMEDIATE)
            behind: int | None = None
            for epoch, expected in expect_heads.items():
                head = c.exec_driver_sql(f"SELECT max(global_position) FROM {self._table_name(epoch, active)}").scalar()
                if head != expected:
                    if catch_up is not None and epoch == catch_up.source_epoch == active:
                        behind = expected if expected is not None else -1
                        continue
                    raise HeadMoved(
                        f"epoch {epoch} changed since it was verified (head {expected} -> {head}): "
                        "events were appended meanwhile; run migrate again to catch up, then switch"
                    )
            if behind is not None:
                self._catch_up(c, catch_up, old_table, new_table, behind, expect_heads.get(to_epoch))  # type: ignore[arg-type]
            parked = f"{self.table_base}_e{active}"
            c.exec_driver_sql(f"ALTER TABLE {old_table} RENAME TO {parked}")
            c.exec_driver_sql(f"ALTER TABLE {new_table} RENAME TO {old_table}")
            c.exec_driver_sql(self._q("UPDATE eventmig_epochs SET status = 'retired' WHERE epoch = ?"), (active,))
            c.exec_driver_sql(self._q("UPDATE eventmig_epochs SET status = 'active' WHERE epoch = ?"), (to_epoch,))
            to_head = c.exec_driver_sql(f"SELECT max(global_position) FROM {old_table}").scalar()
            now = time.time()
            c.exec_driver_sql(
                self._q("INSERT INTO eventmig_switches (kind, from_epoch, to_epoch, at, to_head) VALUES (?, ?, ?, ?, ?)"),
                (kind, active, to_epoch, now, to_head),
            )
            switch_id = c.exec_driver_sql("SELECT max(id) FROM eventmig_switches").scalar()
        return Switch(switch_id, kind, active, to_epoch, now, to_head)

    def _catch_up(
        self, c: Connection, catch_up: CatchUp, source: str, target: str, source_head: int | None, target_head: int | None
    ) -> None:
        """Inside the switch transaction: migrate and verify what arrived after ``source_head``."""
        read = self._q(f"SELECT {_READ_COLUMNS} FROM {{}} WHERE global_position > ? ORDER BY global_position")
        rows = c.exec_driver_sql(read.format(source), (source_head if source_head is not None else -1,)).fetchall()
        events, run = catch_up.prepare([tuple(r) for r in rows])
        if events:
            self._bulk_insert(c, target, events)
        self._save_run(c, run)
        written = c.exec_driver_sql(read.format(target), (target_head if target_head is not None else -1,)).fetchall()
        catch_up.check([tuple(r) for r in rows], [tuple(r) for r in written])

    def switches(self) -> list[Switch]:
        with self._read() as c:
            rows = c.exec_driver_sql(
                "SELECT id, kind, from_epoch, to_epoch, at, to_head FROM eventmig_switches ORDER BY id"
            ).fetchall()
        return [Switch(*row) for row in rows]

    def _active(self, c: Connection) -> int:
        return int(c.exec_driver_sql("SELECT epoch FROM eventmig_epochs WHERE status = 'active'").scalar())

    # ------------------------------------------------ migration bookkeeping
    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        if self.dialect == "postgresql":
            with self._pg_advisory_lock(name):
                yield
        else:
            with _file_lock(self._sqlite_path, name, self.url):
                yield

    @contextmanager
    def _pg_advisory_lock(self, name: str) -> Iterator[None]:
        # a session-level advisory lock dies with its connection, so a killed job frees it
        with self.engine.connect() as c:
            # scoped to this schema and events table: stores side by side in one database are independent
            key = c.exec_driver_sql(
                "SELECT hashtext(%s || current_schema() || ':' || %s)", (f"eventmig:{name}:", self.table_base)
            ).scalar()
            got = c.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (key,)).scalar()
            c.commit()
            if not got:
                raise Busy(f"another eventmig job holds the {name!r} lock on {self.url}")
            fd = c.connection.driver_connection.fileno()
            _lock_fds.add(fd)
            try:
                yield
            finally:
                _lock_fds.discard(fd)
                c.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))
                c.commit()

    def save_run(self, run: Run) -> None:
        with self._write() as c:
            self._save_run(c, run)

    def _save_run(self, c: Connection, run: Run) -> None:
        c.exec_driver_sql(
            self._q(
                f"INSERT INTO eventmig_runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, checkpoint = excluded.checkpoint, "
                "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at, stats = excluded.stats, "
                "options = excluded.options"
            ),
            (
                run.id, run.kind, run.source_epoch, run.target_epoch, run.status, run.checkpoint, run.fingerprint,
                run.started_at, run.updated_at, _json.encode(run.stats).decode(), _json.encode(run.options).decode(),
            ),
        )

    def runs(self, kind: str | None = None) -> list[Run]:
        sql = f"SELECT {_RUN_COLUMNS} FROM eventmig_runs"
        params: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            params = (kind,)
        with self._read() as c:
            rows = c.exec_driver_sql(self._q(sql + " ORDER BY started_at, id"), params).fetchall()
        return [
            Run(*row[:9], stats=msgspec.json.decode(row[9]), options=msgspec.json.decode(row[10])) for row in rows
        ]

    def write_batch(
        self, events: Sequence[TargetEvent], *, run: Run | None = None, quarantined: Sequence[QuarantinedEvent] = ()
    ) -> None:
        with self._write() as c:
            active = self._active(c)
            epoch = self._pinned if self._pinned is not None else active
            table = self._table_name(epoch, active)
            if epoch == active:
                self._lock_table(c, table)
            if events:
                self._bulk_insert(c, table, events)
            if quarantined:
                c.exec_driver_sql(
                    self._q(f"INSERT INTO eventmig_quarantine ({_QUARANTINE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    [
                        (q.run_id, q.stream, q.version, q.position, q.event_id, q.type, q.data, q.metadata,
                         q.recorded_at, q.reason, q.accepted)
                        for q in quarantined
                    ],
                )
            if run is not None:
                self._save_run(c, run)

    def _bulk_insert(self, c: Connection, table: str, events: Sequence[TargetEvent]) -> None:
        if self.dialect == "postgresql":
            cursor = c.connection.driver_connection.cursor()
            # binary COPY: no text escaping of the payload bytes on either side
            with cursor.copy(f"COPY {table} ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int8", "text", "text", "bytea", "bytea", "int8"])
                write_row = copy.write_row
                for event in events:
                    write_row(event)
        else:
            cursor = c.connection.driver_connection.cursor()
            cursor.executemany(f"INSERT INTO {table} ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", events)
        cursor.close()

    def quarantine(self, run_id: str | None = None) -> list[QuarantinedEvent]:
        sql = f"SELECT {_QUARANTINE_COLUMNS}, id FROM eventmig_quarantine"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params = (run_id,)
        with self._read() as c:
            rows = c.exec_driver_sql(self._q(sql + " ORDER BY id"), params).fetchall()
        return [QuarantinedEvent(*row[:10], accepted=bool(row[10]), id=row[11]) for row in rows]

    def accept_quarantine(self, run_id: str, ids: Sequence[int] | None = None) -> int:
        sql = "UPDATE eventmig_quarantine SET accepted = ? WHERE run_id = ? AND accepted = ?"
        params: tuple[Any, ...] = (True, run_id, False)
        if ids is not None:
            if not ids:
                return 0
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            params += tuple(ids)
        with self._write() as c:
            return c.exec_driver_sql(self._q(sql), params).rowcount

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


# ------------------------------------------------------------------ helpers
def _check_expected(stream: str, expected: ExpectedVersion, current: int | None) -> None:
    if expected is StreamState.ANY:
        return
    if expected is StreamState.NO_STREAM:
        ok = current is None
    elif expected is StreamState.EXISTS:
        ok = current is not None
    else:
        ok = current == expected if current is not None else expected == 0
    if not ok:
        raise WrongExpectedVersion(stream, expected, current)


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())


def _now() -> int:
    return time.time_ns() // 1000


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


_process_locks: dict[str, threading.Lock] = {}

#: descriptors whose life is a lock's life (an flock'ed file, an advisory-locked session)
_lock_fds: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child, close its copies of lock descriptors.

    Otherwise a worker process would keep its parent's lock alive after the
    parent is killed, and the job could not be resumed until the worker exited.
    Closing the child's copy leaves the parent's lock untouched.
    """
    for fd in list(_lock_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _lock_fds.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def _file_lock(path: str | None, name: str, url: str) -> Iterator[None]:
    """An flock beside the SQLite file: the kernel releases it when its holder dies."""
    if not path or path == ":memory:":
        lock = _process_locks.setdefault(name, threading.Lock())
        if not lock.acquire(blocking=False):
            raise Busy(f"another eventmig job holds the {name!r} lock on {url}")
        try:
            yield
        finally:
            lock.release()
        return
    lock_path = f"{os.path.abspath(path)}.{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another eventmig job holds the {name!r} lock on {url}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _lock_fds.add(fd)
        yield
    finally:
        _lock_fds.discard(fd)
        os.close(fd)
