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
  rows' digests are summed on the way (:class:`WrittenDigest`);
* fewer than :data:`FORK_MIN_EVENTS` events are folded in the calling
  process, partitions and all: worker processes would cost more than they
  save.

Then the parent verifies (row digests of shadow against live tables, see
:meth:`ReadModelDB.compare`; a shadow table is read back only when its
digest from the workers cannot settle it) and swaps the shadow tables in (see
:func:`eventmig.jobs.cutover.swap_read_models`).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import queue as queue_module
import signal
import time
import uuid
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from operator import itemgetter
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from eventmig.jobs.cutover import swap_read_models
from eventmig.config import DEFAULT_REBUILD_BATCH_SIZE as DEFAULT_BATCH_SIZE
from eventmig.config import MAX_REBUILD_BATCH_SIZE as MAX_BATCH_SIZE
from eventmig.config import REBUILD_LOCK as LOCK
from eventmig.errors import ConfigError, EventmigError, ExitCode, UpcastError
from eventmig.progress import SILENT, Progress, announce_run
from eventmig.retry import RetryPolicy, held, is_transient, with_retries
from eventmig.model.events import MetadataKey
from eventmig.jobs.parallel import check_workers, ignore_interrupts, interrupts_held
from eventmig.projection.api import (
    KEY_INDEXED,
    KEY_STREAM,
    SLOW,
    STREAM,
    Binding,
    Index,
    Projection,
    _MISSING,
    _DELETED,
)
from eventmig.jobs.appended import Touched, touched_rows
from eventmig.projection.fold import evolve
from eventmig.model.nesting import deepest
from eventmig.backends.sql.readmodels import (
    RUN_ID_LENGTH,
    LiveModel,
    Partition,
    ReadModelDB,
    RebuildRun,
    TableDiff,
    WrittenDigest,
    replace_in_digest,
)
from eventmig.backends.sql.engine import first_line
from eventmig.ports import EventStore
from eventmig.model.records import StreamPartitions
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry

#: a run's ``stream_partitioning`` when its streams are cut into the name ranges its ``stream_bounds`` give
RANGES = "ranges"
#: events per read from the store
READ_PAGE = 10_000
#: states a worker keeps in memory per partition; older ones are reloaded from the state table when touched
#: again. A partition's states that are in memory when its read ends become rows straight away; the others
#: are read back from its state table first, which costs more than keeping them: states are small (a few
#: hundred bytes), so hold tens of thousands (a projection with big states sets its own ``cache_size``)
DEFAULT_CACHE_KEYS = 50_000
#: states a worker holds that are not stored yet: past this many (or past a partition's cache size in one
#: partition) it commits before its batch is over, which bounds its memory whatever the batch size and however
#: many projections it folds
MAX_DIRTY_STATES = 100_000
#: states turned into rows at once when a partition is finished
_ROWS_PER_WRITE = 10_000


class RebuildFailed(EventmigError):
    """A worker failed; the message says why, the exit code is the original error's."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.RUNTIME, transient: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        #: the worker lost its connection (or the like): the rebuild retries from its checkpoints
        self.transient = transient


# ====================================================================== reports
class TableReport(msgspec.Struct):
    table: str
    rows: int
    live_rows: int
    digest: str
    live_digest: str | None
    added: int
    removed: int
    changed: int
    sample: list[str]


class ProjectionReport(msgspec.Struct):
    name: str
    version: int
    live_version: int | None
    run_id: str
    partitions: int
    resumed: bool
    keys: int
    status: str  # "swapped" | "verified" | "refused"
    tables: list[TableReport]
    problems: list[str] = []


class RebuildReport(msgspec.Struct):
    ok: bool
    store: str
    read_models: str
    epoch: int
    until: int | None
    #: events of the epoch replayed (from the earliest checkpoint of a resumed run)
    events_read: int
    seconds: float
    events_per_second: float
    #: the worker slots the partitions were spread over
    workers: int
    swapped: bool
    projections: list[ProjectionReport]
    #: seconds spent folding into shadow tables, verifying them, swapping them in
    timings: dict[str, float] = {}
    notes: list[str] = []
    problems: list[str] = []
    #: worker processes started for them; 0 when this process folded every slot (small inputs)
    processes: int = 0


# ======================================================================== API
def rebuild(
    store: EventStore,
    projections: Sequence[Projection],
    *,
    registry: CompiledRegistry | Registry,
    read_models: str | ReadModelDB | None = None,
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
    owns_db = not isinstance(read_models, ReadModelDB)
    db = read_models if isinstance(read_models, ReadModelDB) else ReadModelDB(read_models or _store_url(store))
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


# ================================================================== the job
class _Job:
    """The runs of one rebuild invocation and what they need."""

    def __init__(self) -> None:
        self.runs: list[RebuildRun] = []
        self.projections: dict[str, Projection] = {}
        self.resumed: dict[str, bool] = {}
        self.notes: list[str] = []


def _rebuild(
    store: EventStore,
    selected: list[Projection],
    compiled: CompiledRegistry,
    db: ReadModelDB,
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
    job = _plan(db, selected, epoch, head, workers, restart, source)
    for run in job.runs:
        announce_run(progress, run.id, f"rebuild {run.projection}")
    units = [
        _Unit(run, p, job.projections[run.projection]) for run in job.runs for p in db.partitions(run.id)
        if p.status != "done"
    ]
    events_read = processes = 0
    written: dict[tuple[str, str], WrittenDigest] = {}
    if units:
        events_read, processes, written = _execute(source, db, binding, job, units, workers, batch_size, progress)
    for run in job.runs:
        if run.status == "running":
            _finish_shadow(db, job.projections[run.projection], run)
    folded = time.perf_counter()
    reports, problems = _verify(
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


def _plan(
    db: ReadModelDB, selected: list[Projection], epoch: int, head: int | None, workers: int, restart: bool,
    source: EventStore,
) -> _Job:
    """Resume each projection's unfinished run, or start a new one with its shadow tables."""
    job = _Job()
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
    db: ReadModelDB, conn: sa.Connection, projection: Projection, fingerprint: str, epoch: int, head: int | None,
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
        shadow = shadow_table(db, table, tables[table.name], run_id)
        conn.execute(CreateTable(shadow))  # secondary indexes come after the bulk load
    for p in range(partitions):
        db.create_state_table(conn, db.state_table(run_id, p))
    db.create_partitions(run_id, partitions, conn)
    db.save_run(run, conn)
    return run


def _abandon(db: ReadModelDB, conn: sa.Connection, run: RebuildRun) -> None:
    db.drop_tables(conn, list(run.tables.values()) + [db.state_table(run.id, p) for p in range(run.partitions)])
    run.status = "abandoned"
    run.updated_at = time.time()
    db.save_run(run, conn)


def shadow_table(db: ReadModelDB, table: sa.Table, name: str, run_id: str) -> sa.Table:
    """A copy of ``table`` named ``name``, its named indexes and constraints named ``<name>__<run id>`` (names
    are per schema: the live table's own keep theirs). Constraints without a name get one from the database."""
    copy = table.to_metadata(sa.MetaData(), name=name)
    for item in (*copy.indexes, *copy.constraints):
        if isinstance(item.name, str) and item.name:
            item.name = db.shadow_name(str(item.name), run_id)
    return copy


