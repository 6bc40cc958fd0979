"""The SQLAlchemy event store: SQLite (the embedded default) and PostgreSQL.

This module holds the store itself (opening, appending, closing); its schema
setup, reading, epochs and job ledger are mixed in from the ``store_*`` modules
beside it, and the SQLite job locks live in :mod:`~eventmig.backends.sql.file_locks`.

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

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eventmig.errors import ConfigError, StoreError, WrongExpectedVersion
from eventmig.model.events import NewEvent
from eventmig.backends.sql import table_sql
from eventmig.backends.sql.engine import SQLDatabase
from eventmig.errors import first_line
from eventmig.backends.sql.layouts import EVENTMIG, Layout
from eventmig.backends.sql import pgwatch
from eventmig.ports import Capabilities, EventStore
from eventmig.model.records import ExpectedVersion, StreamState
from eventmig.backends.sql.store_epochs import StoreEpochs
from eventmig.backends.sql.store_ledger import StoreLedger
from eventmig.backends.sql.store_reading import StoreReading
from eventmig.backends.sql.store_schema import StoreSchema


class SQLEventStore(StoreLedger, StoreEpochs, StoreReading, StoreSchema, EventStore):
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

    def at_epoch(self, epoch: int) -> SQLEventStore:
        if epoch not in {e.epoch for e in self.epochs()}:
            raise StoreError(f"{self.url}: there is no epoch {epoch}")
        handle = SQLEventStore(self._raw_url, table=self.table_base, epoch=epoch, layout=self.layout, _db=self._db)
        handle._bookkept = self._bookkept
        return handle

    def reopen(self, *, for_scans: bool = False) -> SQLEventStore:
        handle = SQLEventStore(
            self._raw_url, table=self.table_base, epoch=self.epoch, read_only=self._db.read_only, layout=self.layout,
            _create_schema=False, _for_scans=for_scans,
        )
        handle._db.fences = list(self._db.fences)  # a worker's writes are fenced by the job's lease
        return handle

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
