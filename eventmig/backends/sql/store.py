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
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eventmig.errors import Busy, ConfigError, HeadMoved, StoreError, WrongExpectedVersion
from eventmig.model.events import NewEvent, RecordedEvent
from eventmig.backends.sql import catalog, ddl, guard, table_sql
from eventmig.backends.sql.engine import SQLDatabase, is_driver_error, store_error
from eventmig.errors import first_line
from eventmig.backends.sql.layouts import EVENTMIG, Layout
from eventmig.backends.sql.lease import DEFAULT_LEASE_TTL_S, SQLLease
from eventmig.backends.sql import pgwatch
from eventmig.backends.sql import eventsourcing_epochs as es_epochs
from eventmig.ports import CatchUp, Capabilities, EventStore
from eventmig.model.records import (
    EpochInfo,
    ExpectedVersion,
    QuarantinedEvent,
    Run,
    StreamPartitions,
    StreamState,
    Switch,
    TargetEvent,
)

_EVENT_COLUMNS = "stream, version, event_id, type, data, metadata, recorded_at"
#: an epoch's indexes are named ``<table>_e<N>`` and one of these
_INDEX_SUFFIXES = ("_stream_version", "_event_id")  # the longest first: the error names the strictest limit
#: stream names :meth:`SQLEventStore.stream_bounds` samples to cut name ranges of about equal events
BOUND_SAMPLES = 4096
_QUARANTINE_COLUMNS = (
    "run_id, stream, version, position, event_id, type, data, metadata, recorded_at, reason, accepted"
)
_RUN_COLUMNS = (
    "id, kind, source_epoch, target_epoch, status, checkpoint, fingerprint, started_at, updated_at, stats, options"
)
_json = msgspec.json.Encoder()