def _finish_shadow(db: ReadModelDB, projection: Projection, run: RebuildRun) -> None:
    """All partitions are in: build the shadow tables' secondary indexes, mark the run folded."""
    with db.write() as conn:
        for table in projection.tables:
            shadow = shadow_table(db, table, run.tables[table.name], run.id)
            for index in shadow.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))
        parts = db.partitions(run.id, conn)
        db.drop_tables(conn, [db.state_table(run.id, p.partition) for p in parts])  # all in the shadow tables now
        run.status = "folded"
        run.updated_at = time.time()
        run.stats = {
            **run.stats, "keys": sum(p.keys for p in parts), "events": max((p.events for p in parts), default=0),
        }
        db.save_run(run, conn)


# ================================================================ verification
def _verify(
    db: ReadModelDB, job: _Job, accept_changes: bool, written: dict[tuple[str, str], WrittenDigest],
    touched: Callable[[Projection, int | None, int], Touched],
) -> tuple[list[ProjectionReport], list[str]]:
    """Compare each run's shadow tables with the live ones. A shadow table every partition of which was
    written by this invocation has the digest of its rows already (:class:`WrittenDigest`): it is read
    back only if that digest is not exact, or differs from the live table's. ``touched`` gives the rows
    events appended since live tables were built changed (:func:`eventmig.jobs.appended.touched_rows`)."""
    reports: list[ProjectionReport] = []
    problems: list[str] = []
    with db.read() as conn:
        live = db.live_models(conn)
        built = {r.id: r for r in db.runs(conn=conn)}
        for run in job.runs:
            projection = job.projections[run.projection]
            model: LiveModel | None = live.get(projection.name)
            tables: list[TableReport] = []
            any_live = False
            for table in projection.tables:
                live_name = table.name if db.table_exists(table.name, conn) else None
                any_live = any_live or live_name is not None
                digest = written.get((run.id, table.name))
                whole = digest is not None and sorted(digest.partitions) == list(range(run.partitions))
                diff = db.compare(conn, table, live_name, run.tables[table.name], written=digest if whole else None)
                tables.append(_table_report(diff))
            differs = any(t.added or t.removed or t.changed for t in tables) and any_live
            live_version = model.version if model is not None else None
            report = ProjectionReport(
                name=projection.name, version=projection.version, live_version=live_version, run_id=run.id,
                partitions=run.partitions, resumed=job.resumed.get(projection.name, False),
                keys=int(run.stats.get("keys", 0)), status="verified", tables=tables,
            )
            if differs:
                summary = ", ".join(
                    f"{t.table}: {t.added} added, {t.removed} removed, {t.changed} changed" for t in tables
                    if t.added or t.removed or t.changed
                )
                earlier = built.get(model.run_id) if model else None
                stale = _other_epoch(earlier, run)
                appended = _appended_since(earlier, run)
                if live_version == projection.version and stale is not None:
                    job.notes.append(f"{projection.name} v{projection.version}: {summary}, {stale}")
                elif live_version == projection.version and earlier is not None and appended is not None:
                    unexplained = _unexplained(db, projection, run, tables, touched(projection, earlier.until, run.until))
                    if unexplained is None:
                        job.notes.append(f"{projection.name} v{projection.version}: {summary}, {appended}")
                    else:
                        report.problems.append(
                            f"{projection.name} v{projection.version} rows differ from the live tables ({summary}) "
                            f"beyond what {unexplained} appended after position {earlier.until} explain: the live "
                            "tables were changed outside eventmig, or the projection's code gives other rows for "
                            "the same events"
                        )
                elif live_version == projection.version:
                    report.problems.append(
                        f"{projection.name} v{projection.version} rows differ from the live tables although its version "
                        f"did not change ({summary}): bump the projection's version if the change is intended"
                    )
                elif not accept_changes:
                    was = f"v{live_version}" if live_version is not None else "unversioned tables"
                    report.problems.append(
                        f"{projection.name} v{projection.version} (live: {was}) changes rows ({summary}): "
                        "pass --accept-changes to swap them in"
                    )
            if report.problems:
                report.status = "refused"
                problems.extend(report.problems)
            reports.append(report)
    with db.write() as conn:
        for run in job.runs:
            if run.status == "folded":
                run.status = "verified"
                run.updated_at = time.time()
                db.save_run(run, conn)
    return reports, problems


def _appended_since(live: RebuildRun | None, run: RebuildRun) -> str | None:
    """Why rows of an unchanged projection may differ from its live tables: events appended since they were built.

    Only when the live tables are a rebuild of the same code over the same
    epoch up to an earlier position: then the differences are the new
    events' doing, not a change of the code, and refusing would leave no way
    to bring the tables up to date short of a version bump. Anything else
    (other code, another epoch) is None: a difference to refuse. Even then
    only the rows those events touch may differ (:func:`_unexplained`): a row
    edited by hand is refused however many events were appended.
    """
    if live is None or live.fingerprint != run.fingerprint or live.epoch != run.epoch or run.until is None:
        return None
    if live.until is not None and live.until >= run.until:
        return None
    since = f"after position {live.until}" if live.until is not None else "since"
    return f"from events appended {since} (the live tables were built by run {live.id} of the same code)"


def _other_epoch(live: RebuildRun | None, run: RebuildRun) -> str | None:
    """Why rows of an unchanged projection may differ from its live tables: those are stale, built from another
    epoch than the active one (before a switch, or from an epoch a rollback left). A migration renumbers
    streams and rewrites payloads, so the rows may differ; the live ones match no active epoch, so there is
    nothing to protect. None when the live tables are of this epoch (or eventmig did not build them)."""
    if live is None or live.epoch == run.epoch:
        return None
    return f"replacing stale tables built from epoch {live.epoch} (epoch {run.epoch} is active)"


def _unexplained(
    db: ReadModelDB, projection: Projection, run: RebuildRun, tables: list[TableReport], change: Touched
) -> str | None:
    """None if the live tables are the rebuilt ones with the touched keys' rows as they were before the
    appended events; otherwise what those events were, for the refusal. Each live table's digest and count
    must be the shadow's, less the touched rows of now, plus those of then. Those rows are written into
    scratch tables and read back, so that their digests are what the database gives back (a float column,
    a date), and dropped again."""
    with db.write() as conn:
        for table, report in zip(projection.tables, tables):
            then = _stored_digest(db, conn, table, "was", change.then[table.name])
            now = _stored_digest(db, conn, table, "now", change.now[table.name])
            expected = replace_in_digest(report.digest, now[0], then[0])
            if (report.live_digest, report.live_rows) != (expected, report.rows - now[1] + then[1]):
                return f"the {change.events} event(s) (touching {change.keys} key(s))"
    return None


def _stored_digest(
    db: ReadModelDB, conn: sa.Connection, table: sa.Table, scratch_id: str, rows: list[tuple[Any, ...]]
) -> tuple[str, int]:
    """The digest and count of ``rows`` as the database gives them back from a scratch copy of ``table``
    (``<table>__was`` or ``__now``: shorter than a shadow's ``__<run id>``, so within the checked names)."""
    name = db.shadow_name(table.name, scratch_id)
    scratch = shadow_table(db, table, name, scratch_id)
    conn.execute(CreateTable(scratch))
    db.bulk_insert(conn, name, [c.name for c in table.columns], rows)
    digest = db.table_digest(conn, table, name)
    db.drop_tables(conn, [name])
    return digest


