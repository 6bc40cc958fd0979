"""Ordered parallel processing of an epoch's events in worker processes.

Upcasting and hashing are pure Python CPU work, so threads would not help;
worker processes do. To keep the parent free for writing, each worker reads
its own slice of the source (a range of commit positions) through its own
connection, processes it, and returns only the results. The parent keeps a
bounded window of slices in flight, so memory stays flat however large the
store, and consumes results in commit order, which is what checkpoints and
stream numbering need.

Workers are forked: they inherit the compiled registry and the function to
run, so neither needs to be importable by name. Where fork is unavailable,
or with one worker, the same functions run in the calling process. No more
workers start than there are slices to process (:data:`MAX_WORKERS` at
most), and they leave Ctrl-C to the parent, which stops them (see
:func:`ignore_interrupts`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventmig.config import MAX_WORKERS, default_workers
from eventmig.ports import EventStore

Range = tuple[int | None, int]  # (after, until]: positions bounding one slice


# In a worker: the store handles it reads from and the functions it runs, set before forking.
_handles: dict[str, Callable[[], EventStore]] = {}
_functions: dict[str, Callable[[list[tuple[Any, ...]]], Any]] = {}
# keyed by process id too: a forked worker must never use (or close) a handle of its parent
_opened: dict[tuple[int, str], EventStore] = {}


def slice_count(events: int, batch_size: int) -> int:
    """How many slices :func:`slices` cuts ``events`` events into (the last one may be short)."""
    return -(-events // batch_size)


def slices(store: EventStore, after: int | None, until: int, batch_size: int) -> Iterator[Range]:
    """Consecutive ranges of about ``batch_size`` events covering ``(after, until]``."""
    start = after
    while True:
        end = store.position_after(start, batch_size, until=until)
        if end is None:
            return
        yield (start, end)
        start = end
        if end >= until:
            return


def _run_slice(task: tuple[str, str, int | None, int]) -> tuple[int, int, Any]:
    handle_name, function_name, after, until = task
    key = (os.getpid(), handle_name)
    store = _opened.get(key)
    if store is None:
        store = _opened[key] = _handles[handle_name]()
    rows = [row for batch in store.read_all_rows(after, until=until, batch_size=1_000_000) for row in batch]
    return len(rows), until, _functions[function_name](rows)


class Workers:
    """A pool of forked workers running named functions over slices of named stores.

    ``sources`` maps a name to a zero-argument factory opening a store
    handle; it is called once per worker, after the fork, so no connection
    is ever shared between processes. ``tasks``, when known, is how many
    slices there are: no more workers start than that, and for one slice
    none (``processes`` says how many did).
    """

    def __init__(
        self,
        workers: int,
        sources: dict[str, Callable[[], EventStore]],
        functions: dict[str, Callable[[list[tuple[Any, ...]]], Any]],
        *,
        tasks: int | None = None,
    ) -> None:
        self.workers = max(1, min(workers, MAX_WORKERS, tasks if tasks is not None else workers))
        _handles.update(sources)
        _functions.update(functions)
        self._pool = None
        self.processes = 0
        if self.workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with interrupts_held():
                self._pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_start_worker)
            self.processes = self.workers

    def map(self, tasks: Sequence[tuple[str, str, Range]] | Iterator[tuple[str, str, Range]]) -> Iterator[tuple[int, int, Any]]:
        """Results of ``(source, function, (after, until))`` tasks, in task order.

        Each result is ``(events read, last position, function result)``. At
        most two slices per worker are in flight.
        """
        if self._pool is None:
            for source, function, (after, until) in tasks:
                yield _run_slice((source, function, after, until))
            return
        window: deque[Any] = deque()
        limit = self.workers + 1
        for source, function, (after, until) in tasks:
            window.append(self._pool.apply_async(_run_slice, ((source, function, after, until),)))
            if len(window) >= limit:
                yield window.popleft().get()
        while window:
            yield window.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        pid = os.getpid()
        for key in [k for k in _opened if k[0] == pid]:
            _opened.pop(key).close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: how much less CPU priority a worker has than the process consuming its results
WORKER_NICENESS = 3


def _start_worker() -> None:
    ignore_interrupts()
    _yield_to_parent()


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Around forking workers: a Ctrl-C meanwhile waits, so that no child starts with Python's handler.

    The children inherit the blocked signal and unblock it once they ignore
    it (:func:`ignore_interrupts`); the parent gets it when the forks are done.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_interrupts() -> None:
    """In a worker process: leave Ctrl-C to the parent.

    A terminal sends SIGINT to every process of the job. A worker that took
    it would die with a traceback of its own, mid-slice; the parent instead
    stops its workers (they hold nothing uncommitted that matters: the next
    run redoes their slices) and reports the interruption once.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _yield_to_parent() -> None:
    """Let the parent have a core whenever it wants one.

    The parent's share (writing batches, chaining digests) is serial: every
    moment it waits for a core, the whole job waits. The workers run ahead
    of it anyway, a window of slices at most, so they lose nothing by
    yielding: with one core per process fewer than there are processes,
    they fill the time the parent does not use.
    """
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass


def check_workers(workers: int | None) -> int:
    """The number of workers a job asked for (None: :func:`default_workers`), refused out of range."""
    if workers is None:
        return default_workers()
    if type(workers) is not int or not 1 <= workers <= MAX_WORKERS:
        from eventmig.errors import ConfigError

        raise ConfigError(f"workers must be between 1 and {MAX_WORKERS}, got {workers!r}")
    return workers
