"""``python -m bench``: run the benchmarks and write bench/results.{md,json}. See bench/README.md."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from . import dataset, harness, report


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        scale = 1_000_000 if part.endswith("m") else 1000 if part.endswith("k") else 1
        out.append(int(float(part.rstrip("mk")) * scale))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sizes", default="100k,1m", help="data set sizes, e.g. 100k,1m (default: %(default)s)")
    p.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres, esdb-standin (SQLite into the EventStoreDB stand-in, migrate only) "
                        "(default: %(default)s)")
    p.add_argument("--cases", default=",".join(harness.ALL_CASES),
                   help=f"any of {', '.join(harness.ALL_CASES)}, or floors one by one: "
                        f"{', '.join(harness.RAW_CASES)} (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="runs per case; the median is reported (default: 3)")
    p.add_argument("--baseline-repeats", type=int, default=None,
                   help="runs of the (slow) eventsourcing projection (default: --repeats)")
    p.add_argument("--workers", default="1,2", help="rebuild worker counts (default: %(default)s)")
    p.add_argument("--scaling", default="100k,1m,5m",
                   help="sizes for the migrate-on-SQLite scaling run; '' for none (default: %(default)s)")
    p.add_argument("--seed", type=int, default=dataset.DEFAULT_SEED)
    p.add_argument("--postgres", default=dataset.POSTGRES_URL, help="PostgreSQL server URL (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="directory of the results files (default: bench/)")
    p.add_argument("--merge", action="store_true",
                   help="re-measure the selected cases and merge them into the existing results file "
                        "(cases measured now replace the same case, store, size and workers; the rest stay)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 2,000 events, 1 repeat, no scaling run; writes results-quick.{md,json}")
    return p


def options_from(args: argparse.Namespace) -> harness.Options:
    if args.quick:
        given = set(sys.argv[1:])
        sizes = _sizes(args.sizes) if any(a.startswith("--sizes") for a in given) else [2000]
        repeats = args.repeats if any(a.startswith("--repeats") for a in given) else 1
        scaling = _sizes(args.scaling) if any(a.startswith("--scaling") for a in given) else []
    else:
        sizes, repeats, scaling = _sizes(args.sizes), args.repeats, _sizes(args.scaling)
    return harness.Options(
        sizes=sizes,
        stores=[s.strip() for s in args.stores.split(",") if s.strip()],
        cases=[c.strip() for c in args.cases.split(",") if c.strip()],
        repeats=repeats,
        baseline_repeats=args.baseline_repeats,
        workers=[int(w) for w in args.workers.split(",") if w.strip()],
        scaling=scaling,
        seed=args.seed,
        postgres_url=args.postgres,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    options = options_from(args)
    for store in options.stores:
        if store not in ("sqlite", "postgres", harness.ESDB_STANDIN):
            parser().error(f"unknown store {store!r}")
    for case in options.cases:
        if case not in harness.ALL_CASES and case not in harness.RAW_CASES:
            parser().error(f"unknown case {case!r}")
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    bench = harness.Harness(options, log=lambda s: print(s, flush=True))
    bench.run()
    data = report.build(bench, options, started, argv)
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = args.out or dataset.BENCH_DIR
    stem = "results-quick" if args.quick else "results"
    if args.merge and (out / f"{stem}.json").exists():
        data = report.merge(json.loads((out / f"{stem}.json").read_text()), data)
        data["updates"][-1]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    json_path, md_path = report.write(data, out, stem)
    print(f"wrote {md_path} and {json_path}; this run took {time.perf_counter() - t0:.0f} s")
    failed = [r for r in data["results"] if r["status"] == "failed"]
    for r in failed:
        print(f"FAILED: {r['case']} on {r['store']} at {r['n']}: {r['note']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