def _table_report(diff: TableDiff) -> TableReport:
    return TableReport(
        str(diff.table), diff.rows, diff.live_rows, diff.digest, diff.live_digest, diff.added, diff.removed, diff.changed,
        list(diff.sample),
    )


# ==================================================================== workers
class _Unit:
    """One partition of one run, as a worker folds it."""

    def __init__(self, run: RebuildRun, partition: Partition, projection: Projection) -> None:
        self.run = run
        self.partition = partition.partition
        self.checkpoint = partition.checkpoint
        self.events = partition.events
        self.keys = partition.keys
        self.folded = partition.status == "folded"
        self.done = False
        self.until = run.until
        self.state_table = ReadModelDB.state_table(run.id, partition.partition)
        #: the store's stream partitions this unit's events come from, when the store filters them
        self.streams = (
            StreamPartitions.of(partition.partition, run.partitions, run.stats.get("stream_bounds", ()))
            if projection.key is STREAM and run.partitions > 1 else None
        )

    @property
    def label(self) -> str:
        return f"{self.run.projection}" + (f" p{self.partition}" if self.run.partitions > 1 else "")

    @property
    def pending(self) -> bool:
        return not self.folded and self.until is not None


def _assign(units: list[_Unit], workers: int) -> list[list[_Unit]]:
    """Partitions spread round-robin; single-partition (global-order) runs go to the least loaded worker."""
    workers = max(1, min(workers, len(units)))
    slots: list[list[_Unit]] = [[] for _ in range(workers)]
    parted = sorted((u for u in units if u.run.partitions > 1), key=lambda u: (u.partition, u.run.projection))
    for u in parted:
        slots[u.partition % workers].append(u)
    for u in (u for u in units if u.run.partitions == 1):
        min(reversed(slots), key=len).append(u)
    return [s for s in slots if s]


def _scan_keys(units: list[_Unit]) -> dict[Any, list[_Unit]]:
    """The reads a worker makes: one per stream partition of stream-keyed runs (the store keeps
    only that partition's events), one of everything for the other units."""
    scans: dict[Any, list[_Unit]] = {}
    for unit in units:
        if unit.pending:
            scans.setdefault(unit.streams, []).append(unit)
    return scans


#: below this many events to replay, worker processes cost more than they save: fold in this process; above
#: it, no process for fewer than half as many events (partitions share the processes there are)
FORK_MIN_EVENTS = 50_000


