"""Smoke test of the benchmark harness (bench/): tiny data, one run per case, SQLite only.

Timings are never asserted; this checks that every case, eventmig's and the
baselines', runs in its own process and yields a well-formed result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("eventsourcing")

from bench import harness, report  # noqa: E402

N = 600
EXPECTED = {
    ("eventmig.jobs.migrate", None), ("eventmig.jobs.verify", None), ("eventmig.upcast-read", None),
    ("eventmig.jobs.rebuild", 1), ("eventmig.jobs.rebuild", 2),
    ("raw.copy", None), ("raw.write", None), ("raw.read", None), ("raw.fold", None), ("raw.fold2", None),
    ("eventsourcing.load", None), ("eventsourcing.read", None), ("eventsourcing.project", None),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data_dir = tmp_path_factory.mktemp("bench-data")
    options = harness.Options(sizes=[N], stores=["sqlite"], cases=list(harness.ALL_CASES), repeats=1,
                              data_dir=data_dir)
    bench = harness.Harness(options, log=lambda s: None)
    bench.run()
    import datetime as dt

    data = report.build(bench, options, dt.datetime.now(dt.timezone.utc), ["--smoke"])
    out = tmp_path_factory.mktemp("bench-out")
    json_path, md_path = report.write(data, out)
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(data))
    assert "## Targets" in md_path.read_text()
    return data


def test_every_case_is_reported(results: dict) -> None:
    seen = {(r["case"], r["workers"]) for r in results["results"]}
    assert seen == EXPECTED


@pytest.mark.parametrize("case", sorted(EXPECTED, key=str))
def test_case_result_is_well_formed(results: dict, case: tuple[str, int | None]) -> None:
    (r,) = [r for r in results["results"] if (r["case"], r["workers"]) == case]
    assert r["store"] == "sqlite" and r["n"] == N
    assert r["task"] in {"migrate", "verify", "read+upcast", "rebuild", "load"}
    assert r["impl"] in {"eventmig", "raw", "eventsourcing"}
    if r["status"] == "not available":  # only the rebuild, while eventmig.jobs.rebuild is missing
        assert r["case"] == "eventmig.jobs.rebuild" and r["note"].startswith("not available")
        return
    assert r["status"] == "ok", r["note"]
    (run,) = r["runs"]
    assert run["ok"] and run["events_read"] == N and run["seconds"] > 0
    assert run["peak_rss_mb"] >= max(run["rss_self_mb"], run["rss_tree_mb"]) > 0
    m = r["median"]
    assert m["events"] == N and m["events_per_s"] > 0 and m["peak_rss_mb"] > 0


def test_run_metadata(results: dict) -> None:
    assert results["machine"]["cores"] >= 1 and results["machine"]["memory_gib"] > 0
    assert results["versions"]["python"] and results["versions"]["sqlite"] and results["versions"]["eventsourcing"]
    assert results["datasets"][str(N)]["events"] == N
    assert all(t["met"] in (True, False, None) for t in results["targets"])


def test_floor_and_baseline_read_models_agree(tmp_path: Path) -> None:
    """The raw fold and the eventsourcing projection compute the same order summaries."""
    import sqlite3

    from bench import dataset, es_baseline, raw

    source = dataset.cached_dataset(N, data_dir=tmp_path, log=lambda s: None)
    db = dataset.copy_dataset(source, tmp_path / "run.db")
    raw.fold("sqlite", str(db))
    es_baseline.load(dataset.read_rows(source), str(tmp_path / "app.db"))
    es_baseline.project(str(tmp_path / "app.db"), str(tmp_path / "view.db"), N)
    q = "SELECT order_id, customer_id, status, item_count, total_cents, currency FROM {} ORDER BY order_id"
    with sqlite3.connect(db) as a, sqlite3.connect(tmp_path / "view.db") as b:
        expected = a.execute(q.format("order_summary_raw")).fetchall()
        assert expected and b.execute(q.format("order_summary")).fetchall() == expected


def test_raw_copy_writes_what_migrate_writes(tmp_path: Path) -> None:
    """The migrate floor does the same job: its rows equal eventmig's target epoch, lineage included."""
    import sqlite3

    from bench import cases, dataset, raw
    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store

    source = dataset.cached_dataset(N, data_dir=tmp_path, log=lambda s: None)
    db = dataset.copy_dataset(source, tmp_path / "run.db")
    raw.copy("sqlite", str(db))
    store = open_store(dataset.sqlite_url(db))
    try:
        report = migrate(store, cases._registry())
    finally:
        store.close()
    target = f"events_e{report.target_epoch}"  # not switched: the new epoch keeps its own table
    q = "SELECT stream, version, event_id, type, data, metadata, recorded_at FROM {} ORDER BY stream, version"

    def rows(table: str) -> list[tuple]:  # JSON compared as values: key order is the encoder's business
        return [(*r[:4], json.loads(r[4]), json.loads(r[5]), r[6]) for r in conn.execute(q.format(table))]

    with sqlite3.connect(db) as conn:
        expected = rows(target)
        assert expected and rows("events_raw") == expected


@pytest.mark.parametrize(
    ("table", "reference", "variant"),
    [("events_raw", "copy", "write"), ("order_summary_raw", "fold", "fold2")],
)
def test_ceilings_do_the_work_of_their_floors(tmp_path: Path, table: str, reference: str, variant: str) -> None:
    """The write-only ceiling writes the copy floor's rows, the two-process fold the one-process fold's:
    they only move work off the clock or across processes."""
    import sqlite3

    from bench import dataset, raw

    source = dataset.cached_dataset(N, data_dir=tmp_path, log=lambda s: None)
    tables = []
    for name in (reference, variant):
        db = dataset.copy_dataset(source, tmp_path / f"{name}.db")
        assert getattr(raw, name)("sqlite", str(db))["events_read"] == N
        with sqlite3.connect(db) as conn:
            tables.append(conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall())
    assert tables[0] and tables[0] == tables[1]


def test_rebuild_writes_what_the_floor_folds(tmp_path: Path) -> None:
    """eventmig's order_summary rebuild and the raw fold produce the same rows."""
    import sqlite3

    from bench import cases, dataset, raw

    missing = cases.rebuild_available()
    if missing:
        pytest.skip(missing)
    source = dataset.cached_dataset(N, data_dir=tmp_path, log=lambda s: None)
    db = dataset.copy_dataset(source, tmp_path / "run.db")
    cases.eventmig_rebuild({"url": dataset.sqlite_url(db), "workers": 2, "n": N})
    raw.fold("sqlite", str(db))
    q = "SELECT order_id, customer_id, status, item_count, total_cents, currency FROM {} ORDER BY order_id"
    with sqlite3.connect(db) as conn:
        expected = conn.execute(q.format("order_summary_raw")).fetchall()
        assert expected and conn.execute(q.format("order_summary")).fetchall() == expected
