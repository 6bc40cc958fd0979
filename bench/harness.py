"""The harness: prepares stores, runs every case in a fresh process, measures it, aggregates.

Peak RSS of a run is measured on the whole process tree that does the work
(the case's process and any worker processes it starts):

* ``rss_tree_mb``: the parent samples the tree every 50 ms (``/proc/<pid>/
  task/*/children``, recursively) and sums the resident set of its live
  processes: what the job holds at once, workers included. Pages shared
  between a process and its forked workers count once per process, so with
  workers this is an upper bound.
* ``pss_tree_mb``: the same samples summing the proportional set size
  (``/proc/<pid>/smaps_rollup``), which splits shared pages between the
  processes sharing them: the tree's real footprint, kept for comparison.
* ``rss_self_mb``: the case process's own high-water mark (``VmHWM``, read by
  the process itself at the end), which catches spikes between two samples.
  Not ``ru_maxrss`` from ``wait4()``: Linux carries that across ``exec``, so
  it would include the pages of the harness process that forked the run.
* ``rss_workers_max_mb``: ``getrusage(RUSAGE_CHILDREN)`` in the case process,
  the largest peak of a worker it reaped (a maximum over workers, not a sum;
  it includes the pages a worker shares with the process that forked it).

``peak_rss_mb`` is the larger of ``rss_tree_mb`` and ``rss_self_mb``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cases, dataset

PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------ measuring a run
class _TreeSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_bytes = 0
        self.peak_pss_bytes = 0  # proportional set size: shared pages split between their sharers
        self.max_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = _tree(self.pid)
            total = pss = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/statm") as f:
                        total += int(f.read().split()[1]) * PAGE
                    pss += _pss_bytes(pid)
                except (OSError, ValueError, IndexError):
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self.max_processes = max(self.max_processes, len(pids))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def run_in_child(spec: dict[str, Any], *, timeout: float = 4 * 3600, workdir: Path) -> dict[str, Any]:
    """Run one case in a fresh interpreter; return its result plus peak RSS figures."""
    spec_path = workdir / "spec.json"
    result_path = workdir / "result.json"
    log_path = workdir / "child.log"
    spec_path.write_text(json.dumps(spec))
    if result_path.exists():
        result_path.unlink()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(dataset.REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", str(spec_path), str(result_path)],
            cwd=dataset.REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        result = {"ok": False, "error": f"the run exited {proc.returncode} without a result: {tail.strip()[-500:]}"}
    rss_self = result.get("self_peak_kb", 0) / 1024  # KiB -> MiB
    rss_tree = sampler.peak_bytes / 2**20
    result.update(
        # CPU time of the whole process (interpreter start and imports included); the case's own
        # share, measured inside the child around the job, is ``cpu_seconds``
        process_cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        rss_self_mb=round(rss_self, 1), rss_tree_mb=round(rss_tree, 1),
        pss_tree_mb=round(sampler.peak_pss_bytes / 2**20, 1),
        rss_workers_max_mb=round(result.get("workers_maxrss_kb", 0) / 1024, 1),
        peak_rss_mb=round(max(rss_self, rss_tree), 1), processes=sampler.max_processes,
    )
    if not result.get("ok") and log_path.exists():
        result.setdefault("log_tail", log_path.read_text()[-3000:])
    return result


# ------------------------------------------------------------------ the plan
TASKS = {
    # case -> (task it measures, implementation)
    "eventmig.jobs.migrate": ("migrate", "eventmig"),
    "raw.copy": ("migrate", "raw"),
    "raw.write": ("migrate", "raw"),
    "eventmig.jobs.verify": ("verify", "eventmig"),
    "raw.read": ("verify", "raw"),
    "eventmig.upcast-read": ("read+upcast", "eventmig"),
    "eventsourcing.read": ("read+upcast", "eventsourcing"),
    "eventmig.jobs.rebuild": ("rebuild", "eventmig"),
    "raw.fold": ("rebuild", "raw"),
    "raw.fold2": ("rebuild", "raw"),
    "eventsourcing.project": ("rebuild", "eventsourcing"),
    "eventsourcing.load": ("load", "eventsourcing"),
}
ALL_CASES = ["migrate", "verify", "upcast-read", "rebuild", "raw", "eventsourcing"]
#: the floors and ceilings one by one (``raw`` selects them all)
RAW_CASES = ["raw.copy", "raw.write", "raw.read", "raw.fold", "raw.fold2"]


@dataclass
class Options:
    sizes: list[int]
    stores: list[str]
    cases: list[str]
    repeats: int = 3
    baseline_repeats: int | None = None  # eventsourcing projection runs (slow); default: repeats
    workers: list[int] = field(default_factory=lambda: [1, 2])
    scaling: list[int] = field(default_factory=list)  # extra sizes for migrate on SQLite
    seed: int = dataset.DEFAULT_SEED
    data_dir: Path = dataset.DATA_DIR
    postgres_url: str = dataset.POSTGRES_URL
    timeout: float = 4 * 3600


@dataclass
class CaseResult:
    case: str
    task: str
    impl: str
    store: str
    n: int
    workers: int | None
    status: str  # "ok" | "not available" | "failed"
    note: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)
    scaling: bool = False

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.runs if r.get("ok")]
        if not ok:
            return {}
        seconds = statistics.median(r["seconds"] for r in ok)
        events = ok[0]["events_read"]
        return {
            "runs": len(ok),
            "events": events,
            "seconds": round(seconds, 3),
            "events_per_s": round(events / seconds, 1) if seconds else None,
            "cpu_seconds": round(statistics.median(r.get("cpu_seconds", 0) for r in ok), 3),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in ok), 1),
            "processes": max(r.get("processes", 1) for r in ok),
        }

    def as_json(self) -> dict[str, Any]:
        from .report import source_revision

        return {
            "revision": source_revision(),
            "case": self.case, "task": self.task, "impl": self.impl, "store": self.store, "n": self.n,
            "workers": self.workers, "status": self.status, "note": self.note, "scaling": self.scaling,
            "median": self.summary(), "runs": self.runs,
        }


class Harness:
    def __init__(self, options: Options, log: Callable[[str], None] = print) -> None:
        self.o = options
        self.log = log
        self.results: list[CaseResult] = []
        self.datasets: dict[int, dict[str, Any]] = {}
        self.loads: dict[str, dict[int, float]] = {}
        self.work = Path(tempfile.mkdtemp(prefix="eventmig-bench-"))
        self._rebuild_missing = cases.rebuild_available()
        self._pg_missing = dataset.postgres_available(options.postgres_url) if "postgres" in options.stores else None

    # ----------------------------------------------------------------- runs
    def _wants(self, case: str) -> bool:
        """Whether ``--cases`` selects this case: a floor by its own name or by ``raw``, eventmig's by its task."""
        if case.startswith("raw."):
            return "raw" in self.o.cases or case in self.o.cases
        return case.split(".", 1)[1] in self.o.cases

    def _measure(self, result: CaseResult, spec: dict[str, Any], prepare: Callable[[int], dict[str, Any]] | None, repeats: int) -> None:
        spec = {"case": result.case, "store": result.store, "n": result.n, "workers": result.workers, **spec}
        for i in range(repeats):
            extra = prepare(i) if prepare else {}
            load_before = round(os.getloadavg()[0], 2)
            run = run_in_child({**spec, **extra}, workdir=self.work, timeout=self.o.timeout)
            run["loadavg_1m_before"] = load_before
            run.pop("traceback", None) if run.get("ok") else None
            result.runs.append(run)
            if not run.get("ok"):
                result.status = "failed"
                result.note = run.get("error", "failed")
                self.log(f"    run {i + 1}: FAILED {result.note}")
                if run.get("log_tail"):
                    self.log(run["log_tail"])
                break
            if run["events_read"] != result.n:
                result.status, result.note = "failed", f"read {run['events_read']} events, expected {result.n}"
                self.log(f"    run {i + 1}: FAILED {result.note}")
                break
            self.log(
                f"    run {i + 1}: {run['seconds']:.2f} s, {run['events_read'] / run['seconds']:,.0f} ev/s, "
                f"peak RSS {run['peak_rss_mb']:.0f} MB ({run['processes']} process{'es' if run['processes'] > 1 else ''})"
            )
        self.results.append(result)

    def _start(self, case: str, store: str, n: int, workers: int | None = None, *, scaling: bool = False) -> CaseResult:
        task, impl = TASKS[case]
        label = f"{case}{f' [{workers} worker' + ('s' if workers > 1 else '') + ']' if workers else ''}"
        self.log(f"  {label} on {store}, {n:,} events")
        return CaseResult(case, task, impl, store, n, workers, "ok", scaling=scaling)

    def _skip(self, case: str, store: str, n: int, why: str, workers: int | None = None) -> None:
        task, impl = TASKS[case]
        self.log(f"  {case} on {store}, {n:,} events: {why}")
        self.results.append(CaseResult(case, task, impl, store, n, workers, "not available", why))

    def run(self) -> None:
        try:
            for n in self.o.sizes:
                source = dataset.cached_dataset(n, self.o.seed, data_dir=self.o.data_dir, log=self.log)
                self.datasets[n] = dataset.dataset_stats(source)
                for store in self.o.stores:
                    if store == "sqlite":
                        self._sqlite(n, source)
                    elif store == "postgres":
                        self._postgres(n, source)
            for n in self.o.scaling:
                if n in self.o.sizes and "sqlite" in self.o.stores and "migrate" in self.o.cases:
                    continue  # already measured in the main matrix
                source = dataset.cached_dataset(n, self.o.seed, data_dir=self.o.data_dir, log=self.log)
                self.datasets[n] = dataset.dataset_stats(source)
                self.log(f"scaling: SQLite, {n:,} events")
                self._sqlite_migrate(n, source, scaling=True)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    # --------------------------------------------------------------- SQLite
    def _sqlite_migrate(self, n: int, source: Path, *, scaling: bool = False) -> None:
        db = self.work / "run.db"
        result = self._start("eventmig.jobs.migrate", "sqlite", n, scaling=scaling)
        self._measure(result, {}, lambda i: {"url": dataset.sqlite_url(dataset.copy_dataset(source, db))}, self.o.repeats)
        dataset.remove_sqlite(db)

    def _sqlite(self, n: int, source: Path) -> None:
        self.log(f"SQLite, {n:,} events")
        o, db = self.o, self.work / "run.db"

        def fresh(i: int, src: Path = source) -> dict[str, Any]:
            path = dataset.copy_dataset(src, db)
            return {"url": dataset.sqlite_url(path), "target": str(path)}

        if "migrate" in o.cases:
            self._sqlite_migrate(n, source)
        for case in ("raw.copy", "raw.write", "raw.read"):
            if self._wants(case):
                self._measure(self._start(case, "sqlite", n), {}, fresh, o.repeats)
        if "upcast-read" in o.cases:
            self._measure(self._start("eventmig.upcast-read", "sqlite", n), {}, fresh, o.repeats)
        if "verify" in o.cases:
            migrated = self.work / "migrated.db"
            dataset.copy_dataset(source, migrated)
            self._prepare_migrated(dataset.sqlite_url(migrated))
            self._measure(self._start("eventmig.jobs.verify", "sqlite", n), {},
                          lambda i: fresh(i, migrated), o.repeats)
            dataset.remove_sqlite(migrated)
        if "rebuild" in o.cases:
            for w in o.workers:
                if self._rebuild_missing:
                    self._skip("eventmig.jobs.rebuild", "sqlite", n, self._rebuild_missing, w)
                    continue
                self._measure(self._start("eventmig.jobs.rebuild", "sqlite", n, w), {}, fresh, o.repeats)
        for case in ("raw.fold", "raw.fold2"):
            if self._wants(case):
                self._measure(self._start(case, "sqlite", n), {}, fresh, o.repeats)
        if "eventsourcing" in o.cases:
            self._eventsourcing(n, source)
        dataset.remove_sqlite(db)

    def _eventsourcing(self, n: int, source: Path) -> None:
        app_db = self.work / "es-app.db"
        view_db = self.work / "es-view.db"
        dataset.remove_sqlite(app_db)
        load = self._start("eventsourcing.load", "sqlite", n)
        self._measure(load, {"source": str(source), "app_db": str(app_db)}, None, 1)
        if load.status != "ok":
            return
        self._measure(self._start("eventsourcing.read", "sqlite", n), {"app_db": str(app_db)}, None, self.o.repeats)

        def fresh_view(i: int) -> dict[str, Any]:
            dataset.remove_sqlite(view_db)
            return {}

        self._measure(
            self._start("eventsourcing.project", "sqlite", n), {"app_db": str(app_db), "view_db": str(view_db)},
            fresh_view, self.o.baseline_repeats or self.o.repeats,
        )
        dataset.remove_sqlite(app_db)
        dataset.remove_sqlite(view_db)

    def _prepare_migrated(self, url: str) -> None:
        """Migrate a store (untimed, in this process) for the verify runs to read."""
        from eventmig.jobs.migrate import migrate
        from eventmig.backends import open_store

        store = open_store(url)
        try:
            migrate(store, cases._registry())
        finally:
            store.close()

    # ----------------------------------------------------------- PostgreSQL
    def _postgres(self, n: int, source: Path) -> None:
        self.log(f"PostgreSQL, {n:,} events")
        o = self.o
        if self._pg_missing:
            for case in ("eventmig.jobs.migrate", "raw.copy", "raw.write", "raw.read", "eventmig.upcast-read", "eventmig.jobs.verify",
                         "raw.fold", "raw.fold2"):
                if self._wants(case):
                    self._skip(case, "postgres", n, f"not available: {self._pg_missing}")
            return
        schemas: list[str] = []
        try:
            schema, url = dataset.new_schema(o.postgres_url)
            schemas.append(schema)
            seconds = dataset.load_postgres(source, url)
            self.loads.setdefault("postgres", {})[n] = round(seconds, 2)
            self.log(f"  loaded through write_batch in {seconds:.1f} s ({n / seconds:,.0f} ev/s)")
            libpq = dataset.libpq_url(url)

            def legacy(i: int) -> dict[str, Any]:
                _reset_postgres(url)
                return {"url": url, "target": libpq}

            if "migrate" in o.cases:
                self._measure(self._start("eventmig.jobs.migrate", "postgres", n), {}, legacy, o.repeats)
            for case in ("raw.copy", "raw.write", "raw.read"):
                if self._wants(case):
                    self._measure(self._start(case, "postgres", n), {}, legacy, o.repeats)
            if "upcast-read" in o.cases:
                self._measure(self._start("eventmig.upcast-read", "postgres", n), {}, legacy, o.repeats)
            if "rebuild" in o.cases:
                for w in o.workers:
                    if self._rebuild_missing:
                        self._skip("eventmig.jobs.rebuild", "postgres", n, self._rebuild_missing, w)
                        continue
                    self._measure(self._start("eventmig.jobs.rebuild", "postgres", n, w), {}, legacy, o.repeats)
            for case in ("raw.fold", "raw.fold2"):
                if self._wants(case):
                    self._measure(self._start(case, "postgres", n), {}, legacy, o.repeats)
            if "verify" in o.cases:
                _reset_postgres(url)
                self._prepare_migrated(url)
                self._measure(self._start("eventmig.jobs.verify", "postgres", n), {"url": url}, None, o.repeats)
        finally:
            for schema in schemas:
                dataset.drop_schema(schema, o.postgres_url)


def _reset_postgres(url: str) -> None:
    """Back to the loaded legacy store: drop what earlier runs created (the source is never written)."""
    import psycopg

    with psycopg.connect(dataset.libpq_url(url), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()]
        keep = {"events", "eventmig_epochs", "eventmig_runs", "eventmig_quarantine", "eventmig_switches"}
        for table in tables:
            if table not in keep:
                conn.execute(f"DROP TABLE {table} CASCADE")
        conn.execute("DELETE FROM eventmig_epochs WHERE epoch <> 1")
        conn.execute("UPDATE eventmig_epochs SET status = 'active' WHERE epoch = 1")
        conn.execute("DELETE FROM eventmig_runs")
        conn.execute("DELETE FROM eventmig_quarantine")
        conn.execute("DELETE FROM eventmig_switches")
        conn.execute("CHECKPOINT")