def _execute(
    source: EventStore, db: ReadModelDB, binding: Binding, job: _Job, units: list[_Unit], workers: int, batch_size: int,
    progress: Progress,
) -> tuple[int, int, dict[tuple[str, str], WrittenDigest]]:
    """Fold the units, in worker processes or in this one; return (events replayed, processes started, digests
    of the rows written per (run id, shadow table))."""
    counted: dict[tuple[int | None, int | None], int] = {}
    reader = _scan_handle(source)  # counts and reads here leave no page cache behind for workers to inherit
    try:
        events = _events_to_read(reader, units, counted)
        share = FORK_MIN_EVENTS // 2
        plan = _assign(units, min(workers, -(-events // share)) if share > 0 else workers)
        if len(plan) == 1 or events < FORK_MIN_EVENTS:
            with ExitStack() as stack:
                bars = _progress_bars(stack, progress, _scan_totals(reader, units, counted))
                stack.enter_context(_fewer_collections())
                _read, written = _fold_units(reader, db, binding, job, units, batch_size, lambda k, n: bars[k].advance(n))
            return events, 0, written
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigError("parallel rebuilds need the fork start method (Linux, macOS); use --workers 1")
        totals = [_scan_totals(reader, slot, counted) for slot in plan]
    finally:
        if reader is not source:
            reader.close()
    ctx = multiprocessing.get_context("fork")
    messages = ctx.Queue()
    # every worker opens connections of its own (reopen) and never touches the ones it inherits; closing
    # ours here would only make SQLite checkpoint its WAL into the file (and fsync it) on the last close
    procs = []
    for i, slot in enumerate(plan):
        proc = ctx.Process(
            target=_worker_main, args=(i, source, db, binding, job, slot, batch_size, messages), daemon=True,
            name=f"eventmig-rebuild-{i}",
        )
        procs.append(proc)
    with ExitStack() as stack:
        bars = [_progress_bars(stack, progress, slot_totals) for slot_totals in totals]
        with interrupts_held():
            for proc in procs:
                proc.start()
        done: set[int] = set()
        written: dict[tuple[str, str], WrittenDigest] = {}
        failure: tuple[str, int] | None = None
        try:
            while len(done) < len(procs) and failure is None:
                try:
                    message = messages.get(timeout=0.2)
                except queue_module.Empty:
                    for i, proc in enumerate(procs):
                        if i not in done and not proc.is_alive() and proc.exitcode != 0:
                            failure = (f"rebuild worker {i} died (exit code {proc.exitcode})", int(ExitCode.RUNTIME), False)
                    continue
                kind, i, payload = message
                if kind == "progress":
                    scan, n = payload
                    bars[i][scan].advance(n)
                elif kind == "done":
                    done.add(i)
                    for key, digest in payload.items():
                        written.setdefault(key, WrittenDigest()).merge(digest)
                    for bar in bars[i]:
                        bar.finish()
                elif kind == "error":
                    failure = payload
        finally:
            if failure is not None or len(done) < len(procs):
                for proc in procs:
                    if proc.is_alive():
                        proc.kill()
            for proc in procs:
                proc.join()
        if failure is not None:
            raise RebuildFailed(failure[0], ExitCode(failure[1]), transient=failure[2])
    return events, len(procs), written


def _scan_handle(source: EventStore) -> EventStore:
    """A handle of its own for the rebuild's long reads, tuned for them where the backend can."""
    try:
        return source.reopen(for_scans=True)
    except NotImplementedError:
        return source


class _Clamped:
    """A progress task whose total is an estimate: never past it, and complete when the work is."""

    def __init__(self, task: Any, total: int) -> None:
        self.task = task
        self.left = total

    def advance(self, n: int) -> None:
        n = min(n, self.left)
        if n > 0:
            self.left -= n
            self.task.advance(n)

    def finish(self) -> None:
        self.advance(self.left)


def _label(slot: list[_Unit]) -> str:
    return "rebuild " + ", ".join(u.label for u in slot)


def _scan_totals(
    source: EventStore, slot: list[_Unit], counted: dict[tuple[Any, Any], int]
) -> list[tuple[str, int]]:
    """A progress bar per read a slot's worker makes (one per stream partition): its label and about how
    many events it returns, in the order of the worker's reads (:func:`_scan_keys`)."""
    out = []
    for streams, members in _scan_keys(slot).items():
        share = 1.0 if streams is None else len(streams.indexes) / streams.count
        out.append((_label(members), round(_events_to_read(source, members, counted) * share)))
    return out


def _progress_bars(stack: ExitStack, progress: Progress, totals: list[tuple[str, int]]) -> list[_Clamped]:
    return [_Clamped(stack.enter_context(progress.task(label, total)), total) for label, total in totals]


def _events_to_read(source: EventStore, slot: list[_Unit], counted: dict[tuple[Any, Any], int]) -> int:
    """Events of the epoch the slot's pending units replay (from the earliest checkpoint)."""
    pending = [u for u in slot if u.pending]
    if not pending:
        return 0
    after = min((u.checkpoint for u in pending), key=lambda c: -1 if c is None else c)
    until = max(u.until for u in pending if u.until is not None)
    if (after, until) not in counted:
        counted[(after, until)] = source.count_events(after=after, until=until)
    return counted[(after, until)]


def _worker_main(
    i: int, source: EventStore, db: ReadModelDB, binding: Binding, job: _Job, slot: list[_Unit], batch_size: int,
    messages: Any,
) -> None:
    ignore_interrupts()  # Ctrl-C is the parent's to handle: it stops the workers
    _die_with_parent()
    _relax_gc()
    parent = os.getppid()
    try:
        store = source.reopen(for_scans=True)
        own_db = db.reopen()

        def advance(scan: int, n: int) -> None:
            if os.getppid() != parent:
                os._exit(1)  # the parent is gone: stop, the checkpoints are committed
            messages.put(("progress", i, (scan, n)))

        _events, written = _fold_units(store, own_db, binding, job, slot, batch_size, advance)
        messages.put(("done", i, written))
    except EventmigError as exc:
        messages.put(("error", i, (str(exc), int(exc.exit_code), is_transient(exc))))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent in one line
        messages.put(("error", i, (f"rebuild worker {i}: {type(exc).__name__}: {first_line(exc)}",
                                   int(ExitCode.RUNTIME), is_transient(exc))))
    finally:
        messages.close()
        messages.join_thread()


#: collection thresholds while folding: generation 0 every 50,000 allocations rather than 700
_FOLD_GC_THRESHOLD = (50_000, 20, 20)


def _relax_gc() -> None:
    """Keep the cycle collector out of a worker's way.

    A worker folds hundreds of thousands of short-lived rows into states
    that live to the end; it makes no cycles worth collecting early. With
    the default thresholds the collector runs every 700 allocations and now
    and then walks every object, the parent's imports included: each walk
    also writes to the pages the worker shares with its parent, copying
    them. Freezing what was inherited and collecting less often saved about
    8% of the workers' CPU time on the shop benchmark.
    """
    gc.freeze()
    gc.set_threshold(*_FOLD_GC_THRESHOLD)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """:func:`_relax_gc` for a fold in the caller's process: thresholds only, restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(*_FOLD_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the rebuild process dies (SIGKILL included)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fold_units(
    store: EventStore, db: ReadModelDB, binding: Binding, job: _Job, units: list[_Unit], batch_size: int,
    advance: Callable[[int, int], None],
) -> tuple[int, dict[tuple[str, str], WrittenDigest]]:
    """Fold the units' events, scan by scan, committing every ``batch_size`` events; return the rows read
    and the digests of the rows written, per (run id, shadow table).

    ``advance(k, n)``: n more events of the k-th scan (one per stream partition) were folded.
    """
    folder = _Folder(db, binding, job, units)
    read = since_commit = 0
    for k, scan in enumerate(folder.scans):
        for rows in store.read_all_rows(
            scan.after, until=scan.until, batch_size=min(batch_size, READ_PAGE), streams=scan.streams, types=scan.types,
            lean=folder.lean,
        ):
            folder.fold(scan, rows)
            read += len(rows)
            since_commit += len(rows)
            if since_commit >= batch_size or folder.over_bound():
                folder.commit()
                since_commit = 0
            advance(k, len(rows))
        folder.finish(scan)
    folder.mark_folded()  # units with nothing to read (an empty epoch)
    for unit in units:
        folder.finalize(unit)  # units folded by an earlier, interrupted invocation
    return read, folder.written


#: a key's partition is crc32 of its text modulo the partition count: stable across processes and
#: runs, which Python's ``hash`` is not
_crc32 = zlib.crc32


def encode_key(key: Any) -> str:
    if key.__class__ is str:
        return "s" + key
    if key.__class__ is int:
        return "i" + str(key)
    raise ConfigError(f"projection keys must be str or int, got {type(key).__name__} {key!r}")


def decode_key(text: str) -> Any:
    return text[1:] if text[0] == "s" else int(text[1:])


class _Bloom:
    """A set that may answer yes wrongly, never no wrongly, in fixed memory (1 MiB).

    Remembers the keys whose state went to the state table, so that a key
    missing from memory is known to be new without asking the database;
    a false yes costs one lookup. Python's ``hash`` is fine here: the filter
    lives in one process and is rebuilt from the state table on resume.
    """

    __slots__ = ("bits", "count")

    BITS = 1 << 23
    MASK = BITS - 1

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)
        self.count = 0

    def add(self, key: Any) -> None:
        h = hash(key)
        a, b = h & self.MASK, (h >> 23) & self.MASK
        bits = self.bits
        bits[a >> 3] |= 1 << (a & 7)
        bits[b >> 3] |= 1 << (b & 7)
        self.count += 1

    def __contains__(self, key: Any) -> bool:
        if not self.count:
            return False
        h = hash(key)
        a, b = h & self.MASK, (h >> 23) & self.MASK
        bits = self.bits
        return bool(bits[a >> 3] & (1 << (a & 7))) and bool(bits[b >> 3] & (1 << (b & 7)))


class _ProjectionSlots:
    """A worker's units of one projection, found by key partition."""

    __slots__ = ("projection", "partitions", "owned", "single", "tracks", "initial", "encode", "decode", "cap", "index")

    def __init__(self, projection: Projection, partitions: int) -> None:
        self.projection = projection
        self.partitions = partitions
        self.owned: dict[int, _UnitState] = {}
        self.single: _UnitState | None = None
        self.tracks = getattr(projection, "tracks_version", False)
        self.initial = projection.initial
        state_type = projection.state_type
        if self.tracks:
            state_type = tuple[int, state_type]
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode = msgspec.msgpack.Decoder(state_type).decode
        self.cap = projection.cache_size or DEFAULT_CACHE_KEYS
        self.index: Index | None = None


class _UnitState:
    __slots__ = ("unit", "cache", "dirty", "stored", "slots", "index", "new_keys", "pending_events", "pending_checkpoint")

    def __init__(self, unit: _Unit, slots: _ProjectionSlots) -> None:
        self.unit = unit
        self.cache: dict[Any, Any] = {}
        self.dirty: set[Any] = set()
        # keys whose state may be in the state table but not in memory (evicted, or stored before a resume)
        self.stored = _Bloom()
        self.slots = slots
        self.index: Index | None = None
        self.new_keys = 0  # since the last commit, as are the two below
        self.pending_events = 0
        self.pending_checkpoint: int | None = unit.checkpoint


class _Scan:
    """One read of the epoch: the stream partitions and event types the store keeps, the units they feed."""

    __slots__ = ("streams", "types", "states", "tables")

    def __init__(self, streams: StreamPartitions | None, types: frozenset[str] | None, states: list[_UnitState]) -> None:
        self.streams = streams
        self.types = types
        self.states = states
        #: per set of units folding a page together: stored type -> what to do with its events
        self.tables: dict[frozenset[int], dict[str, Any]] = {}

    @property
    def after(self) -> int | None:
        return min((s.unit.checkpoint for s in self.states), key=lambda c: -1 if c is None else c)

    @property
    def until(self) -> int | None:
        return max(s.unit.until for s in self.states if s.unit.until is not None)


#: what a payload that does not decode (or upcast) raises on its way to a handler
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UpcastError)


class _Table(dict):  # type: ignore[type-arg]
    """stored type -> how its events are folded, worked out on first sight of the type."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[str], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, stored_type: str) -> Any:
        value = self[stored_type] = self.make(stored_type)
        return value


class _Folder:
    """Folds pages of stored events into the states of a worker's units, and stores them.

    The work per event is settled once per (stored type, schema version) and
    set of units: a function that decodes the payload straight into the
    Struct the chain starts from (the head Struct for a head event), runs the
    upcasters, and hands the head event to one small function per projection
    that updates the key's state. Types no unit handles are skipped before
    anything is decoded; on a store that filters them, they are not even read.
    """

    def __init__(self, db: ReadModelDB, binding: Binding, job: _Job, units: list[_Unit]) -> None:
        self.db = db
        self.binding = binding
        self.units = units
        #: (run id, table name) -> the digest of the rows this folder wrote into that shadow table
        self.written: dict[tuple[str, str], WrittenDigest] = {}
        self._projections = job.projections
        self._conn: sa.Connection | None = None
        self._cursor: Any = None
        self._point_sql: dict[str, str] = {}
        self.states: dict[int, _UnitState] = {}
        by_projection: dict[str, _ProjectionSlots] = {}
        for unit in units:
            projection = job.projections[unit.run.projection]
            slots = by_projection.get(projection.name)
            if slots is None:
                slots = by_projection[projection.name] = _ProjectionSlots(projection, unit.run.partitions)
            state = _UnitState(unit, slots)
            slots.owned[unit.partition] = state
            if unit.run.partitions == 1:
                slots.single = state
            self.states[id(unit)] = state
            if projection.global_order:
                state.index = Index(self._index_loader(state))
        for state in self.states.values():
            if state.unit.checkpoint is not None and not state.unit.folded:
                self._remember_stored(state)
        self._release_read_conn()
        self.slots = [by_projection.get(p.name) for p in binding.projections]
        # per head type: the (route slot, projection slots) pairs this worker folds
        self.active: dict[str, list[tuple[Any, _ProjectionSlots]]] = {}
        for type_name, route in binding.routes.items():
            pairs = [(s, self.slots[s.index]) for s in route.slots if self.slots[s.index] is not None]
            if pairs:
                self.active[type_name] = pairs  # type: ignore[assignment]
        self._touched: dict[int, _UnitState] = {}
        self._general: dict[tuple[str, int], Callable[[Any], list[tuple[str, Any]]]] = {}
        self._plain: dict[int, tuple[_UnitState, Any]] = {}  # id(applier) -> (state, handler), kept with the applier
        location = binding.compiled.version_location
        self._meta_key = binding.version_key_bytes if isinstance(location, MetadataKey) else None
        self._version_decoder = binding._version_decoder
        #: no handler takes an EventInfo and no upcaster a context: event ids and record times go unread
        self.lean = not binding.compiled.needs_context and not any(
            slot.wants_info for pairs in self.active.values() for slot, _ps in pairs
        )
        self.scans = [
            _Scan(streams, self._types_for(members), [self.states[id(u)] for u in members])
            for streams, members in _scan_keys(units).items()
        ]

    def _types_for(self, units: list[_Unit]) -> frozenset[str] | None:
        """The stored type names whose events these units can use; None: the store cannot tell by name.

        Only with the schema version in metadata is a stored type name the
        event type itself; types of no schema the registry knows are there when
        a projection handles them by name.
        """
        if self._meta_key is None:
            return None
        mine = {id(self.states[id(u)].slots) for u in units}
        handled = {t for t, pairs in self.active.items() if any(id(ps) in mine for _slot, ps in pairs)}
        registry = self.binding.compiled.registry
        names = {t for t, _v in registry.schemas} | {t for t, _v in registry.steps} | set(self.binding.routes)
        return frozenset(t for t in names if self.binding._reachable_types(t) & handled)

    # -------------------------------------------------------------- folding
    def fold(self, scan: _Scan, rows: list[tuple[Any, ...]]) -> None:
        """Fold one page of a scan (in commit order); :meth:`commit` stores the result."""
        first, last, n = rows[0][2], rows[-1][2], len(rows)
        positions = None
        groups: dict[tuple[int, int], list[_UnitState]] = {}
        for state in scan.states:
            unit = state.unit
            if unit.folded or unit.until is None:
                continue
            checkpoint = unit.checkpoint
            if (checkpoint is None or checkpoint < first) and last <= unit.until:
                lo, hi = 0, n
            else:
                if positions is None:
                    positions = [r[2] for r in rows]
                lo = 0 if checkpoint is None else bisect_right(positions, checkpoint)
                hi = n if last <= unit.until else bisect_right(positions, unit.until)
            if lo < hi:
                groups.setdefault((lo, hi), []).append(state)
                state.pending_events += hi - lo
                state.pending_checkpoint = rows[hi - 1][2]
                self._touched[id(state)] = state
        for (lo, hi), members in groups.items():
            key = frozenset(id(m) for m in members)
            table = scan.tables.get(key)
            if table is None:
                table = scan.tables[key] = self._table(members)
            part = rows if hi - lo == n else rows[lo:hi]
            try:
                if self._meta_key is not None:
                    self._fold_by_metadata(part, table)
                else:
                    self._fold_by_name(part, table)
            except EventmigError:
                raise
            except Exception as exc:  # a projection's code failed: say which, on which event
                raise _code_failed(self.binding, exc) from None

    def _fold_by_metadata(self, rows: list[tuple[Any, ...]], table: dict[str, Any]) -> None:
        """The hot loop, schema versions in metadata: one lookup by stored type, one by version."""
        key = self._meta_key
        version_of = self._version_decoder
        for row in rows:
            versions = table[row[4]]
            if versions is None:
                continue  # no unit here uses events of this type
            metadata = row[6]
            try:  # decoding the one field costs less than looking for its name first
                version = version_of(metadata).v
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if metadata.find(key) >= 0:
                    raise _failed(row, f"metadata: {exc}") from None
                version = 1  # no version in it: version 1, whatever else the metadata holds
            versions[version](row)

    def _fold_by_name(self, rows: list[tuple[Any, ...]], table: dict[str, Any]) -> None:
        """The hot loop, schema versions in the stored type name: one lookup."""
        for row in rows:
            fold = table[row[4]]
            if fold is not None:
                fold(row)

    def _table(self, members: list[_UnitState]) -> dict[str, Any]:
        """What to do with the events of each stored type, for units folding together."""
        binding = self.binding
        appliers = self._appliers(members)
        handled = set(appliers)
        by_metadata = self._meta_key is not None

        def make(stored_type: str) -> Any:
            entry = binding.entry(stored_type)
            if entry is None:
                return None
            type_name, fixed, _head = entry
            if not binding._reachable_types(type_name) & handled:
                return None
            if not by_metadata:
                return self._compile(appliers, type_name, fixed if fixed is not None else 1)
            if fixed is not None:  # a type the registry does not know: its events are what they are
                fold = self._compile(appliers, type_name, fixed)
                return _Table(lambda version: fold)
            return _Table(lambda version: self._compile(appliers, type_name, version))

        return _Table(make)

    def _compile(
        self, appliers: dict[str, tuple[Callable[[Any, Any], None], ...]], type_name: str, version: int
    ) -> Callable[[tuple[Any, ...]], None]:
        """The function folding one stored event of ``(type, version)`` into the units' states."""
        binding = self.binding
        general = self._general.get((type_name, version))
        if general is None:
            general = self._general[(type_name, version)] = binding.general_path(type_name, version)
        fast = binding.fast_path(type_name, version)
        out_type = fast[0] if fast is not None else None
        if fast is not None and out_type is not None and out_type not in appliers:
            return _skip  # becomes a head event no unit here handles: nothing to decode
        no_appliers: tuple[Callable[[Any, Any], None], ...] = ()

        def fold_general(row: tuple[Any, ...]) -> None:
            try:
                events = general(row)
            except _DECODE_ERRORS as exc:
                raise _failed(row, exc) from None
            for t, event in events:
                for apply in appliers.get(t, no_appliers):
                    apply(row, event)

        if fast is None:
            return fold_general
        _out, decode, then = fast
        if out_type is None:  # a split: a list of head events

            def fold_split(row: tuple[Any, ...]) -> None:
                try:
                    events = then(decode(row[5]))
                    if events is SLOW:
                        events = general(row)
                except _DECODE_ERRORS as exc:
                    raise _failed(row, exc) from None
                for t, event in events:
                    for apply in appliers.get(t, no_appliers):
                        apply(row, event)

            return fold_split
        targets = appliers[out_type]
        plain = self._plain.get(id(targets[0])) if len(targets) == 1 else None
        if plain is not None:  # one stream-keyed projection: fused with the state update
            fused = self._fused(plain, binding, type_name, version, decode, then, fold_general)
            if fused is not None:
                return fused
        if then is None:  # a head event: decoded straight into its Struct
            if len(targets) == 1:
                (apply,) = targets

                def fold_head(row: tuple[Any, ...]) -> None:
                    try:
                        event = decode(row[5])
                    except _DECODE_ERRORS as exc:
                        raise _failed(row, exc) from None
                    apply(row, event)

                return fold_head

            def fold_head_many(row: tuple[Any, ...]) -> None:
                try:
                    event = decode(row[5])
                except _DECODE_ERRORS as exc:
                    raise _failed(row, exc) from None
                for apply in targets:
                    apply(row, event)

            return fold_head_many

        def fold_chain(row: tuple[Any, ...]) -> None:
            try:
                event = then(decode(row[5]))
                if event is SLOW:
                    events = general(row)
            except _DECODE_ERRORS as exc:
                raise _failed(row, exc) from None
            if event is SLOW:
                for t, e in events:
                    for apply in appliers.get(t, no_appliers):
                        apply(row, e)
                return
            for apply in targets:
                apply(row, event)

        return fold_chain

    def _fused(
        self, plain: tuple[_UnitState, Any], binding: Binding, type_name: str, version: int,
        decode: Callable[[bytes], Any], then: Callable[[Any], Any] | None, slow: Callable[[Any], None],
    ) -> Callable[[tuple[Any, ...]], None] | None:
        """The commonest cases in one function each (a call per event saved is a tenth of a microsecond):
        a head event, or one typed step to a head, for a stream-keyed projection's state."""
        state, handler = plain
        cache = state.cache
        get = cache.get
        dirty = state.dirty.add
        fresh = self._fresh
        if then is None:

            def fold_head(row: tuple[Any, ...]) -> None:
                try:
                    event = decode(row[5])
                except _DECODE_ERRORS as exc:
                    raise _failed(row, exc) from None
                key = row[0]
                current = get(key, _MISSING)
                if current is _MISSING:
                    current = fresh(state, key)
                new = handler(current, event)
                if new is not None:
                    cache[key] = new
                dirty(key)

            return fold_head
        single = binding.single_step(type_name, version)
        if single is None:
            return None
        decode_input, step, head, name = single

        def fold_step(row: tuple[Any, ...]) -> None:
            try:
                event = step(decode_input(row[5]))
            except _DECODE_ERRORS as exc:
                raise _failed(row, exc) from None
            except Exception as exc:  # as the registry's chains report a failing step
                raise _failed(
                    row, f"upcaster {name} failed on {type_name} v{version}: {type(exc).__name__}: {exc}"
                ) from None
            if event.__class__ is not head:
                slow(row)  # a dict, a list, a drop...: what the registry's chains do
                return
            key = row[0]
            current = get(key, _MISSING)
            if current is _MISSING:
                current = fresh(state, key)
            new = handler(current, event)
            if new is not None:
                cache[key] = new
            dirty(key)

        return fold_step

    def _appliers(self, members: list[_UnitState]) -> dict[str, tuple[Callable[[Any, Any], None], ...]]:
        """Per head type: one function per projection handling it, updating the members' states."""
        ids = {id(m) for m in members}
        out: dict[str, tuple[Callable[[Any, Any], None], ...]] = {}
        for type_name, pairs in self.active.items():
            fns = []
            for slot, ps in pairs:
                states = [s for s in ps.owned.values() if id(s) in ids]
                if states:
                    fns.append(self._applier(slot, ps, states))
            if fns:
                out[type_name] = tuple(fns)
        return out

    def _applier(self, slot: Any, ps: _ProjectionSlots, states: list[_UnitState]) -> Callable[[Any, Any], None]:
        """``apply(row, event)``: the slot's handler on the state of the event's key.

        A key missing from memory is new unless the Bloom filter of stored keys
        says it may have been stored: then its state is loaded (evicted keys
        rarely come back).
        """
        handler, wants_info, tracks = slot.handler, slot.wants_info, ps.tracks
        fresh = self._fresh
        if slot.key_kind == KEY_STREAM:
            # stream-keyed: the store handed this scan only the streams of this one state
            if len(states) != 1:
                raise AssertionError("a stream-keyed projection folds one partition per scan")
            (state,) = states
            cache = state.cache
            get = cache.get
            dirty = state.dirty.add
            if not tracks and not wants_info:

                def apply(row: tuple[Any, ...], event: Any) -> None:
                    key = row[0]
                    current = get(key, _MISSING)
                    if current is _MISSING:
                        current = fresh(state, key)
                    new = handler(current, event)
                    if new is not None:
                        cache[key] = new
                    dirty(key)

                self._plain[id(apply)] = (state, handler)  # what _fused inlines
                return apply
            if tracks and not wants_info:

                def apply_tracked(row: tuple[Any, ...], event: Any) -> None:
                    key = row[0]
                    current = get(key, _MISSING)
                    if current is _MISSING:
                        current = fresh(state, key)
                    new = handler(current[1], event)
                    if new is not None:
                        current[1] = new
                    current[0] = row[1]
                    dirty(key)

                return apply_tracked
            return self._apply_generic(slot, ps, {state.unit.partition: state}, stream=True)
        return self._apply_generic(slot, ps, {s.unit.partition: s for s in states}, stream=False)

    def _apply_generic(
        self, slot: Any, ps: _ProjectionSlots, owned: dict[int, _UnitState], *, stream: bool
    ) -> Callable[[Any, Any], None]:
        """Any key kind, partitioned or not, with or without an :class:`EventInfo`."""
        tracks = ps.tracks
        kind, keyfn, partitions = slot.key_kind, slot.key, ps.partitions
        single = next(iter(owned.values())) if stream or partitions == 1 else None
        fresh = self._fresh
        crc = _crc32

        def apply(row: tuple[Any, ...], event: Any) -> None:
            if stream:
                key = row[0]
            elif kind == KEY_INDEXED:
                key = keyfn(event, single.index)  # type: ignore[union-attr]
            else:
                key = keyfn(event)
            if key is None:
                return
            state = single
            if state is None:
                state = owned.get(crc(key.encode() if key.__class__ is str else str(key).encode()) % partitions)
                if state is None:
                    return  # another worker's key
            cache = state.cache
            current = cache.get(key, _MISSING)
            if current is _MISSING:
                current = fresh(state, key)
            new = evolve(slot, tracks, current, row, event)
            if new is not current:
                cache[key] = new
            state.dirty.add(key)

        return apply

    def _fresh(self, state: _UnitState, key: Any) -> Any:
        """The state of a key not in memory: stored earlier (evicted, or before a resume), or a new one."""
        if key in state.stored:  # maybe stored (or a rare false positive): ask the state table
            current = self._load_state(state, key)
            if current is not _MISSING:
                return current
        slots = state.slots
        current = [0, slots.initial()] if slots.tracks else slots.initial()
        state.cache[key] = current
        state.new_keys += 1
        return current

    def _load_state(self, state: _UnitState, key: Any) -> Any:
        """The stored state of a key that is not in memory, or _MISSING if it has none (a new key)."""
        data = self._point(state.unit.state_table, encode_key(key))
        if data is None:
            return _MISSING
        value = state.slots.decode(data)
        if state.slots.tracks:
            value = list(value)
        state.cache[key] = value
        return value

    def _point(self, table: str, key: str) -> bytes | None:
        """One state by key: one prepared statement per table on a cursor kept for the purpose."""
        if self._cursor is None:
            self._cursor = self.db.raw(self._read_conn()).cursor()
        self._cursor.execute(self._point_sql.get(table) or self._point_sql.setdefault(
            table, self.db.q(f"SELECT state FROM {self.db.names.quote(table)} WHERE key = ?")), (key,))
        row = self._cursor.fetchone()
        return bytes(row[0]) if row is not None else None

    def _remember_stored(self, state: _UnitState) -> None:
        """After a resume: which keys (and index entries) the state table already holds."""
        stored = state.stored
        for batch in self.db.scan_states(self._read_conn(), state.unit.state_table, keys_only=True):
            for (text,) in batch:
                stored.add(("#", decode_key(text[1:])) if text[0] == "#" else decode_key(text))

    def _index_loader(self, state: _UnitState) -> Callable[[Any], Any]:
        decode = msgspec.msgpack.decode

        def load(key: Any) -> Any:
            if ("#", key) not in state.stored:
                return _MISSING
            data = self._point(state.unit.state_table, "#" + encode_key(key))
            return decode(data) if data is not None else _MISSING

        return load

    def _read_conn(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self.db.engine.connect()
        return self._conn

    def _release_read_conn(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ committing
    def over_bound(self) -> bool:
        """Too many states not stored yet: in all (:data:`MAX_DIRTY_STATES`), or in one partition (more than
        its cache keeps: a projection with big states sets a small ``cache_size``)."""
        total = 0
        for state in self._touched.values():
            held = len(state.dirty)
            if held > state.slots.cap:
                return True
            total += held
        return total >= MAX_DIRTY_STATES

    def commit(self) -> None:
        """Store the states touched since the last commit with their partitions' checkpoints, atomically."""
        touched = list(self._touched.values())
        if not touched:
            return
        self._release_read_conn()  # SQLite: an open read transaction would block our own write
        encode_index = msgspec.msgpack.encode
        with self.db.write(durable=False) as conn:
            for state in touched:  # one partition's encoded states in memory at a time
                unit = state.unit
                encode = state.slots.encode
                cache = state.cache
                # in key order: the state table's B-tree takes them page after page
                items = sorted((encode_key(k), encode(cache[k])) for k in state.dirty)
                deleted: list[str] = []
                if state.index is not None and state.index._dirty:
                    for k, v in state.index._dirty.items():
                        if v is _DELETED:
                            deleted.append("#" + encode_key(k))
                        else:
                            items.append(("#" + encode_key(k), encode_index(v)))
                # no checkpoint yet: nothing was ever committed to the state table
                self.db.put_states(conn, unit.state_table, items, deleted, empty=unit.checkpoint is None)
                del items
                conn.exec_driver_sql(
                    self.db.q(
                        "UPDATE eventmig_rebuild_partitions SET checkpoint = ?, events = ?, keys = ? "
                        "WHERE run_id = ? AND partition = ?"
                    ),
                    (state.pending_checkpoint, unit.events + state.pending_events, unit.keys + state.new_keys,
                     unit.run.id, unit.partition),
                )
        for state in touched:
            unit = state.unit
            unit.checkpoint = state.pending_checkpoint
            unit.events += state.pending_events
            unit.keys += state.new_keys
            state.pending_events = state.new_keys = 0
            if state.index is not None:
                state.index._dirty.clear()
                data = state.index._data
                if len(data) > state.slots.cap:
                    for key in list(data)[: len(data) - (state.slots.cap * 3) // 4]:
                        del data[key]
                        state.stored.add(("#", key))
            self._evict(state)
        self._touched.clear()

    def _evict(self, state: _UnitState) -> None:
        cache = state.cache
        for key in state.dirty:  # least recently touched first: move this batch's keys to the end
            cache[key] = cache.pop(key)
        state.dirty.clear()
        cap = state.slots.cap
        if len(cache) > cap:
            drop = len(cache) - (cap * 3) // 4
            victims = []
            for key in cache:
                victims.append(key)
                if len(victims) == drop:
                    break
            stored = state.stored
            for key in victims:
                del cache[key]
                stored.add(key)

    def mark_folded(self) -> None:
        if all(state.unit.folded for state in self.states.values()):
            return
        with self.db.write(durable=False) as conn:
            for state in self.states.values():
                unit = state.unit
                if unit.folded:
                    continue
                unit.folded = True
                conn.exec_driver_sql(
                    self.db.q("UPDATE eventmig_rebuild_partitions SET status = 'folded' WHERE run_id = ? AND partition = ?"),
                    (unit.run.id, unit.partition),
                )

    # ------------------------------------------------------------ finishing
    def finish(self, scan: _Scan) -> None:
        """Every unit of a scan has folded its events: their rows go into the shadow tables, with "done"
        marks and checkpoints, in one transaction.

        The states come from memory, where the latest ones are, and from the
        state tables only for keys no longer in memory; the states folded
        since the last commit are never written to a state table. Killed
        before this commits, a resumed rebuild starts again from the last
        commit.
        """
        states = [s for s in scan.states if not s.unit.folded]
        self._release_read_conn()
        # the rows of the states in memory are made (and digested) before the write transaction: SQLite's
        # writers take turns, so a worker holding the turn should only be inserting
        prepared = {id(state): self._prepare(state) for state in states}
        finished: list[_Unit] = []
        with self.db.write(durable=False) as conn:
            for state in states:
                unit = state.unit
                if self._status(conn, unit) == "done":
                    continue
                finished.append(unit)
                cache = state.cache
                if state.stored.count:  # some states are only in the state table (evicted, or stored before a resume)
                    decode, tracks = state.slots.decode, state.slots.tracks
                    for batch in self.db.scan_states(conn, unit.state_table):
                        stored = []
                        for text, data in batch:
                            if text[0] == "#":
                                continue
                            key = decode_key(text)
                            if key not in cache:
                                stored.append((key, list(decode(data)) if tracks else decode(data)))
                        self._insert(conn, state, self._rows(state, stored))
                for tables in prepared.pop(id(state)):
                    self._insert(conn, state, tables, digested=True)
                conn.exec_driver_sql(
                    self.db.q(
                        "UPDATE eventmig_rebuild_partitions SET status = 'done', checkpoint = ?, events = ?, keys = ? "
                        "WHERE run_id = ? AND partition = ?"
                    ),
                    (state.pending_checkpoint, unit.events + state.pending_events, unit.keys + state.new_keys,
                     unit.run.id, unit.partition),
                )
        for unit in finished:
            self._wrote_partition(unit)
        for state in states:
            state.unit.folded = state.unit.done = True
            self._touched.pop(id(state), None)
            state.cache.clear()
            state.dirty.clear()

    def finalize(self, unit: _Unit) -> None:
        """Turn a folded partition's states (all in its state table) into rows in the shadow tables, with its
        "done" mark, atomically."""
        if unit.done:
            return
        state = self.states[id(unit)]
        decode, tracks = state.slots.decode, state.slots.tracks
        self._release_read_conn()
        with self.db.write(durable=False) as conn:
            if self._status(conn, unit) == "done":
                return
            for batch in self.db.scan_states(conn, unit.state_table):
                self._insert(conn, state, self._rows(state, [
                    (decode_key(text), list(decode(data)) if tracks else decode(data))
                    for text, data in batch if text[0] != "#"
                ]))
            conn.exec_driver_sql(
                self.db.q("UPDATE eventmig_rebuild_partitions SET status = 'done' WHERE run_id = ? AND partition = ?"),
                (unit.run.id, unit.partition),
            )
        self._wrote_partition(unit)
        unit.done = True
        state.cache.clear()

    def _status(self, conn: sa.Connection, unit: _Unit) -> str:
        return conn.exec_driver_sql(
            self.db.q("SELECT status FROM eventmig_rebuild_partitions WHERE run_id = ? AND partition = ?"),
            (unit.run.id, unit.partition),
        ).scalar()

    @staticmethod
    def _rows(state: _UnitState, items: list[tuple[Any, Any]]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of these (key, state) pairs, per table."""
        projection = state.slots.projection
        try:
            return projection.rows_of_many(items) if items else {}
        except EventmigError:
            raise
        except Exception as exc:  # the projection's rows function failed: find the key, one at a time
            for key, value in items:
                try:
                    projection.rows_of(key, value)
                except Exception as failed:  # noqa: BLE001 - reported in one line
                    exc = failed
                    break
            else:
                key = None
            of = f" on key {key!r}" if key is not None else ""
            raise RebuildFailed(
                f"projection {projection.name}: rows function failed{of}: {type(exc).__name__}: {first_line(exc)}"
            ) from None

    def _prepare(self, state: _UnitState) -> list[dict[str, list[tuple[Any, ...]]]]:
        """The rows of a unit's states in memory, in chunks, their digests taken (:attr:`written`)."""
        items = list(state.cache.items())
        try:  # in key order: rows keyed like their states then go into the shadow table's B-tree page by page
            items.sort(key=_first)
        except TypeError:  # keys of mixed kinds (str and int): any order will do
            pass
        chunks = []
        for start in range(0, len(items), _ROWS_PER_WRITE):
            tables = self._rows(state, items[start:start + _ROWS_PER_WRITE])
            self._digest(state, tables)
            chunks.append(tables)
        return chunks

    def _digest(self, state: _UnitState, tables: dict[str, list[tuple[Any, ...]]]) -> None:
        projection = state.slots.projection
        for name, rows in tables.items():
            self._written(state.unit.run.id, name).add(_table_named(projection, name), rows)

    def _insert(
        self, conn: sa.Connection, state: _UnitState, tables: dict[str, list[tuple[Any, ...]]], *, digested: bool = False,
    ) -> None:
        """Bulk-write rows into the unit's shadow tables (and digest them, unless that is done)."""
        projection = state.slots.projection
        shadow = state.unit.run.tables
        if not digested:
            self._digest(state, tables)
        for name, rows in tables.items():
            try:
                self.db.bulk_insert(conn, shadow[name], self._columns(projection, name), rows)
            except EventmigError:
                raise
            except Exception as exc:
                if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                    raise RebuildFailed(
                        f"projection {projection.name}: two keys produced rows with the same primary key in "
                        f"{name}: {str(exc).splitlines()[0]}"
                    ) from None
                # a NULL in a NOT NULL column, text in a number column...: whose rows, into which table
                raise RebuildFailed(
                    f"projection {projection.name}: writing its rows into {name} failed: "
                    f"{type(exc).__name__}: {first_line(exc)}"
                ) from None

    def _written(self, run_id: str, name: str) -> WrittenDigest:
        digest = self.written.get((run_id, name))
        if digest is None:
            digest = self.written[(run_id, name)] = WrittenDigest()
        return digest

    def _wrote_partition(self, unit: _Unit) -> None:
        """Every row of this partition is in the shadow tables, committed, and in :attr:`written`."""
        for table in self._projections[unit.run.projection].tables:
            self._written(unit.run.id, table.name).partitions.append(unit.partition)

    @staticmethod
    def _columns(projection: Projection, name: str) -> list[str]:
        return [c.name for c in _table_named(projection, name).columns]


_first = itemgetter(0)


def _table_named(projection: Projection, name: str) -> sa.Table:
    return next(t for t in projection.tables if t.name == name)


def _skip(row: tuple[Any, ...]) -> None:
    """Events that become head events no unit here handles."""


def _failed(row: tuple[Any, ...], reason: Any) -> RebuildFailed:
    return RebuildFailed(f"cannot decode {_event_label(row)}: {reason}")


def _event_label(row: tuple[Any, ...]) -> str:
    """``T event at stream@version (position p, id i)``; a lean read leaves the id out."""
    event_id = f", id {row[3]}" if row[3] is not None else ""
    return f"{row[4]} event at {row[0]}@{row[1]} (position {row[2]}{event_id})"


def _code_failed(binding: Binding, exc: Exception) -> RebuildFailed:
    """One line for an exception out of the fold loop: whose code (a handler, a key function), which event.

    The loop itself pays nothing for this: the event is the ``row`` of the
    loop's frame on the traceback, the projection is found by its code.
    """
    row = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in _LOOPS:
            row = tb.tb_frame.f_locals.get("row")
        tb = tb.tb_next
    who = binding.culprit(exc)
    event = isinstance(row, tuple) and len(row) >= 7
    if who is None and event and isinstance(exc, RecursionError):  # decoding a payload or metadata nested too deeply
        return _failed(row, deepest(row, exc))  # type: ignore[arg-type]
    on = f" on {_event_label(row)}" if event else ""
    return RebuildFailed(f"{who or 'rebuild'} failed{on}: {type(exc).__name__}: {first_line(exc)}")


_LOOPS = frozenset((_Folder._fold_by_metadata.__code__, _Folder._fold_by_name.__code__))
