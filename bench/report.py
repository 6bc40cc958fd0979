"""Results files: ``results.json`` (everything, every run) and ``results.md`` (the tables)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

from . import dataset

#: how much the peak RSS of migrate may grow from 1M to 5M events and still count as flat
FLAT_RSS_GROWTH = 1.25


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem / 2**30, 1),
        "os": platform.platform(),
    }


def source_revision() -> str | None:
    """The commit measured: ``BENCH_REVISION`` when run from an exported tree, else ``git describe``."""
    if os.environ.get("BENCH_REVISION"):
        return os.environ["BENCH_REVISION"]
    import subprocess

    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=dataset.REPO, capture_output=True, text=True, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def versions(postgres_url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql": dataset.postgres_version(postgres_url) if postgres_url else None,
    }
    for package in ("eventmig", "msgspec", "sqlalchemy", "psycopg", "eventsourcing", "pyinstrument"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


# ------------------------------------------------------------------- targets
def _find(results: list[dict[str, Any]], case: str, store: str, n: int, workers: int | None = None) -> dict[str, Any] | None:
    for r in results:
        if r["case"] == case and r["store"] == store and r["n"] == n and (workers is None or r["workers"] == workers):
            if r["status"] == "ok" and r["median"]:
                return r["median"]
    return None


def targets(results: list[dict[str, Any]], size: int = 1_000_000, big: int = 5_000_000) -> list[dict[str, Any]]:
    """Each target, what was measured against it, and whether it was met (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(
        name: str, goal: str, measured: float | None, met: bool | None, unit: str = "",
        bound: tuple[str, float | None, float] | None = None,
    ) -> None:
        row = {"target": name, "goal": goal, "measured": measured, "unit": unit, "met": None if measured is None else met}
        if bound is not None:
            # what the hand-written floor that bounds this job reached: (floor case, its ev/s, the goal)
            case, value, wanted = bound
            row["floor_case"], row["floor"] = case, value
            row["goal_above_floor"] = None if value is None else value < wanted
        out.append(row)

    def rate(case: str, store: str, workers: int | None = None) -> float | None:
        m = _find(results, case, store, size, workers)
        return m["events_per_s"] if m else None

    def rss(case: str, store: str, n: int = size, workers: int | None = None) -> float | None:
        m = _find(results, case, store, n, workers)
        return m["peak_rss_mb"] if m else None

    label = f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"
    for store, goal in (("sqlite", 200_000), ("postgres", 150_000)):
        v = rate("eventmig.jobs.migrate", store)
        add(f"migrate {store} {label}", f">= {goal:,} ev/s", v, v is not None and v >= goal, "ev/s",
            ("raw.write", rate("raw.write", store), goal))
    for store, goal in (("sqlite", 500_000), ("postgres", 300_000)):
        v = rate("eventmig.jobs.rebuild", store, 2)
        add(f"rebuild 2 workers {store} {label}", f">= {goal:,} ev/s", v, v is not None and v >= goal, "ev/s",
            ("raw.fold2", rate("raw.fold2", store), goal))
    es = rate("eventsourcing.project", "sqlite")
    for store in ("sqlite", "postgres"):
        v = rate("eventmig.jobs.rebuild", store, 2)
        ratio = round(v / es, 1) if v and es else None
        fold2 = rate("raw.fold2", store)
        add(f"rebuild 2 workers {store} {label} vs eventsourcing projection", ">= 50x", ratio,
            ratio is not None and ratio >= 50, "x", ("raw.fold2", round(fold2 / es, 1) if fold2 and es else None, 50))
    for store in ("sqlite", "postgres"):
        v, m = rate("eventmig.jobs.verify", store), rate("eventmig.jobs.migrate", store)
        ratio = round(v / m, 2) if v and m else None
        add(f"verify {store} {label} at least as fast as migrate", ">= 1.0x migrate", ratio,
            ratio is not None and ratio >= 1.0, "x")
    for case, what, workers in (("eventmig.jobs.migrate", "migrate", None), ("eventmig.jobs.rebuild", "rebuild 2 workers", 2)):
        for store in ("sqlite", "postgres"):
            v = rss(case, store, workers=workers)
            add(f"peak RSS {what} {store} {label}", "< 300 MB", v, v is not None and v < 300, "MB")
    small, large = rss("eventmig.jobs.migrate", "sqlite"), rss("eventmig.jobs.migrate", "sqlite", big)
    growth = round(large / small, 2) if small and large else None
    add(f"peak RSS migrate sqlite flat from {label} to {big // 1_000_000}M", f"<= {FLAT_RSS_GROWTH}x", growth,
        growth is not None and growth <= FLAT_RSS_GROWTH, "x")
    return out


# -------------------------------------------------------------------- output
def build(harness: Any, options: Any, started: dt.datetime, argv: list[str]) -> dict[str, Any]:
    results = [r.as_json() for r in harness.results]
    return {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *_without_out(argv)]),
        "revision": source_revision(),
        "machine": machine(),
        "versions": versions(options.postgres_url if "postgres" in options.stores else None),
        "options": {
            "sizes": options.sizes, "stores": options.stores, "cases": options.cases, "repeats": options.repeats,
            "baseline_repeats": options.baseline_repeats or options.repeats, "workers": options.workers,
            "scaling": options.scaling, "seed": options.seed,
        },
        "datasets": {str(n): s for n, s in sorted(harness.datasets.items())},
        "postgres_load_seconds": {str(n): s for n, s in harness.loads.get("postgres", {}).items()},
        "results": results,
        "targets": targets(results),
    }


