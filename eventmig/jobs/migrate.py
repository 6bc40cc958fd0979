"""Copy-transform: the active epoch, through the upcaster chains, into a new epoch.

The source is only ever read. Each batch of target events is written in one
transaction together with the run's checkpoint (the source position of the
last event handled), so a job killed at any instant resumes exactly where
its last commit left off: no event twice, none missing. A second job on the
same store is refused while the first holds the lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from eventmig.config import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from eventmig.config import MIGRATE_LOCK as LOCK
from eventmig.errors import ConfigError
from eventmig.jobs.parallel import Workers, check_workers, slice_count, slices
from eventmig.progress import SILENT, Progress, announce_run, count_written
from eventmig.retry import RetryPolicy, held, with_retries
from eventmig.ports import EventStore
from eventmig.model.records import QuarantinedEvent, Run, TargetEvent
from eventmig.model.transform import BatchCounts, Prepared, PreparedBatch, Transformer
from eventmig.model.chains import CompiledRegistry



class MigrateReport(msgspec.Struct):
    """What a migrate (or a dry run) did; the CLI prints it, ``--json`` dumps it."""

    run_id: str | None
    source_epoch: int
    target_epoch: int | None
    status: str
    dry_run: bool
    resumed_from: int | None
    events_read: int
    events_written: int
    unknown: int
    dropped: int
    quarantined: int
    seconds: float
    events_per_second: float
    before: dict[str, int]
    after: dict[str, int]
    quarantine_reasons: dict[str, int]
    total_quarantined: int = 0
    #: what would make the real run refuse (a dry run's findings: streams the stream map would merge)
    problems: list[str] = []
    #: worker processes started (at most one per slice); 0 when this process upcast every slice
    processes: int = 0
    #: what is not an error but should not pass for success either (a run that read nothing)
    warnings: list[str] = []


def migrate(
    store: EventStore,
    compiled: CompiledRegistry,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    stream_map: Mapping[str, str] | None = None,
    dry_run: bool = False,
    restart: bool = False,
    workers: int | None = None,
    retry: RetryPolicy = RetryPolicy(),
    progress: Progress = SILENT,
) -> MigrateReport:
    """Copy the active epoch into a new one (or resume the unfinished copy of it).

    ``stream_map`` renames streams (old name -> new name; others keep theirs).
    ``dry_run`` reads and upcasts everything and reports counts per (type,
    version) before and after, writing nothing, and in ``problems`` what
    would make the real run refuse. ``restart`` discards an
    unfinished target epoch (never one that was ever active) and starts over. ``workers`` processes read and
    upcast slices of the source while this one writes (default: the cores).
    A lost connection is retried as ``retry`` says, from the last committed
    batch; every batch commits only while this job holds the migrate lease.
    """
    check_batch_size(batch_size)
    _check_stream_map(stream_map)
    workers = check_workers(workers)
    if dry_run:
        store.check_new_epoch()
        return _dry_run(store, Transformer(compiled, stream_map), batch_size, workers, progress)
    retried = {"job": "migrate", "store_url": store.url, "resume": "eventmig migrate", "policy": retry,
               "progress": progress}
    with held(lambda: store.lock(LOCK), **retried):
        return with_retries(
            lambda attempt: _migrate(store, compiled, batch_size, dict(stream_map or {}), restart and attempt == 1,
                                     workers, progress),
            **retried,
        )


def check_batch_size(batch_size: int) -> None:
    """Refuse a batch size out of range as a configuration error, before anything is read."""
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch size must be between 1 and {MAX_BATCH_SIZE:,}, got {batch_size!r}")


def current_run(store: EventStore) -> Run | None:
    """The latest migrate run out of the active epoch whose target epoch still exists."""
    active = store.active_epoch()
    epochs = {e.epoch for e in store.epochs()}
    runs = [r for r in store.runs("migrate") if r.source_epoch == active and r.target_epoch in epochs]
    return runs[-1] if runs else None


def _migrate(
    store: EventStore,
    compiled: CompiledRegistry,
    batch_size: int,
    stream_map: dict[str, str],
    restart: bool,
    workers: int,
    progress: Progress,
) -> MigrateReport:
    run, resumed_from = _start_or_resume(store, compiled, batch_size, stream_map, restart)
    source = store.at_epoch(run.source_epoch)
    target = store.at_epoch(run.target_epoch)
    totals = BatchCounts.from_json(run.stats)
    run.status = "running"

    source.refresh_statistics()
    head = source.head_position()
    todo = source.count_events(after=run.checkpoint, until=head) if head is not None else 0
    # numbering continues from what the target holds: nothing when starting, the committed
    # batches when resuming (they are exactly what the checkpoint covers)
    last_versions = target.stream_versions_as_of(run.checkpoint)
    first_version = target.capabilities.first_stream_version
    transformer = Transformer(compiled, stream_map or None, source_epoch=run.source_epoch)

    this_run = BatchCounts()
    started = time.perf_counter()
    processes = 0
    label = f"migrate epoch {run.source_epoch} -> {run.target_epoch}"
    announce_run(progress, run.id, label)
    with progress.task(label, todo) as task:
        if head is not None:
            with Workers(workers, {"source": source.reopen}, {"prepare": transformer.prepare},
                         tasks=slice_count(todo, batch_size)) as pool:
                processes = pool.processes
                tasks = (("source", "prepare", r) for r in slices(source, run.checkpoint, head, batch_size))
                for read, last_position, batch in pool.map(tasks):
                    _check_collisions(transformer, batch, run.source_epoch)
                    events = _number(batch.outputs, last_versions, first_version)
                    quarantined = [_quarantined(run.id, row, reason) for row, reason in batch.failures]
                    this_run.merge(batch.counts)
                    totals.merge(batch.counts)
                    run.checkpoint, run.updated_at, run.stats = last_position, time.time(), totals.as_json()
                    target.write_batch(events, run=run, quarantined=quarantined)
                    count_written(progress, batch.counts.written, batch.counts.quarantined)
                    task.advance(read)
    store.finish_epoch(run.target_epoch)  # the store: a pair of stores carries stream settings across here
    run.status = "completed"
    run.updated_at = time.time()
    store.save_run(run)
    return _report(run, this_run, totals, time.perf_counter() - started, resumed_from, processes)


def _start_or_resume(
    store: EventStore, compiled: CompiledRegistry, batch_size: int, stream_map: dict[str, str], restart: bool
) -> tuple[Run, int | None]:
    """The run to continue (and the checkpoint it resumes from), or a new one with its new epoch.

    A run of other upcasters or another stream map is refused rather than
    continued: its epoch would mix two migrations.
    """
    source_epoch = store.active_epoch()
    run = current_run(store)
    fingerprint = compiled.registry.fingerprint()
    if run is None or restart:
        store.check_new_epoch()  # names too long for the new epoch: refused before anything is dropped or created
    if run is not None and restart:
        if run.target_epoch not in {s.to_epoch for s in store.switches()}:
            store.drop_epoch(run.target_epoch)
        # else it was active once and may hold events appended then, which exist nowhere else (a forced
        # rollback hid them): it stays, retired, and the copy starts over in a new epoch
        run = None
    if run is not None:
        if run.fingerprint != fingerprint:
            raise ConfigError(
                f"the upcasters changed since run {run.id} started; its epoch {run.target_epoch} would mix "
                "two versions of them: rerun with --restart to start the copy again"
            )
        if run.options.get("stream_map", {}) != stream_map:
            raise ConfigError(f"run {run.id} was started with another stream mapping; rerun with --restart")
        return run, run.checkpoint
    _check_no_merge(store.at_epoch(source_epoch), stream_map)
    now = time.time()
    target_epoch = store.create_epoch(source_epoch)
    run = Run(
        id=uuid.uuid4().hex[:12], kind="migrate", source_epoch=source_epoch, target_epoch=target_epoch,
        status="running", checkpoint=None, fingerprint=fingerprint, started_at=now, updated_at=now,
        stats=BatchCounts().as_json(), options={"stream_map": stream_map, "batch_size": batch_size},
    )
    store.save_run(run)
    return run, None


def _check_collisions(transformer: Transformer, batch: PreparedBatch, source_epoch: int) -> None:
    """Streams created since the run started, under a name the stream map gives away, are refused."""
    if batch.collisions:
        raise ConfigError(
            "migration refused, streams created since it started collide: "
            + "; ".join(transformer.merge_problems(batch.collisions, source_epoch))
            + "; add them to the stream map and migrate with --restart"
        )


def _report(
    run: Run, this_run: BatchCounts, totals: BatchCounts, seconds: float, resumed_from: int | None, processes: int
) -> MigrateReport:
    summary = this_run.as_json()
    return MigrateReport(
        run_id=run.id, source_epoch=run.source_epoch, target_epoch=run.target_epoch, status=run.status,
        dry_run=False, resumed_from=resumed_from, events_read=this_run.read, events_written=this_run.written,
        unknown=this_run.unknown, dropped=this_run.dropped, quarantined=this_run.quarantined,
        seconds=round(seconds, 3), events_per_second=round(this_run.read / seconds, 1) if seconds else 0.0,
        before=summary["before"], after=summary["after"],
        quarantine_reasons=dict(this_run.reasons), total_quarantined=totals.quarantined, processes=processes,
    )


def _dry_run(store: EventStore, transformer: Transformer, batch_size: int, workers: int, progress: Progress) -> MigrateReport:
    source = store.at_epoch(store.active_epoch())
    head = source.head_position()
    counts = BatchCounts()
    collisions: set[str] = set()
    started = time.perf_counter()
    processes = 0
    todo = source.count_events(until=head) if head is not None else 0
    with progress.task(f"dry run of epoch {source.epoch}", todo) as task:
        if head is not None:
            with Workers(workers, {"source": source.reopen}, {"survey": transformer.survey},
                         tasks=slice_count(todo, batch_size)) as pool:
                processes = pool.processes
                tasks = (("source", "survey", r) for r in slices(source, None, head, batch_size))
                for read, _last, batch in pool.map(tasks):
                    counts.merge(batch.counts)
                    collisions |= batch.collisions
                    task.advance(read)
    seconds = time.perf_counter() - started
    summary = counts.as_json()
    return MigrateReport(
        run_id=None, source_epoch=source.epoch, target_epoch=None, status="dry-run", dry_run=True,
        resumed_from=None, events_read=counts.read, events_written=counts.written, unknown=counts.unknown,
        dropped=counts.dropped, quarantined=counts.quarantined, seconds=round(seconds, 3),
        events_per_second=round(counts.read / seconds, 1) if seconds else 0.0,
        before=summary["before"], after=summary["after"], quarantine_reasons=dict(counts.reasons),
        total_quarantined=counts.quarantined, problems=transformer.merge_problems(collisions, source.epoch),
        processes=processes,
    )


def _number(outputs: list[Prepared], last_versions: dict[str, int], first_version: int) -> list[TargetEvent]:
    """Give each output its target stream version, in source commit order.

    Plain tuples in :class:`TargetEvent` field order: building named tuples
    here costs more than the rest of this loop.
    """
    events: list[Any] = []
    append, get = events.append, last_versions.get
    initial = first_version - 1
    for stream, event_id, stored_type, data, metadata, recorded_at in outputs:
        version = get(stream, initial) + 1
        last_versions[stream] = version
        append((stream, version, event_id, stored_type, data, metadata, recorded_at))
    return events


def _quarantined(run_id: str, row: tuple[Any, ...], reason: str) -> QuarantinedEvent:
    stream, version, position, event_id, type_, data, metadata, recorded_at = row
    return QuarantinedEvent(
        run_id=run_id, stream=stream, version=version, position=position, event_id=event_id, type=type_,
        data=data, metadata=metadata, recorded_at=recorded_at, reason=reason,
    )


def _check_stream_map(stream_map: Mapping[str, str] | None) -> None:
    if not stream_map:
        return
    seen: dict[str, str] = {}
    for old, new in stream_map.items():
        if not isinstance(old, str) or not isinstance(new, str) or not new:
            raise ConfigError(f"stream map entries must be non-empty strings, got {old!r}: {new!r}")
        if new in seen:
            raise ConfigError(f"stream map sends both {seen[new]!r} and {old!r} to {new!r}: streams cannot merge")
        seen[new] = old


def _check_no_merge(source: EventStore, stream_map: Mapping[str, str]) -> None:
    """A stream renamed onto the name of a stream that keeps its name would merge two histories."""
    if not stream_map:
        return
    kept = set(source.list_streams()) - stream_map.keys()
    clashes = sorted(kept & set(stream_map.values()))
    if clashes:
        onto = {new: old for old, new in stream_map.items()}
        shown = ", ".join(f"{onto[c]!r} onto {c!r}" for c in clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise ConfigError(
            f"stream map renames {shown}: existing stream(s) of epoch {source.epoch} that keep their name; "
            "streams cannot merge"
        )
