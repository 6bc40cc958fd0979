"""Where a rebuild's time goes, phase by phase: ``python -m bench.phases [--size 1m] [--stores ...]``.

A sampling profiler sees the parent of a parallel rebuild waiting; this
times the phases inside every worker process too, by wrapping the
rebuilder's own functions (the workers are forked, so they inherit the
wrappers): per worker, reading the store (``read_all_rows``), folding
(``_Folder.fold``), committing states with checkpoints (``commit``) and
turning states into shadow rows (``finish``); in the parent, the work
before the workers start, the verification of the shadow tables and the
swap. Then the same data set's two-process fold floor (``raw.fold2``), for
the gap. Writes ``bench/profiles/rebuild-phases.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import cases, dataset

OUT = dataset.BENCH_DIR / "profiles" / "rebuild-phases.md"
WORKER_PHASES = ("read", "fold", "commit", "finish")


#: where the workers of the rebuild being measured write their phases
_spool: Path | None = None


def _instrument() -> None:
    """Wrap the rebuilder's phases with timers; each worker writes its totals to ``<_spool>/<pid>.json``."""
    from eventmig.jobs.rebuild import folder, workers
    from eventmig.backends.sql.store import SQLEventStore

    totals: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name in ("fold", "commit", "finish"):
        setattr(folder.Folder, name, timed(name, getattr(folder.Folder, name)))
    read_all_rows = SQLEventStore.read_all_rows

    def timed_reads(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        pages = read_all_rows(self, *args, **kwargs)
        while True:
            started = time.perf_counter()
            page = next(pages, None)
            totals["read"] = totals.get("read", 0.0) + time.perf_counter() - started
            if page is None:
                return
            yield page

    SQLEventStore.read_all_rows = timed_reads  # type: ignore[method-assign]
    fold_units = workers.fold_units

    def timed_fold_units(*args: Any, **kwargs: Any) -> Any:
        totals.clear()
        started = time.perf_counter()
        try:
            return fold_units(*args, **kwargs)
        finally:
            totals["worker"] = time.perf_counter() - started
            if _spool is not None:
                (_spool / f"{os.getpid()}.json").write_text(json.dumps(totals))

    workers.fold_units = timed_fold_units


def measure(store: str, n: int, workers: int, work: Path) -> dict[str, Any]:
    """One rebuild of the order summary with its phases, and the fold floor on the same data."""
    import projections
    from eventmig.jobs.rebuild import rebuild
    from eventmig.backends import open_store

    from . import raw

    global _spool
    spool = _spool = Path(tempfile.mkdtemp(dir=work))
    source = dataset.cached_dataset(n)
    schema = None
    if store == "sqlite":
        path = dataset.copy_dataset(source, work / "phases.db")
        url, target = dataset.sqlite_url(path), str(path)
    else:
        schema, url = dataset.new_schema()
        dataset.load_postgres(source, url)
        target = dataset.libpq_url(url)
    try:
        handle = open_store(url)
        started = time.perf_counter()
        report = rebuild(handle, projections.projections, registry=cases._registry(), names=[cases.ORDER_SUMMARY],
                         workers=workers)
        seconds = time.perf_counter() - started
        handle.close()
        floor = raw.fold2("postgres" if store == "postgres" else "sqlite", target)["seconds"]
    finally:
        if schema:
            dataset.drop_schema(schema)
        elif store == "sqlite":
            dataset.remove_sqlite(work / "phases.db")
    per_worker = [json.loads(p.read_text()) for p in sorted(spool.iterdir())]
    longest = max(w["worker"] for w in per_worker)
    return {
        "seconds": seconds, "floor": floor, "workers": per_worker, "longest_worker": longest,
        "verify": report.timings.get("verify", 0.0), "swap": report.timings.get("swap", 0.0),
        # fold is the parent's time up to the end of the workers and the shadow tables' indexes
        "parent_other": report.timings.get("fold", 0.0) - longest,
    }


def markdown(results: dict[str, list[dict[str, Any]]], n: int, workers: int) -> str:
    header = (["store", "rebuild", "slowest worker"] + [f"worker: {p}" for p in WORKER_PHASES]
              + ["parent: other", "parent: verify", "parent: swap", "raw.fold2", "speed / floor's"])
    lines = [
        "# Where a rebuild's time goes",
        "",
        f"`python -m bench.phases` (the order summary, {n:,} events, {workers} workers): seconds, medians of "
        f"{len(next(iter(results.values())))} runs; a worker phase is the median over every worker of every run. "
        "The parent's share: before and after the workers (counting, planning, starting them, the shadow "
        "tables' indexes), verifying the shadow tables, swapping them in. `raw.fold2` is the two-process fold "
        "floor on the same data, in the same session; the last column is the rebuild's speed over the floor's.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}"

    for store, runs in results.items():
        phases = [med([w.get(p, 0.0) for r in runs for w in r["workers"]]) for p in WORKER_PHASES]
        rebuild_s = statistics.median(r["seconds"] for r in runs)
        floor_s = statistics.median(r["floor"] for r in runs)
        lines.append(
            f"| {store} | {rebuild_s:.2f} | {med([r['longest_worker'] for r in runs])} | " + " | ".join(phases)
            + f" | {med([r['parent_other'] for r in runs])} | {med([r['verify'] for r in runs])} | "
            f"{med([r['swap'] for r in runs])} | {floor_s:.2f} | {floor_s / rebuild_s:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    p.add_argument("--size", default="1m")
    p.add_argument("--stores", default="sqlite,postgres")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    from .__main__ import _sizes

    (n,) = _sizes(args.size)
    work = Path(tempfile.mkdtemp(prefix="eventmig-phases-"))
    _instrument()
    results: dict[str, list[dict[str, Any]]] = {}
    for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
        for i in range(args.runs):
            run = measure(store, n, args.workers, work)
            results.setdefault(store, []).append(run)
            print(f"{store} run {i + 1}: rebuild {run['seconds']:.2f} s, floor {run['floor']:.2f} s", flush=True)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(results, n, args.workers))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
