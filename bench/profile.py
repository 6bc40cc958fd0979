"""Where the time goes: ``python -m bench.profile [--size 1m] [--tasks migrate,verify,rebuild]``.

Runs migrate, verify and/or rebuild (of the order-summary read model, as the
rebuild case does) on a fresh copy of the cached SQLite data set
under pyinstrument (a sampling profiler: ``pip install pyinstrument``, in the
``bench`` extra) and writes the call trees to ``bench/profiles/<task>-sqlite-<size>.txt``.
The profile covers the process that calls the library; when a job hands
work to worker processes, their share shows up as time waiting on them, and
``--py-spy`` (``pip install py-spy``) records the workers as well
(``py-spy record --subprocesses``, a flame graph per task).
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import cases, dataset

OUT = dataset.BENCH_DIR / "profiles"


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _kwargs(fn: Any, workers: int | None) -> dict[str, Any]:
    return {"workers": workers} if workers is not None and "workers" in inspect.signature(fn).parameters else {}


def profile(task: str, n: int, work: Path, out: Path, interval: float = 0.001, workers: int | None = 1) -> Path:
    from pyinstrument import Profiler

    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store

    source = dataset.cached_dataset(n)
    db = dataset.copy_dataset(source, work / "profile.db")
    compiled = cases._registry()
    store = open_store(dataset.sqlite_url(db))
    try:
        if task == "verify":
            migrate(store, compiled)
        job = _job(task)
        profiler = Profiler(interval=interval)
        started = time.perf_counter()
        profiler.start()
        report = job(store, compiled, **_kwargs(job, workers))
        profiler.stop()
        seconds = time.perf_counter() - started
    finally:
        store.close()
        dataset.remove_sqlite(db)
    del report
    out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{workers}w" if workers is not None else ""
    path = out / f"{task}-sqlite-{_label(n)}{suffix}.txt"
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    path.write_text(
        f"# eventmig {task}, SQLite, {n:,} events, workers={workers if workers is not None else 'default'}: "
        f"{seconds:.1f} s under the profiler ({n / seconds:,.0f} ev/s; sampling slows it a little)\n"
        f"# python -m bench.profile --size {_label(n).lower()} --tasks {task}"
        f"{f' --workers {workers}' if workers is not None else ' --workers default'}\n\n{text}"
    )
    return path


def _job(task: str) -> Any:
    """The library call a task profiles: ``job(store, compiled, workers=...)``."""
    from eventmig.jobs.migrate import migrate
    from eventmig.jobs.verify import verify

    if task == "rebuild":
        import projections
        from eventmig.jobs.rebuild import rebuild

        def rebuild_order_summary(store: Any, compiled: Any, workers: int | None = None) -> Any:
            return rebuild(store, projections.projections, registry=compiled, names=[cases.ORDER_SUMMARY],
                           workers=workers)

        return rebuild_order_summary
    return migrate if task == "migrate" else verify


def py_spy(task: str, n: int, out: Path) -> Path:
    """Record the job and its worker processes with py-spy (a flame graph, SVG)."""
    out.mkdir(parents=True, exist_ok=True)
    svg = out / f"{task}-sqlite-{_label(n)}.svg"
    code = (
        "import sys, pathlib, tempfile; from bench import profile; "
        f"profile.profile_plain({task!r}, {n}, pathlib.Path(tempfile.mkdtemp()))"
    )
    subprocess.run(
        ["py-spy", "record", "--subprocesses", "--rate", "200", "-o", str(svg), "--", sys.executable, "-c", code],
        check=True, cwd=dataset.REPO,
    )
    return svg


def profile_plain(task: str, n: int, work: Path) -> None:
    """The same job without pyinstrument (what py-spy records)."""
    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store

    db = dataset.copy_dataset(dataset.cached_dataset(n), work / "profile.db")
    store = open_store(dataset.sqlite_url(db))
    try:
        compiled = cases._registry()
        if task == "verify":
            migrate(store, compiled)
        _job(task)(store, compiled)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--size", default="1m")
    p.add_argument("--tasks", default="migrate,verify")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--workers", default="1",
                   help="worker processes of the job: 1 keeps all the work in the profiled process "
                        "(default); 'default' lets the job choose")
    p.add_argument("--py-spy", action="store_true", help="also record worker processes with py-spy")
    args = p.parse_args(argv)
    from .__main__ import _sizes

    (n,) = _sizes(args.size)
    work = Path(tempfile.mkdtemp(prefix="eventmig-profile-"))
    try:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            workers = None if args.workers == "default" else int(args.workers)
            path = profile(task, n, work, args.out, workers=workers)
            print(f"profiling {task} on SQLite, {n:,} events -> {path}", flush=True)
            if args.py_spy:
                print(f"  py-spy flame graph -> {py_spy(task, n, args.out)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
