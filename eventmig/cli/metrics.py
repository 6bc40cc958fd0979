"""Prometheus metrics of a long job (``--metrics-port``), fed by the job's progress and its run.

A :class:`Metrics` is a :class:`~eventmig.progress.Progress`: the jobs
already report every batch they read to their progress, and announce their
run and what each batch wrote (:class:`~eventmig.progress.RunObserver`), so
the metrics cost the hot loops nothing beyond a counter increment per batch.
They are served over HTTP from a thread of the job's process for as long as
the job runs; prometheus-client is an optional dependency
(``pip install 'eventmig[metrics]'``).

Every series is labelled with the command and the run id (several runs of
one rebuild, one per projection, are joined by commas). ``phase`` is what
the job is doing, in the words of its progress bars (``migrate epoch 1 ->
2``, ``verify epochs 1 and 2``, ``rebuild order_summary p0``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventmig.errors import ConfigError

EXTRA_MISSING = "--metrics-port needs prometheus-client: pip install 'eventmig[metrics]'"


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    return prometheus_client


class _PhaseTask:
    """One phase's share of the metrics: what it read, and how much of its total is left."""

    def __init__(self, metrics: Metrics, phase: str, total: int | None) -> None:
        self.metrics, self.phase, self.total = metrics, phase, total
        self.done = 0
        self.started = time.monotonic()
        self.labels = metrics.labels()
        self.read = metrics.read_total.labels(*self.labels, phase)

    def advance(self, n: int) -> None:
        self.done += n
        self.read.inc(n)
        elapsed = time.monotonic() - self.started
        if elapsed > 0:
            self.metrics.events_per_second.labels(*self.labels).set(self.done / elapsed)
        self.metrics.update_lag()

    def remaining(self) -> int:
        return max(self.total - self.done, 0) if self.total is not None else 0


class Metrics:
    """The metrics of one command's jobs, in a registry of their own; a Progress and a RunObserver."""

    def __init__(self, command: str) -> None:
        from eventmig.cli import about

        client = _client()
        self.command = command
        self.registry = client.CollectorRegistry()
        labels = ("command", "run_id")
        r = self.registry
        self.read_total = client.Counter(
            "eventmig_events_read", "Events read, per phase (rate() gives events/s).", (*labels, "phase"), registry=r)
        self.written_total = client.Counter(
            "eventmig_events_written", "Events written into the new epoch.", labels, registry=r)
        self.quarantined_total = client.Counter(
            "eventmig_events_quarantined", "Events set aside in the quarantine, with their reason.", labels, registry=r)
        self.events_per_second = client.Gauge(
            "eventmig_events_per_second", "Events read per second by the current phase, since it started.", labels,
            registry=r)
        self.lag = client.Gauge(
            "eventmig_lag_events", "Events the running phases have still to read (migrate: source events not yet "
            "copied into the new epoch).", labels, registry=r)
        self.phase = client.Gauge(
            "eventmig_phase", "1 while the job is in this phase, 0 once it is over.", (*labels, "phase"), registry=r)
        self.run_info = client.Gauge(
            "eventmig_run_info", "The runs the job works for: what each is (subject).", (*labels, "subject"), registry=r)
        self.started = client.Gauge(
            "eventmig_job_started_timestamp_seconds", "When the command started (Unix time).", ("command",), registry=r)
        client.Gauge("eventmig_build_info", "eventmig's version.", ("version",), registry=r).labels(about.version()).set(1)
        self.started.labels(command).set(time.time())
        self.runs: list[str] = []
        self._fresh_runs = True  # the next announcement adds to the current runs rather than replacing them
        self.tasks: list[_PhaseTask] = []
        self._server: Any = None
        self._lock = threading.Lock()

    def labels(self) -> tuple[str, str]:
        return (self.command, ",".join(self.runs))

    # ------------------------------------------------------------ Progress
    @contextmanager
    def task(self, label: str, total: int | None) -> Iterator[_PhaseTask]:
        self._fresh_runs = False
        task = _PhaseTask(self, label, total)
        phase = self.phase.labels(*task.labels, label)
        phase.set(1)
        with self._lock:
            self.tasks.append(task)
        self.update_lag()
        try:
            yield task
        finally:
            phase.set(0)
            with self._lock:
                self.tasks.remove(task)
            self.update_lag()

    def update_lag(self) -> None:
        with self._lock:
            self.lag.labels(*self.labels()).set(sum(t.remaining() for t in self.tasks))

    # --------------------------------------------------------- RunObserver
    def run_started(self, run_id: str, subject: str) -> None:
        if not self._fresh_runs:  # a new job of the same command (the demo's rebuild after its migrate)
            self.runs = []
            self._fresh_runs = True
        if run_id not in self.runs:
            self.runs.append(run_id)
        self.run_info.labels(self.command, run_id, subject).set(1)

    def events_written(self, written: int, quarantined: int) -> None:
        labels = self.labels()
        self.written_total.labels(*labels).inc(written)
        if quarantined:
            self.quarantined_total.labels(*labels).inc(quarantined)

    # ------------------------------------------------------------- serving
    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread until :meth:`close`."""
        client = _client()
        try:
            self._server, _thread = client.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
