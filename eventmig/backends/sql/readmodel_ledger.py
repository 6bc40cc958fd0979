"""The rebuild bookkeeping of the read-model database: runs, partitions, live models and swaps.

It lives in the read models' own database so that a partition's checkpoint
commits in the same transaction as the states it covers.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from eventmig.ports_readmodels import LiveModel, Partition, RebuildRun, SwapRecord

_json = msgspec.json.Encoder()


class RebuildLedger:
    """Rebuild runs, partitions and swap history of :class:`~eventmig.backends.sql.readmodels.ReadModelDB`, which mixes this in."""

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
