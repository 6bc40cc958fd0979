"""Spreading units over worker processes (or folding them here), and the loop that feeds a worker's folder."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import queue as queue_module
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from eventmig.errors import ConfigError, EventmigError, ExitCode, first_line
from eventmig.jobs.parallel import ignore_interrupts, interrupts_held
from eventmig.jobs.rebuild.folder import Folder
from eventmig.jobs.rebuild.plan import Job
from eventmig.jobs.rebuild.reports import RebuildFailed
from eventmig.jobs.rebuild.units import Unit, assign, scan_keys
from eventmig.ports import EventStore
from eventmig.ports_readmodels import ReadModelSink, RowDigest
from eventmig.progress import Progress
from eventmig.retry import is_transient
from eventmig.projection.binding import Binding

#: events per read from the store
READ_PAGE = 10_000
#: below this many events to replay, worker processes cost more than they save: fold in this process; above
#: it, no process for fewer than half as many events (partitions share the processes there are)
FORK_MIN_EVENTS = 50_000


def execute(
    source: EventStore, db: ReadModelSink, binding: Binding, job: Job, units: list[Unit], workers: int, batch_size: int,
    progress: Progress,
) -> tuple[int, int, dict[tuple[str, str], RowDigest]]:
    """Fold the units, in worker processes or in this one; return (events replayed, processes started, digests
    of the rows written per (run id, shadow table))."""
    counted: dict[tuple[int | None, int | None], int] = {}
    reader = _scan_handle(source)  # counts and reads here leave no page cache behind for workers to inherit
    try:
        events = _events_to_read(reader, units, counted)
        share = FORK_MIN_EVENTS // 2
        plan = assign(units, min(workers, -(-events // share)) if share > 0 else workers)
        if len(plan) == 1 or events < FORK_MIN_EVENTS:
            with ExitStack() as stack:
                bars = _progress_bars(stack, progress, _scan_totals(reader, units, counted))
                stack.enter_context(_fewer_collections())
                _read, written = fold_units(reader, db, binding, job, units, batch_size, lambda k, n: bars[k].advance(n))
            return events, 0, written
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigError("parallel rebuilds need the fork start method (Linux, macOS); use --workers 1")
        totals = [_scan_totals(reader, slot, counted) for slot in plan]
    finally:
        if reader is not source:
            reader.close()
    return events, len(plan), _fork_workers(source, db, binding, job, plan, totals, batch_size, progress)


def _fork_workers(
    source: EventStore, db: ReadModelSink, binding: Binding, job: Job, plan: list[list[Unit]],
    totals: list[Any], batch_size: int, progress: Progress,
) -> dict[tuple[str, str], RowDigest]:
    """Fold each slot of ``plan`` in a forked worker; the digests of the rows they wrote, merged.

    On a failure or an interruption, the workers still running are killed before it is raised.
    """
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
        written: dict[tuple[str, str], RowDigest] = {}
        failure: tuple[str, int, bool] | None = None
        try:
            failure = _collect(messages, procs, bars, db, done, written)
        finally:
            if failure is not None or len(done) < len(procs):
                for proc in procs:
                    if proc.is_alive():
                        proc.kill()
            for proc in procs:
                proc.join()
        if failure is not None:
            raise RebuildFailed(failure[0], ExitCode(failure[1]), transient=failure[2])
    return written


def _collect(
    messages: Any, procs: list[Any], bars: list[Any], db: ReadModelSink, done: set[int],
    written: dict[tuple[str, str], RowDigest],
) -> tuple[str, int, bool] | None:
    """Read the workers' messages until all are done (into ``done`` and ``written``) or one failed: its failure."""
    while len(done) < len(procs):
        try:
            message = messages.get(timeout=0.2)
        except queue_module.Empty:
            failure = None
            for i, proc in enumerate(procs):
                if i not in done and not proc.is_alive() and proc.exitcode != 0:
                    failure = (f"rebuild worker {i} died (exit code {proc.exitcode})", int(ExitCode.RUNTIME), False)
            if failure is not None:
                return failure
            continue
        kind, i, payload = message
        if kind == "progress":
            scan, n = payload
            bars[i][scan].advance(n)
        elif kind == "done":
            done.add(i)
            for key, digest in payload.items():
                written.setdefault(key, db.new_digest()).merge(digest)
            for bar in bars[i]:
                bar.finish()
        elif kind == "error":
            return payload
    return None


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


def _label(slot: list[Unit]) -> str:
    return "rebuild " + ", ".join(u.label for u in slot)


def _scan_totals(
    source: EventStore, slot: list[Unit], counted: dict[tuple[Any, Any], int]
) -> list[tuple[str, int]]:
    """A progress bar per read a slot's worker makes (one per stream partition): its label and about how
    many events it returns, in the order of the worker's reads (:func:`scan_keys`)."""
    out = []
    for streams, members in scan_keys(slot).items():
        share = 1.0 if streams is None else len(streams.indexes) / streams.count
        out.append((_label(members), round(_events_to_read(source, members, counted) * share)))
    return out


def _progress_bars(stack: ExitStack, progress: Progress, totals: list[tuple[str, int]]) -> list[_Clamped]:
    return [_Clamped(stack.enter_context(progress.task(label, total)), total) for label, total in totals]


def _events_to_read(source: EventStore, slot: list[Unit], counted: dict[tuple[Any, Any], int]) -> int:
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
    i: int, source: EventStore, db: ReadModelSink, binding: Binding, job: Job, slot: list[Unit], batch_size: int,
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

        _events, written = fold_units(store, own_db, binding, job, slot, batch_size, advance)
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


def fold_units(
    store: EventStore, db: ReadModelSink, binding: Binding, job: Job, units: list[Unit], batch_size: int,
    advance: Callable[[int, int], None],
) -> tuple[int, dict[tuple[str, str], RowDigest]]:
    """Fold the units' events, scan by scan, committing every ``batch_size`` events; return the rows read
    and the digests of the rows written, per (run id, shadow table).

    ``advance(k, n)``: n more events of the k-th scan (one per stream partition) were folded.
    """
    folder = Folder(db, binding, job, units)
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
