"""The job ledger of the SQL event store: runs, their checkpoints, migrated batches and quarantine.

A migration's batch, its checkpoint and its quarantined events commit in one
transaction, so a run resumed after a crash neither skips nor repeats events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from eventmig.backends.sql import table_sql
from eventmig.backends.sql.lease import DEFAULT_LEASE_TTL_S, SQLLease
from eventmig.backends.sql import pgwatch
from eventmig.model.records import QuarantinedEvent, Run, TargetEvent
from eventmig.backends.sql.file_locks import file_lock

_EVENT_COLUMNS = "stream, version, event_id, type, data, metadata, recorded_at"
_QUARANTINE_COLUMNS = (
    "run_id, stream, version, position, event_id, type, data, metadata, recorded_at, reason, accepted"
)
_RUN_COLUMNS = (
    "id, kind, source_epoch, target_epoch, status, checkpoint, fingerprint, started_at, updated_at, stats, options"
)
_json = msgspec.json.Encoder()


class StoreLedger:
    """Runs, batches and quarantine of :class:`~eventmig.backends.sql.store.SQLEventStore`, which mixes this in."""

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
            with file_lock(self._sqlite_path, name, self.url):
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
                self._bulk_insert(c, table, events)
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

    def _bulk_insert(self, c: Connection, table: str, events: Sequence[TargetEvent]) -> None:
        """``table``: SQL text (quoted)."""
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
