"""The runs of a rebuild: resume each projection's unfinished run or start one with its shadow and state tables."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from eventmig.ports import EventStore
from eventmig.ports_readmodels import RUN_ID_LENGTH, ReadModelSink, RebuildRun
from eventmig.projection.api import STREAM, Projection


#: a run's ``stream_partitioning`` when its streams are cut into the name ranges its ``stream_bounds`` give
RANGES = "ranges"


class Job:
    """The runs of one rebuild invocation and what they need."""

    def __init__(self) -> None:
        self.runs: list[RebuildRun] = []
        self.projections: dict[str, Projection] = {}
        self.resumed: dict[str, bool] = {}
        self.notes: list[str] = []

def plan_runs(
    db: ReadModelSink, selected: list[Projection], epoch: int, head: int | None, workers: int, restart: bool,
    source: EventStore,
) -> Job:
    """Resume each projection's unfinished run, or start a new one with its shadow tables."""
    job = Job()
    partitioning = source.stream_partitioning
    bounds: dict[int, tuple[str, ...]] = {}

    def streams_of(partitions: int) -> dict[str, Any]:
        """How a new run cuts streams, the same for every run of this invocation (so they share reads)."""
        if partitions not in bounds:
            bounds[partitions] = source.stream_bounds(partitions)
        if bounds[partitions]:
            return {"stream_partitioning": RANGES, "stream_bounds": list(bounds[partitions])}
        return {"stream_partitioning": partitioning}
    with db.write() as conn:
        existing = db.runs(conn=conn)
        for projection in selected:
            job.projections[projection.name] = projection
            fingerprint = projection.fingerprint()
            run = None
            for old in existing:
                if old.projection != projection.name or old.status not in ("running", "folded", "verified"):
                    continue
                reason = None
                if restart:
                    reason = "--restart"
                elif old.fingerprint != fingerprint:
                    reason = "the projection's code changed since it started"
                elif old.epoch != epoch:
                    reason = f"it replays epoch {old.epoch} and epoch {epoch} is now active"
                elif old.status != "running" and old.until != head:
                    reason = "events were appended since it finished"
                elif (
                    old.status == "running" and projection.key is STREAM and old.partitions > 1
                    and old.stats.get("stream_partitioning", "crc32") not in (partitioning, RANGES)
                ):
                    reason = f"its streams were partitioned by {old.stats.get('stream_partitioning', 'crc32')}"
                if reason is None and run is None:
                    run = old
                    continue
                _abandon(db, conn, old)
                job.notes.append(f"{projection.name}: abandoned run {old.id} ({reason or 'superseded'})")
            if run is None:
                run = _new_run(db, conn, projection, fingerprint, epoch, head, workers, streams_of)
                job.resumed[projection.name] = False
            else:
                job.resumed[projection.name] = True
                job.notes.append(f"{projection.name}: resuming run {run.id}")
            job.runs.append(run)
    return job


def _new_run(
    db: ReadModelSink, conn: Any, projection: Projection, fingerprint: str, epoch: int, head: int | None,
    workers: int, streams_of: Callable[[int], dict[str, Any]],
) -> RebuildRun:
    run_id = uuid.uuid4().hex[:RUN_ID_LENGTH]
    partitions = 1 if projection.global_order else workers
    now = time.time()
    tables = {str(t.name): db.shadow_name(t.name, run_id) for t in projection.tables}
    run = RebuildRun(
        id=run_id, projection=projection.name, version=projection.version, fingerprint=fingerprint, status="running",
        partitions=partitions, epoch=epoch, until=head, started_at=now, updated_at=now, tables=tables,
        # a resumed run must find each stream in the partition it was folded in
        stats=streams_of(partitions) if projection.key is STREAM and partitions > 1 else {},
    )
    for table in projection.tables:
        db.create_shadow(conn, table, tables[table.name], run_id)  # secondary indexes come after the bulk load
    for p in range(partitions):
        db.create_state_table(conn, db.state_table(run_id, p))
    db.create_partitions(run_id, partitions, conn)
    db.save_run(run, conn)
    return run


def _abandon(db: ReadModelSink, conn: Any, run: RebuildRun) -> None:
    db.drop_tables(conn, list(run.tables.values()) + [db.state_table(run.id, p) for p in range(run.partitions)])
    run.status = "abandoned"
    run.updated_at = time.time()
    db.save_run(run, conn)


def finish_shadow(db: ReadModelSink, projection: Projection, run: RebuildRun) -> None:
    """All partitions are in: build the shadow tables' secondary indexes, mark the run folded."""
    with db.write() as conn:
        for table in projection.tables:
            db.index_shadow(conn, table, run.tables[table.name], run.id)
        parts = db.partitions(run.id, conn)
        db.drop_tables(conn, [db.state_table(run.id, p.partition) for p in parts])  # all in the shadow tables now
        run.status = "folded"
        run.updated_at = time.time()
        run.stats = {
            **run.stats, "keys": sum(p.keys for p in parts), "events": max((p.events for p in parts), default=0),
        }
        db.save_run(run, conn)