def _without_out(argv: list[str]) -> list[str]:
    """The command line minus ``--out DIR`` (where the files went is not part of what was measured)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            out.append(arg)
    return out


#: case names results were recorded under before the jobs moved into eventmig.jobs
RENAMED = {"eventmig.migrate": "eventmig.jobs.migrate", "eventmig.verify": "eventmig.jobs.verify",
           "eventmig.rebuild": "eventmig.jobs.rebuild"}


def current_names(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its results' case names as the harness names them now, so old figures still count."""
    for r in data["results"]:
        r["case"] = RENAMED.get(r["case"], r["case"])
    return data


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The old results with the newly measured cases put in (replacing the same case, store, size, workers)."""
    old = current_names(old)
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["case"], r["store"], r["n"], r["workers"], r.get("scaling", False))

    fresh = {key(r) for r in new["results"]}
    merged = dict(old)
    merged["results"] = [r for r in old["results"] if key(r) not in fresh] + new["results"]
    order = {c: i for i, c in enumerate(CASE_ORDER)}
    merged["results"].sort(key=lambda r: (r.get("scaling", False), r["n"], ["sqlite", "postgres", "esdb-standin"].index(r["store"]),
                                          order.get(r["case"], 99), r["workers"] or 0))
    merged["datasets"] = {**old.get("datasets", {}), **new["datasets"]}
    merged["postgres_load_seconds"] = {**old.get("postgres_load_seconds", {}), **new.get("postgres_load_seconds", {})}
    merged["updates"] = [*old.get("updates", []), {
        "date": new["date"], "revision": new.get("revision"), "command": new["command"],
        "cases": sorted({f"{r['case']} {r['store']} {r['n']}" + (f" {r['workers']}w" if r["workers"] else "")
                         for r in new["results"]}),
    }]
    merged["targets"] = targets(merged["results"])
    return merged


CASE_ORDER = ["eventmig.jobs.migrate", "raw.copy", "raw.write", "raw.read", "eventmig.upcast-read", "eventmig.jobs.verify",
              "eventmig.jobs.rebuild", "raw.fold", "raw.fold2", "eventsourcing.load", "eventsourcing.read",
              "eventsourcing.project"]


def write(data: dict[str, Any], out_dir: Path, stem: str = "results") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(markdown(data))
    return json_path, md_path


def _n(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (f"{n // 1000}k" if n % 1000 == 0 else str(n))


def _rate(m: dict[str, Any] | None) -> str:
    return f"{m['events_per_s']:,.0f}" if m else "–"


def _mb(m: dict[str, Any] | None) -> str:
    return f"{m['peak_rss_mb']:,.0f}" if m else "–"


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    shown = f"{value:,.0f}" if isinstance(value, float) and value >= 1000 else f"{value:,}"
    return f"{shown} {unit}".strip()


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b:
        return "–"
    return f"{a['events_per_s'] / b['events_per_s']:.2f}x"


ROWS = [
    # label, eventmig case, workers, raw floor case, eventsourcing case
    ("migrate (copy-transform)", "eventmig.jobs.migrate", None, "raw.copy", None),
    ("verify", "eventmig.jobs.verify", None, "raw.read", None),
    ("read + upcast (migrate --dry-run)", "eventmig.upcast-read", None, "raw.read", "eventsourcing.read"),
    ("rebuild, 1 worker", "eventmig.jobs.rebuild", 1, "raw.fold", "eventsourcing.project"),
    ("rebuild, 2 workers", "eventmig.jobs.rebuild", 2, "raw.fold2", "eventsourcing.project"),
]


def markdown(data: dict[str, Any]) -> str:
    results = [r for r in data["results"] if not r.get("scaling")]
    all_results = data["results"]
    m, v = data["machine"], data["versions"]
    lines = [
        "# eventmig benchmark results",
        "",
        f"{'First measured' if data.get('updates') else 'Measured'} {data['date']} at revision "
        f"`{data.get('revision')}` with `{data['command']}`; how to read this: `bench/README.md`.",
        "",
        f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- runs: median of {data['options']['repeats']} per case "
        f"({data['options']['baseline_repeats']} for the eventsourcing projection), each in a fresh process; "
        "events/s = events read from the source (the data set's N) / median seconds; "
        "peak RSS = highest of the runs, whole process tree",
    ]
    for n, s in data["datasets"].items():
        lines.append(
            f"- data set {_n(int(n))}: {s['events']:,} events over {s['streams']:,} streams, "
            f"{s['events_needing_upcast_or_drop']:,} at an old schema version, payloads {s['payload_bytes_min']}-"
            f"{s['payload_bytes_max']} bytes (mean {s['payload_bytes_avg']:.0f}) plus ~100 bytes of metadata"
        )
    if data.get("postgres_load_seconds"):
        lines.append("- PostgreSQL load through `write_batch` (not compared): " + ", ".join(
            f"{_n(int(n))} in {s:.1f} s" for n, s in data["postgres_load_seconds"].items()))
    for u in data.get("updates", []):
        names = sorted({c.split()[0] for c in u["cases"]})
        lines.append(f"- updated {u['date']} at revision `{u['revision']}` with `{u['command']}`: "
                     f"{len(u['cases'])} results of " + ", ".join(names))
    revisions: dict[str, int] = {}
    for r in all_results:
        revisions[r.get("revision") or "unknown"] = revisions.get(r.get("revision") or "unknown", 0) + 1
    lines.append("- revision of the figures: " + ", ".join(
        f"`{rev}` ({count} of {len(all_results)} results)" for rev, count in sorted(revisions.items())))
    notes = sorted({r["note"] for r in all_results if r["status"] != "ok" and r["note"]})
    for note in notes:
        lines.append(f"- **{note}**")

    lines += ["", "## Targets", "",
              "floor: what the hand-written loop that bounds the job reached on the same data (`raw.write`: "
              "the store's bulk write and indexes alone, rows made before the clock starts; `raw.fold2`: the "
              "order-summary fold in two processes); a goal above its floor is out of reach of any implementation "
              "on this machine.", "",
              "| target | goal | measured | | floor |", "| --- | --- | --- | --- | --- |"]
    for t in data["targets"]:
        measured = _figure(t["measured"], t["unit"])
        verdict = "–" if t["met"] is None else ("met" if t["met"] else "**missed**")
        floor = "–"
        if "floor_case" in t:
            floor = f"`{t['floor_case']}` {_figure(t['floor'], t['unit'])}"
            if t.get("goal_above_floor"):
                floor += ": goal above the floor"
        lines.append(f"| {t['target']} | {t['goal']} | {measured} | {verdict} | {floor} |")

    sizes = sorted({r["n"] for r in results})
    stores = [s for s in ("sqlite", "postgres") if any(r["store"] == s for r in results)]
    lines += ["", "## eventmig against the floors and the eventsourcing baseline", "",
              "events/s (peak RSS in MB); ratios are eventmig's speed over the other's.", ""]
    for store in stores:
        for n in sizes:
            lines += [f"### {store}, {_n(n)} events", "",
                      "| task | eventmig | raw floor | eventmig / floor | eventsourcing (SQLite) | eventmig / eventsourcing |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for label, case, workers, floor_case, es_case in ROWS:
                e = _find(results, case, store, n, workers)
                f = _find(results, floor_case, store, n) if floor_case else None
                b = _find(results, es_case, "sqlite", n) if es_case else None
                status = next((r for r in results if r["case"] == case and r["store"] == store and r["n"] == n
                               and (workers is None or r["workers"] == workers)), None)
                if status is None:
                    continue
                cell = f"{_rate(e)} ({_mb(e)})" if e else status["status"]
                lines.append(
                    f"| {label} | {cell} | {_rate(f)} ({_mb(f)}) | {_ratio(e, f)} | "
                    + (f"{_rate(b)} ({_mb(b)}) | {_ratio(e, b)} |" if es_case else "– | – |")
                )
            lines.append("")
    load = [r for r in results if r["case"] == "eventsourcing.load" and r["median"]]
    if load:
        lines.append("eventsourcing: loading the data set through its SQLite recorder (not compared): " + ", ".join(
            f"{_n(r['n'])} in {r['median']['seconds']:.1f} s ({r['median']['events_per_s']:,.0f} ev/s)" for r in load))
        lines.append("")

    scale = sorted(
        (r for r in all_results if r["case"] == "eventmig.jobs.migrate" and r["store"] == "sqlite" and r["median"]),
        key=lambda r: r["n"],
    )
    if len(scale) > 1:
        base = scale[0]["median"]
        lines += ["## Scaling: migrate on SQLite", "",
                  "| events | seconds | events/s | seconds per 1M events | peak RSS MB |",
                  "| --- | --- | --- | --- | --- |"]
        for r in scale:
            s = r["median"]
            lines.append(f"| {_n(r['n'])} | {s['seconds']:.1f} | {s['events_per_s']:,.0f} | "
                         f"{s['seconds'] / r['n'] * 1e6:.1f} | {s['peak_rss_mb']:,.0f} |")
        del base
        lines.append("")

    lines += _esdb_standin(all_results)
    lines += ["## Every case", "",
              "CPU s: CPU time of the case process and its workers over the job (not the database server's), "
              "median; load: the machine's 1-minute load average before each run, which also counts the "
              "benchmark's own previous runs (a job with 2 workers leaves about 2 behind); more than that "
              "means other work on the machine, which slows the wall-clock figures.", "",
              "| case | store | events | workers | status | median s | events/s | CPU s | peak RSS MB | runs (s) | load |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in all_results:
        s = r["median"]
        runs = ", ".join(f"{x['seconds']:.2f}" for x in r["runs"] if x.get("ok"))
        load = ", ".join(f"{x['loadavg_1m_before']:.1f}" for x in r["runs"] if "loadavg_1m_before" in x)
        lines.append(
            f"| {r['case']} | {r['store']} | {_n(r['n'])} | {r['workers'] or ''} | {r['status']} | "
            f"{s.get('seconds', '–')} | {_rate(s or None)} | {s.get('cpu_seconds', '–')} | {_mb(s or None)} | {runs} | {load} |"
        )
    return "\n".join(lines) + "\n"


def _esdb_standin(results: list[dict[str, Any]]) -> list[str]:
    """The EventStoreDB rows, said for what they are: eventmig against the stand-in, never a server."""
    rows = [r for r in results if r["store"] == "esdb-standin" and r["median"]]
    if not rows:
        return []
    lines = ["## EventStoreDB: against the stand-in only", "",
             "migrate from the SQLite data set into a fresh node of the stand-in (`tests/esdb_standin/`, Python, in "
             "memory, in a process of its own on the same 2 cores). No EventStoreDB or KurrentDB server can be "
             "installed here: these figures measure eventmig's side and the protocol, not a cluster, and are not "
             "comparable with figures against a real server. load: the 1-minute load average before each run; "
             "above about 2 the machine was busy with other work and the figures are lower than an idle machine's.", "",
             "| events | median s | events/s | CPU s (eventmig) | peak RSS MB | runs (s) | load |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: r["n"]):
        s = r["median"]
        runs = ", ".join(f"{x['seconds']:.2f}" for x in r["runs"] if x.get("ok"))
        load = ", ".join(f"{x['loadavg_1m_before']:.1f}" for x in r["runs"] if "loadavg_1m_before" in x)
        lines.append(f"| {_n(r['n'])} | {s['seconds']} | {_rate(s)} | {s.get('cpu_seconds', '–')} | {_mb(s)} | {runs} | {load} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [results.json]``: render results.md again from results.json."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else dataset.BENCH_DIR / "results.json"
    data = current_names(json.loads(path.read_text()))
    data["targets"] = targets(data["results"])
    path.with_suffix(".md").write_text(markdown(data))
    print(f"wrote {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
