"""The parallel rebuilder: replay the active epoch into shadow read-model tables, verify, swap.

How the work is cut:

* each projection's keys are split into ``partitions`` (one per worker,
  fixed when its run starts so that a resumed run finds every key's state
  where it left it; a ``global_order`` projection has one). Stream-keyed
  projections and snapshots take the store's own partitions of streams:
  ranges of names where the store offers them (:meth:`EventStore.stream_bounds`:
  SQLite, where hashing a name would call back into Python for every
  event), hashes of names otherwise (:meth:`EventStore.stream_partition`:
  ``hashtext`` on PostgreSQL); the run records which, and the ranges;
  other keys are hashed with CRC-32;
* a worker reads each stream partition it owns with
  ``read_all_rows(streams=...)``: the database leaves out the other
  workers' streams, and (with the schema version in metadata) the types no
  projection of the read handles. Other projections share one read of the
  whole epoch. Reads are in commit order, which keeps every key's events in
  stream order;
* what to do with an event is settled once per (stored type, schema
  version): decode straight into the Struct its chain starts from (the head
  Struct for a head event), run plain upcaster chains directly (the
  registry's chains otherwise), then one small function per projection
  updates the key's state in memory;
* every ``batch_size`` events (sooner once it holds
  :data:`MAX_DIRTY_STATES` states not yet stored, or a partition holds more
  unstored states than its cache keeps) a worker commits, in one
  transaction, the states of the keys the batch touched (encoded with msgspec into its
  partitions' state tables) and each partition's checkpoint. A killed
  rebuild resumes from these checkpoints, reloading states on demand; the
  same mechanism lets a worker keep only a bounded number of states in
  memory (least recently touched ones are dropped: they are already stored);
* when a read is over, its partitions' states become rows, bulk-written into
  the shadow tables in one transaction with the partitions' "done" marks:
  from memory, and from the state tables for keys no longer in memory; the
  rows' digests are summed on the way (:class:`~eventmig.ports_readmodels.RowDigest`);
* fewer than :data:`FORK_MIN_EVENTS` events are folded in the calling
  process, partitions and all: worker processes would cost more than they
  save.

Then the parent verifies (row digests of shadow against live tables, see
:meth:`ReadModelSink.compare`; a shadow table is read back only when its
digest from the workers cannot settle it) and swaps the shadow tables in (see
:func:`eventmig.jobs.cutover.swap_read_models`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from eventmig.config import DEFAULT_REBUILD_BATCH_SIZE as DEFAULT_BATCH_SIZE
from eventmig.config import MAX_REBUILD_BATCH_SIZE as MAX_BATCH_SIZE
from eventmig.config import REBUILD_LOCK as LOCK
from eventmig.errors import ConfigError
from eventmig.jobs.appended import touched_rows
from eventmig.jobs.cutover import swap_read_models
from eventmig.jobs.parallel import check_workers
from eventmig.jobs.rebuild.check import verify_runs
from eventmig.jobs.rebuild.plan import Job, finish_shadow, plan_runs
from eventmig.jobs.rebuild.reports import ProjectionReport, RebuildFailed, RebuildReport, TableReport
from eventmig.jobs.rebuild.units import Unit
from eventmig.jobs.rebuild.workers import execute
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.ports import EventStore
from eventmig.ports_readmodels import ReadModelSink, RowDigest, open_read_models
from eventmig.progress import SILENT, Progress, announce_run
from eventmig.retry import RetryPolicy, held, with_retries
from eventmig.projection.api import Projection
from eventmig.projection.binding import Binding

__all__ = ["ProjectionReport", "RebuildFailed", "RebuildReport", "TableReport", "rebuild", "select_projections"]



def rebuild(
    store: EventStore,
    projections: Sequence[Projection],
    *,
    registry: CompiledRegistry | Registry,
    read_models: str | ReadModelSink | None = None,
    names: Sequence[str] | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    accept_changes: bool = False,
    swap: bool = True,
    restart: bool = False,
    retry: RetryPolicy = RetryPolicy(),
    progress: Progress = SILENT,
) -> RebuildReport:
    """Rebuild projections from the store's active epoch into their read-model tables.

    ``names`` selects projections (default: all). ``read_models`` is the
    read-model database (URL or handle; default: the store's own database).
    Shadow tables are verified against the live ones and swapped in unless
    ``swap`` is false; a projection whose version changed may only replace
    rows that differ with ``accept_changes``. ``restart`` abandons unfinished
    runs instead of resuming them. A lost connection (of the workers too) is
    retried as ``retry`` says, resuming from the committed checkpoints.
    """
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch size must be between 1 and {MAX_BATCH_SIZE:,}, got {batch_size!r}")
    compiled = registry.compile() if isinstance(registry, Registry) else registry
    selected = select_projections(projections, names)
    workers = check_workers(workers)
    owns_db = read_models is None or isinstance(read_models, str)
    db = open_read_models(read_models or _store_url(store)) if owns_db else read_models  # type: ignore[arg-type]
    try:
        for projection in selected:  # names a rebuild would derive and the database would cut: before anything is written
            db.check_names(projection.name, projection.tables)
        urls = store.url if db.url == store.url else f"{store.url} or {db.url}"
        retried = {"job": "rebuild", "store_url": urls, "resume": "eventmig rebuild", "policy": retry, "progress": progress}
        with held(lambda: db.lock(LOCK), **retried):
            return with_retries(
                lambda attempt: _rebuild(store, selected, compiled, db, workers, batch_size, accept_changes, swap,
                                         restart and attempt == 1, progress),
                **retried,
            )
    finally:
        if owns_db:
            db.close()


def select_projections(projections: Sequence[Projection], names: Sequence[str] | None) -> list[Projection]:
    by_name = {p.name: p for p in projections}
    if not names:
        if not by_name:
            raise ConfigError("no projections configured: list them in the projections module ([tool.eventmig] projections)")
        return list(by_name.values())
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(sorted(by_name)) or 'none'}")
    return [by_name[n] for n in dict.fromkeys(names)]


def _store_url(store: EventStore) -> str:
    url = getattr(store, "_raw_url", None)
    if not url:
        raise ConfigError("give the read-model database URL (read_models=...)")
    return url



def _rebuild(
    store: EventStore,
    selected: list[Projection],
    compiled: CompiledRegistry,
    db: ReadModelSink,
    workers: int,
    batch_size: int,
    accept_changes: bool,
    swap: bool,
    restart: bool,
    progress: Progress,
) -> RebuildReport:
    started = time.perf_counter()
    binding = Binding(selected, compiled)  # validates the projections against the registry up front
    epoch = store.active_epoch()
    source = store.at_epoch(epoch)
    source.refresh_statistics()
    head = source.head_position()
    job = plan_runs(db, selected, epoch, head, workers, restart, source)
    for run in job.runs:
        announce_run(progress, run.id, f"rebuild {run.projection}")
    units, events_read, processes, written = _fold_pending(source, db, binding, job, workers, batch_size, progress)
    folded = time.perf_counter()
    reports, problems = verify_runs(
        db, job, accept_changes, written, lambda p, since, until: touched_rows(source, compiled, p, since, until),
    )
    verified = time.perf_counter()
    swapped = False
    if swap and not problems:
        swap_read_models(db, job.runs, {p.name: p for p in selected})
        swapped = True
        for r in reports:
            r.status = "swapped"
    timings = {
        "fold": round(folded - started, 3),
        "verify": round(verified - folded, 3),
        "swap": round(time.perf_counter() - verified, 3) if swapped else 0.0,
    }
    seconds = time.perf_counter() - started
    return RebuildReport(
        ok=not problems,
        store=store.url,
        read_models=db.url,
        epoch=epoch,
        until=max((r.until for r in job.runs if r.until is not None), default=None),
        events_read=events_read,
        seconds=round(seconds, 3),
        events_per_second=round(events_read / seconds, 1) if seconds else 0.0,
        workers=min(workers, max(1, len(units))) if units else 0,
        processes=processes,
        swapped=swapped,
        projections=reports,
        timings=timings,
        notes=job.notes,
        problems=problems,
    )


def _fold_pending(
    source: EventStore, db: ReadModelSink, binding: Binding, job: Job, workers: int, batch_size: int,
    progress: Progress,
) -> tuple[list[Unit], int, int, dict[tuple[str, str], RowDigest]]:
    """Fold the partitions not done yet and finish the shadow tables of the runs that were folding.

    Returns the units folded, the events read, the worker processes started and the digests of the rows written.
    """
    units = [
        Unit(run, p, job.projections[run.projection], db.state_table(run.id, p.partition))
        for run in job.runs for p in db.partitions(run.id) if p.status != "done"
    ]
    events_read = processes = 0
    written: dict[tuple[str, str], RowDigest] = {}
    if units:
        events_read, processes, written = execute(source, db, binding, job, units, workers, batch_size, progress)
    for run in job.runs:
        if run.status == "running":
            finish_shadow(db, job.projections[run.projection], run)
    return units, events_read, processes, written