class SQLEventStore(EventStore):
    """An event store in a SQLite file or a PostgreSQL database."""

    #: PostgreSQL's identity column leaves gaps (appends that fail after taking a position); each handle
    #: adds the name limit of its database (PostgreSQL cuts names at 63 bytes; SQLite has none)
    capabilities = Capabilities(first_stream_version=1, contiguous_positions=False, atomic_batches=True)

    def __init__(
        self, url: str, *, table: str = "events", epoch: int | None = None, create: bool = True,
        read_only: bool = False, init: bool = False, layout: Layout = EVENTMIG, _db: SQLDatabase | None = None,
        _create_schema: bool = True, _for_scans: bool = False,
    ) -> None:
        if not table.isidentifier():
            raise ConfigError(f"events table name must be an identifier, got {table!r}")
        self._owns_engine = _db is None
        self._db = _db or SQLDatabase(
            url, what="event store", create=create,
            # migrations commit batches of megabytes: checkpoint (and fsync) the WAL every 64 MB
            # rather than every 4 MB, with page cache enough to hold a batch; a handle for scans
            # reads each page once: a cache would only hold memory (in every worker process)
            sqlite_pragmas={"wal_autocheckpoint": 16384, "cache_size": -16384 if not _for_scans else -1024},
            read_only=read_only,
        )
        self._raw_url = self._db.raw_url
        #: the LISTEN connection of a follower waiting for appends (opened on first wait; closed by close())
        self._listener: pgwatch.Listener | None = None
        self.url, self.dialect, self.engine = self._db.url, self._db.dialect, self._db.engine
        self._sqlite_path = self._db.sqlite_path
        self._names = self._db.names
        if self.dialect == "postgresql":
            self.capabilities = msgspec.structs.replace(self.capabilities, max_identifier_bytes=self._names.limit)
        self.table_base = self._names.check(table, "events table name")
        self._sql_base = self._names.quote(table)
        #: which column holds what (the events table's layout); eventmig's own by default
        self.layout = layout
        if layout.event_id is None:  # nothing in the table to hold a unique index on
            self.capabilities = msgspec.structs.replace(self.capabilities, unique_event_ids=False)
        #: whether to set eventmig up in a database that holds an application's tables and no eventmig state
        self._init = init
        #: False for a read-only handle on a store eventmig never wrote to: an events table and no bookkeeping,
        #: which reads as a store whose first epoch is active and nothing else happened
        self._bookkept = True
        reason = table_sql.unwritable(layout)
        if reason is not None and not self._db.read_only and _db is None:
            self.close()
            # before anything is created: a handle that may write is one eventmig would write through
            raise ConfigError(f"{self.url}: eventmig cannot write table {table!r}: {reason}; it only reads it "
                              "(plan, check, verify, status, inspect)")
        if self._db.read_only and _db is None:
            self._bookkept = self._check_readable()
        elif _db is None and _create_schema:
            self._ensure_schema()
        #: the SQL text of this layout's events table (eventmig's own: the statements as they always were)
        self._sql = self._table_sql()
        if not self._sql.exact_times:
            self.capabilities = msgspec.structs.replace(self.capabilities, settable_record_times=False)
        if not self._sql.exact_metadata:  # lineage would come back as other bytes than were checksummed
            self.capabilities = msgspec.structs.replace(self.capabilities, lineage=frozenset())
        self.capabilities = es_epochs.capabilities(self.capabilities, layout)  # what the table has columns for
        # a handle opened without an epoch follows the active one, as applications do: after a
        # switch it reads and writes the new epoch through the same table name
        self._pinned = epoch

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self._pinned if self._pinned is not None else self.active_epoch()

    @property
    def _table(self) -> str:
        """The bare name of this handle's events table (a value, for catalog lookups)."""
        return self.table_base if self._pinned is None else self._table_name(self._pinned)

    @property
    def _sql_table(self) -> str:
        """This handle's events table as SQL text, quoted by the dialect."""
        return self._sql_base if self._pinned is None else self._names.quote(self._table_name(self._pinned))

    # -------------------------------------------------------------- set-up
    def _ensure_schema(self) -> None:
        with self._read() as c:
            # nothing is created in an application's database unless asked (see backends/sql/guard.py)
            guard.check_before_create(c, self.dialect, self.url, self.table_base, self.layout, init=self._init)
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
                self.check_epoch_names(1)  # before the first statement that creates anything of the store
                self._create_events_table(c, self.table_base, 1, indexes=True)
                c.exec_driver_sql(
                    self._q("INSERT INTO eventmig_epochs VALUES (1, 'active', NULL, ?)"), (time.time(),)
                )

    def _check_readable(self) -> bool:
        """Read-only: whether eventmig's bookkeeping is there; without it, the events table must be."""
        with self._read() as c:
            return guard.check_readable(c, self.dialect, self.url, self.table_base, self.layout)

    def _create_events_table(self, c: Connection, name: str, epoch: int, *, indexes: bool) -> None:
        if not self._native_layout:
            # an adopted table: the first epoch is the application's table itself, later ones copies of it
            if name != self.table_base:
                ddl.copy_table(c, self.dialect, self._names.quote, self.table_base, name)
            return
        if self.dialect == "postgresql":
            # a table about to be bulk-loaded gets its primary key with the other indexes, afterwards:
            # one sort of the whole column costs less than a B-tree insert per row
            columns = (
                f"global_position BIGINT GENERATED BY DEFAULT AS IDENTITY{' PRIMARY KEY' if indexes else ''}, "
                "stream TEXT NOT NULL, "
                "version BIGINT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, data BYTEA NOT NULL, "
                "metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL"
            )
        else:
            columns = (
                "global_position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, "
                "event_id TEXT NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
                "recorded_at INTEGER NOT NULL"
            )
        c.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {self._names.quote(name)} ({columns})")
        if indexes:
            self._create_indexes(c, name, epoch)

    def check_epoch_names(self, epoch: int) -> None:
        """Refuse (ConfigError) an events table name too long for the names epoch ``epoch`` needs.

        Its table ``<table>_e<N>`` and indexes ``<table>_e<N>_stream_version``
        and ``<table>_e<N>_event_id``: PostgreSQL would cut a longer name to 63
        bytes, onto the live table's or another index's name.
        """
        self._index_names(epoch)  # the longest of them, the tables' names being shorter

    def _index_names(self, epoch: int) -> list[str]:
        return [
            self._names.derive(self.table_base, f"_e{epoch}{s}", "events table name", f"the index of epoch {epoch}")
            for s in _INDEX_SUFFIXES
        ]

    def _create_indexes(self, c: Connection, name: str, epoch: int) -> None:
        if not self._native_layout:
            if name != self.table_base:
                ddl.copy_indexes(c, self.dialect, self._names.quote, self.table_base, name)
            return
        table = self._names.quote(name)
        if self.dialect == "postgresql":
            # sorts of a million keys fit in memory with room to spare, rather than spilling to disk
            c.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            has_key = c.exec_driver_sql(
                "SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary", (table,)
            ).scalar()
            if not has_key:
                c.exec_driver_sql(f"ALTER TABLE {table} ADD PRIMARY KEY (global_position)")
        by_version, by_id = (self._names.quote(n) for n in self._index_names(epoch))
        c.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {by_version} ON {table} (stream, version)")
        c.exec_driver_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {by_id} ON {table} (event_id)")

    @property
    def _native_layout(self) -> bool:
        """Whether the events table is eventmig's own (created by eventmig from its own DDL)."""
        return self.layout.columns() == EVENTMIG.columns()

    def _table_sql(self) -> table_sql.TableSQL:
        if self._native_layout:
            return table_sql.native()
        with self._read() as c:
            types = catalog.column_types(c, self.dialect, self.table_base)
        return table_sql.build(self.layout, self.dialect, self._names.quote, types)

    def _check_writable(self) -> None:
        """Refuse (ConfigError) to write a table of a layout eventmig only reads, before anything is written."""
        if self._sql.read_only:
            raise ConfigError(f"{self.url}: eventmig cannot write table {self.table_base!r}: {self._sql.read_only}")

    def _decoded(self, rows: list[Any]) -> list[tuple[Any, ...]]:
        """Rows read with ``self._sql.read`` as RecordedEvent-ordered tuples."""
        decode = self._sql.decode
        return decode([tuple(r) for r in rows]) if decode is not None else rows

    # ------------------------------------------------------------- helpers
    def _q(self, sql: str) -> str:
        return self._db.q(sql)

    def _write(self) -> AbstractContextManager[Connection]:
        return self._db.write()

    def _read(self) -> AbstractContextManager[Connection]:
        return self._db.read()

    def _table_name(self, epoch: int, active: int | None = None) -> str:
        """The bare name of epoch ``epoch``'s table: the configured one if it is active, ``<table>_e<N>`` if not."""
        if active is None:
            active = self.active_epoch()
        return self.table_base if epoch == active else self._parked_name(epoch)

    def _parked_name(self, epoch: int) -> str:
        return self._names.derive(self.table_base, f"_e{epoch}", "events table name", f"the table of epoch {epoch}")

    def _lock_table(self, c: Connection, table: str) -> None:
        """``table``: SQL text (quoted)."""
        if self.dialect == "postgresql":
            c.exec_driver_sql(f"LOCK TABLE {table} IN EXCLUSIVE MODE")

    # ------------------------------------------------------------- streams
    def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion = StreamState.ANY
    ) -> int:
        table, sql = self._sql_table, self._sql
        if events:
            self._check_writable()
        with self._write() as c:
            self._lock_table(c, table)
            current = c.exec_driver_sql(
                self._q(f"SELECT max({sql.version}) FROM {table} WHERE {sql.stream_is}"), (stream,)
            ).scalar()
            _check_expected(stream, expected_version, current)
            if not events:
                return current if current is not None else self.capabilities.first_stream_version - 1
            start = (current or 0) + 1
            rows = [
                (stream, start + i, e.event_id or _uuid4(), e.type, e.data, e.metadata, e.recorded_at or _now())
                for i, e in enumerate(events)
            ]
            if not sql.native:
                rows = table_sql.insert_rows(self.layout, rows)
            try:
                c.exec_driver_sql(self._q(f"INSERT INTO {table} ({sql.insert_columns}) VALUES ({sql.insert_values})"), rows)
            except sa.exc.IntegrityError as exc:
                raise WrongExpectedVersion(stream, expected_version, current) if "version" in str(exc.orig) else StoreError(
                    f"duplicate event id appending to {stream!r}: {first_line(exc.orig)}"
                ) from None
            if self.dialect == "postgresql":
                pgwatch.announce(c, self._table)
            return start + len(events) - 1

    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        t = self._sql
        sql = f"SELECT {t.read} FROM {self._sql_table} WHERE {t.stream_is} AND {t.version} >= ? ORDER BY {t.version}"
        params: tuple[Any, ...] = (stream, from_version or 0)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._read() as c:
            return [RecordedEvent(*row) for row in self._decoded(c.exec_driver_sql(self._q(sql), params).fetchall())]

    def read_all(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000
    ) -> Iterator[list[RecordedEvent]]:
        for rows in self.read_all_rows(after, until=until, batch_size=batch_size):
            yield [RecordedEvent(*row) for row in rows]

    def read_all_rows(
        self,
        after: int | None = None,
        *,
        until: int | None = None,
        batch_size: int = 1000,
        streams: StreamPartitions | None = None,
        types: Collection[str] | None = None,
        lean: bool = False,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Like :meth:`read_all`, as raw tuples in :class:`RecordedEvent` field order (the fast path).

        ``streams`` and ``types`` are evaluated by the database, so rows left
        out are never fetched: on SQLite a stream's partition is the CRC-32 of
        its name (``eventmig_crc32``, a C function every connection knows), on
        PostgreSQL its ``hashtext``.
        """
        t = self._sql
        conditions = [f"{t.position} > ?"]
        extra: tuple[Any, ...] = ()
        if until is not None:
            conditions.append(f"{t.position} <= ?")
        if types is not None:
            names = sorted(set(types))
            if not names:
                return
            if self.dialect == "postgresql":
                conditions.append(f"{t.type} = ANY(?)")
                extra += (names,)
            else:
                conditions.append(f"{t.type} IN ({', '.join('?' * len(names))})")
                extra += tuple(names)
        filtered = types is not None
        if streams is not None and len(streams.indexes) < streams.count and streams.bounds:
            # name ranges: compared where the rows are, with no call per row back into Python
            name = f'{t.stream_text} COLLATE "C"' if self.dialect == "postgresql" else t.stream_text
            ranges = []
            for low, high in streams.ranges():
                parts = ([f"{name} >= ?"] if low is not None else []) + ([f"{name} < ?"] if high is not None else [])
                extra += tuple(b for b in (low, high) if b is not None)
                ranges.append(" AND ".join(parts) or "1 = 1")
            conditions.append(ranges[0] if len(ranges) == 1 else "(" + " OR ".join(f"({r})" for r in ranges) + ")")
            filtered = True
        elif streams is not None and len(streams.indexes) < streams.count:
            indexes = sorted(streams.indexes)
            wanted = f"= {indexes[0]}" if len(indexes) == 1 else f"IN ({', '.join(map(str, indexes))})"
            conditions.append(f"{self._partition_sql(t.stream_text, streams.count)} {wanted}")
            filtered = True
        sql = self._q(
            f"SELECT {t.lean if lean else t.read} FROM {self._sql_table} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {t.position} LIMIT ?"
        )
        # PostgreSQL guesses a filter on an expression keeps 0.5% of the rows, concludes that walking the
        # primary key until a page is full costs more than sorting the whole remaining range, and does
        # that for every page: make it walk the index, which is right whatever the filter keeps, in one
        # process (parallel workers merging their parts cost more than they save on a page)
        hints = (
            "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
            "set_config('max_parallel_workers_per_gather', '0', true)"
            if filtered and self.dialect == "postgresql" else None
        )
        position = after if after is not None else -1
        while True:
            params = (position,) + ((until,) if until is not None else ()) + extra + (batch_size,)
            try:
                with self.engine.connect() as c:
                    driver = c.connection.driver_connection
                    # PostgreSQL: binary results, so payloads arrive as bytes with no hex decoding
                    cursor = driver.cursor(binary=True) if self.dialect == "postgresql" else driver.cursor()
                    if hints is not None:
                        cursor.execute(hints)
                    cursor.execute(sql, params)
                    rows = cursor.fetchall()
                    cursor.close()
                    if self.dialect == "postgresql":
                        c.connection.driver_connection.rollback()
            except Exception as exc:  # SQLAlchemy's errors, and raw driver errors outside its wrapping
                if is_driver_error(exc):
                    raise store_error(exc, self.url) from None
                raise
            if not rows:
                return
            yield self._decoded(rows)
            if len(rows) < batch_size:
                return
            position = rows[-1][2]

    def _partition_sql(self, column: str, count: int) -> str:
        """The SQL expression of :meth:`stream_partition` (``count`` is an int, never user text).

        For a statement with parameters: psycopg reads a lone ``%`` as one.
        """
        if self.dialect == "postgresql":
            return f"((hashtext({column}) & 2147483647) %% {int(count)})"
        return f"(eventmig_crc32(CAST({column} AS BLOB)) % {int(count)})"

    def stream_partition(self, stream: str, count: int) -> int:
        if self.dialect != "postgresql":
            return super().stream_partition(stream, count)  # the CRC-32 eventmig_crc32 computes
        with self._read() as c:
            return int(c.exec_driver_sql(f"SELECT {self._partition_sql('%s', count)}", (stream,)).scalar())

    @property
    def stream_partitioning(self) -> str:
        return "postgresql-hashtext" if self.dialect == "postgresql" else "crc32"

    def stream_bounds(self, count: int) -> tuple[str, ...]:
        """SQLite: the names of streams at evenly spaced positions (:data:`BOUND_SAMPLES` of them, each
        found through the primary key), cut into ``count`` equal runs once sorted: each range then holds
        about as many events, give or take a percent or two. Its hash partitions call ``eventmig_crc32``
        back in Python for every event a rebuild's worker reads, which costs about a quarter of the read;
        a name range costs two string comparisons. PostgreSQL hashes names natively: ``()``."""
        if self.dialect == "postgresql" or count < 2:
            return ()
        table, position = self._sql_table, self._sql.position
        with self._read() as c:
            # two subqueries: SQLite answers a lone min() or max() from the primary key, both at once by a scan
            low, high = c.exec_driver_sql(
                f"SELECT (SELECT min({position}) FROM {table}), (SELECT max({position}) FROM {table})"
            ).fetchone()
            if low is None:
                return ()
            step = max(1, (high - low + 1) // BOUND_SAMPLES)
            names = sorted(c.exec_driver_sql(
                "WITH RECURSIVE at(position) AS (SELECT ? UNION ALL SELECT position + ? FROM at WHERE position + ? <= ?) "
                f"SELECT e.{self._sql.stream} FROM at CROSS JOIN {table} AS e ON e.{position} = at.position",
                (low, step, step, high),
            ).scalars())
        if len(names) < count:
            return ()
        return tuple(names[len(names) * i // count] for i in range(1, count))

    def position_after(self, after: int | None, count: int, *, until: int | None = None) -> int | None:
        p = self._sql.position
        bound = f" AND {p} <= ?" if until is not None else ""
        params: tuple[Any, ...] = (after if after is not None else -1,) + ((until,) if until is not None else ())
        table = self._sql_table
        with self._read() as c:
            position = c.exec_driver_sql(
                self._q(f"SELECT {p} FROM {table} WHERE {p} > ?{bound} ORDER BY {p} LIMIT 1 OFFSET ?"),
                params + (count - 1,),
            ).scalar()
            if position is None:
                position = c.exec_driver_sql(
                    self._q(f"SELECT max({p}) FROM {table} WHERE {p} > ?{bound}"), params
                ).scalar()
        return position

    def reopen(self, *, for_scans: bool = False) -> SQLEventStore:
        handle = SQLEventStore(
            self._raw_url, table=self.table_base, epoch=self.epoch, read_only=self._db.read_only, layout=self.layout,
            _create_schema=False, _for_scans=for_scans,
        )
        handle._db.fences = list(self._db.fences)  # a worker's writes are fenced by the job's lease
        return handle

    def list_streams(self) -> Iterator[str]:
        with self._read() as c:
            name = self._sql.stream_text
            rows = c.exec_driver_sql(f"SELECT DISTINCT {name} FROM {self._sql_table} ORDER BY {name}").fetchall()
        return iter([r[0] for r in rows])

    def stream_version(self, stream: str) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(
                self._q(f"SELECT max({self._sql.version}) FROM {self._sql_table} WHERE {self._sql.stream_is}"), (stream,)
            ).scalar()

    def stream_versions(self) -> dict[str, int]:
        with self._read() as c:
            t = self._sql
            return dict(c.exec_driver_sql(
                f"SELECT {t.stream_text}, max({t.version}) FROM {self._sql_table} GROUP BY {t.stream_text}").fetchall())

    def head_position(self) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(f"SELECT max({self._sql.position}) FROM {self._sql_table}").scalar()

    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        table = self._sql_table
        if after is None and self.dialect == "sqlite":
            # a bare count(*) walks the smallest index; a position range walks the whole table,
            # so count the tail after ``until`` (new events: usually few) and take it away
            with self._read() as c:
                total = c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                tail = 0 if until is None else c.exec_driver_sql(
                    f"SELECT count(*) FROM {table} WHERE {self._sql.position} > ?", (until,)
                ).scalar()
            return int(total or 0) - int(tail or 0)
        sql = f"SELECT count(*) FROM {table} WHERE {self._sql.position} > ?"
        params: tuple[Any, ...] = (after if after is not None else -1,)
        if until is not None:
            sql += f" AND {self._sql.position} <= ?"
            params += (until,)
        with self._read() as c:
            return int(c.exec_driver_sql(self._q(sql), params).scalar() or 0)

    # -------------------------------------------------------------- epochs
    def epochs(self) -> list[EpochInfo]:
        if not self._bookkept:
            return [EpochInfo(1, "active", None, 0.0)]
        with self._read() as c:
            rows = c.exec_driver_sql(
                "SELECT epoch, status, source_epoch, created_at FROM eventmig_epochs ORDER BY epoch"
            ).fetchall()
        return [EpochInfo(*row) for row in rows]

    def active_epoch(self) -> int:
        if not self._bookkept:
            return 1
        with self._read() as c:
            epoch = c.exec_driver_sql("SELECT epoch FROM eventmig_epochs WHERE status = 'active'").scalar()
        if epoch is None:
            raise StoreError(f"{self.url}: no active epoch recorded in eventmig_epochs")
        return int(epoch)

    def at_epoch(self, epoch: int) -> SQLEventStore:
        if epoch not in {e.epoch for e in self.epochs()}:
            raise StoreError(f"{self.url}: there is no epoch {epoch}")
        handle = SQLEventStore(self._raw_url, table=self.table_base, epoch=epoch, layout=self.layout, _db=self._db)
        handle._bookkept = self._bookkept
        return handle

    def check_new_epoch(self) -> None:
        self._check_writable()
        with self._read() as c:
            self.check_epoch_names(self._next_epoch(c))

    def _next_epoch(self, c: Connection) -> int:
        """One more than any epoch this store ever had: a number, once used, names one epoch for good.

        A dropped epoch (``migrate --restart``) leaves its number to its runs,
        its switches and the read models built from it; a new epoch under the
        same number would pass for the old one.
        """
        return 1 + int(c.exec_driver_sql(
            "SELECT max(n) FROM (SELECT max(epoch) AS n FROM eventmig_epochs UNION ALL "
            "SELECT max(target_epoch) FROM eventmig_runs UNION ALL SELECT max(to_epoch) FROM eventmig_switches) AS used"
        ).scalar() or 0)

    def create_epoch(self, source_epoch: int) -> int:
        self._check_writable()
        with self._write() as c:
            epoch = self._next_epoch(c)
            self.check_epoch_names(epoch)  # before anything of it is created
            # secondary indexes come in finish_epoch: building them after the bulk load is much faster
            self._create_events_table(c, self._parked_name(epoch), epoch, indexes=False)
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
        if self.dialect != "postgresql" or self._db.read_only:
            return
        try:
            with self._write() as c:
                # the size the planner knows (as of the last ANALYZE or VACUUM) against the table's size now:
                # within a tenth of it, the statistics are good enough and ANALYZE would only cost time
                table = self._sql_table
                known, now = c.exec_driver_sql(
                    "SELECT c.relpages, pg_relation_size(c.oid) / current_setting('block_size')::bigint "
                    "FROM pg_class c WHERE c.oid = to_regclass(%s)",
                    (table,),  # to_regclass reads SQL text: the quoted name, or it would fold its case
                ).one()
                if known > 0 and abs(now - known) * 10 <= now:
                    return
                c.exec_driver_sql(f"ANALYZE {table}")
        except StoreError:
            pass  # not the table's owner: the scan is slower, not wrong

    def finish_epoch(self, epoch: int) -> None:
        with self._write() as c:
            active = self._active(c)
            self._create_indexes(c, self._table_name(epoch, active), epoch)
            if self.dialect == "postgresql":
                c.exec_driver_sql(f"ANALYZE {self._names.quote(self._table_name(epoch, active))}")
            c.exec_driver_sql(
                self._q("UPDATE eventmig_epochs SET status = 'ready' WHERE epoch = ? AND status = 'building'"), (epoch,)
            )

    def drop_epoch(self, epoch: int) -> None:
        with self._write() as c:
            active = self._active(c)
            if epoch == active:
                raise StoreError(f"epoch {epoch} is active; switch to another epoch before dropping it")
            c.exec_driver_sql(f"DROP TABLE IF EXISTS {self._names.quote(self._table_name(epoch, active))}")
            es_epochs.forget_epoch(c, self._q, self.table_base, epoch)
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
            quote = self._names.quote
            old_table, new_table = self._sql_base, quote(self._table_name(to_epoch, active))
            parked = quote(self._parked_name(active))  # checked before anything is renamed
            if self.dialect == "postgresql":
                c.exec_driver_sql(f"LOCK TABLE {old_table}, {new_table} IN ACCESS EXCLUSIVE MODE")
            # from here on writers of either table wait (PostgreSQL: the lock above; SQLite: BEGIN IMMEDIATE)
            behind: int | None = None
            for epoch, expected in expect_heads.items():
                head = c.exec_driver_sql(
                    f"SELECT max({self._sql.position}) FROM {quote(self._table_name(epoch, active))}").scalar()
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
            if es_epochs.in_side_table(self.layout):
                es_epochs.before_swap(c, self.dialect, self._sql, kind, old_table, self._table_name(to_epoch, active),
                                      quote)
            c.exec_driver_sql(f"ALTER TABLE {old_table} RENAME TO {parked}")
            c.exec_driver_sql(f"ALTER TABLE {new_table} RENAME TO {old_table}")
            es_epochs.after_swap(c, self._q, self.layout, self._sql, self.table_base, quote)
            c.exec_driver_sql(self._q("UPDATE eventmig_epochs SET status = 'retired' WHERE epoch = ?"), (active,))
            c.exec_driver_sql(self._q("UPDATE eventmig_epochs SET status = 'active' WHERE epoch = ?"), (to_epoch,))
            to_head = c.exec_driver_sql(f"SELECT max({self._sql.position}) FROM {old_table}").scalar()
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
        """Inside the switch transaction: migrate and verify what arrived after ``source_head``.

        ``source`` and ``target``: the two tables as SQL text (quoted).
        """
        t = self._sql
        read = self._q(f"SELECT {t.read} FROM {{}} WHERE {t.position} > ? ORDER BY {t.position}")
        rows = self._decoded(c.exec_driver_sql(read.format(source), (source_head if source_head is not None else -1,)).fetchall())
        events, run = catch_up.prepare([tuple(r) for r in rows])
        if events:
            self._bulk_insert(c, target, events, epoch=run.target_epoch)
        self._save_run(c, run)
        written = self._decoded(c.exec_driver_sql(read.format(target), (target_head if target_head is not None else -1,)).fetchall())
        catch_up.check([tuple(r) for r in rows], [tuple(r) for r in written])

    def lineage(self, positions: Sequence[int]) -> dict[int, Any]:
        if not es_epochs.in_side_table(self.layout):
            return super().lineage(positions)
        with self._read() as c:
            return es_epochs.read_lineage(c, self._q, self.table_base, self.epoch, positions)

    def switches(self) -> list[Switch]:
        if not self._bookkept:
            return []
        with self._read() as c:
            rows = c.exec_driver_sql(
                "SELECT id, kind, from_epoch, to_epoch, at, to_head FROM eventmig_switches ORDER BY id"
            ).fetchall()
        return [Switch(*row) for row in rows]

    def _active(self, c: Connection) -> int:
        return int(c.exec_driver_sql("SELECT epoch FROM eventmig_epochs WHERE status = 'active'").scalar())

    # ------------------------------------------------ migration bookkeeping
    @contextmanager
    def lock(self, name: str, *, ttl_s: float | None = None) -> Iterator[None]:
        """PostgreSQL: a lease (:mod:`~eventmig.backends.sql.lease`) scoped to this schema and events table, so
        stores side by side in one database are independent; every write of this store's handles (those
        :meth:`at_epoch` gives, and :meth:`reopen` copies) checks it in its own transaction. SQLite: an
        flock beside the file, which the kernel releases when its holder dies and a live process cannot lose."""
        if self.dialect == "postgresql":
            with SQLLease(self._db, f"{name}:{self.table_base}", ttl_s=ttl_s or DEFAULT_LEASE_TTL_S, label=name).held():
                yield
        else:
            with _file_lock(self._sqlite_path, name, self.url):
                yield

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
        if not self._bookkept:
            return []
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
        if events:
            self._check_writable()
        with self._write() as c:
            active = self._active(c)
            epoch = self._pinned if self._pinned is not None else active
            table = self._names.quote(self._table_name(epoch, active))
            if epoch == active:
                self._lock_table(c, table)
            elif run is not None:
                self._db.commit_without_flush(c)  # a batch of a new epoch, with its checkpoint: lost, it is copied again
            if events:
                self._bulk_insert(c, table, events, epoch=epoch)
                if epoch == active and self.dialect == "postgresql":
                    pgwatch.announce(c, self.table_base)
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

    def _bulk_insert(self, c: Connection, table: str, events: Sequence[TargetEvent], *, epoch: int) -> None:
        """``table``: SQL text (quoted), the table of ``epoch``."""
        if es_epochs.in_side_table(self.layout):
            es_epochs.write_events(c, self._q, self.dialect, self._sql, self.layout, table, self.table_base, epoch, events)
            return
        if not self._sql.native:
            cursor = c.connection.driver_connection.cursor()
            cursor.executemany(
                self._q(f"INSERT INTO {table} ({self._sql.insert_columns}) VALUES ({self._sql.insert_values})"),
                table_sql.insert_rows(self.layout, events),
            )
        elif self.dialect == "postgresql":
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
        if not self._bookkept:
            return []
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

    # ----------------------------------------------------------- following
    def wait_for_appends(self, timeout: float) -> bool:
        if self.dialect != "postgresql":
            return super().wait_for_appends(timeout)
        if self._listener is None:
            self._listener = pgwatch.Listener(self._raw_url)
        return self._listener.wait(timeout)

    def transactions_marker(self) -> Any:
        if self.dialect != "postgresql":
            return None  # one writer at a time: positions are visible in commit order
        with self._read() as c:
            return pgwatch.transactions_marker(c)

    def transactions_ended(self, marker: Any) -> bool:
        if marker is None:
            return True
        with self._read() as c:
            return pgwatch.transactions_ended(c, marker)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
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
