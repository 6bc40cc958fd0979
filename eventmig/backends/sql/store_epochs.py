"""Epochs of the SQL event store: create, finish, switch atomically, roll back, drop.

A switch renames the epoch tables inside one transaction (both SQLite and
PostgreSQL have transactional DDL), after catching up on events appended to
the old epoch meanwhile; that is what makes it atomic and lossless.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from eventmig.backends.sql import eventsourcing_epochs as es_epochs
from eventmig.backends.switching import verified_heads_or_behind
from eventmig.errors import StoreError
from eventmig.ports import CatchUp
from eventmig.model.records import EpochInfo, Switch


class StoreEpochs:
    """The epoch bookkeeping of :class:`~eventmig.backends.sql.store.SQLEventStore`, which mixes this in."""

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
            behind = verified_heads_or_behind(
                lambda epoch: c.exec_driver_sql(
                    f"SELECT max({self._sql.position}) FROM {quote(self._table_name(epoch, active))}").scalar(),
                expect_heads, catch_up, active)
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
