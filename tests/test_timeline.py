"""``eventmig status``: a store's history as one timeline, the same in the table and in --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventmig.ports_readmodels import RebuildRun, SwapRecord
from eventmig.model.records import EpochInfo, Run, Switch
from eventmig.jobs.timeline import build

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, store: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    result = subprocess.run([sys.executable, "-m", "eventmig", *args, "--store", store], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_status_shows_what_happened_to_the_store_in_order(store_url: str):
    eventmig("demo", "--seed-only", "--events", "2000", store=store_url)
    migrated = json.loads(eventmig("migrate", "--workers", "1", "--json", store=store_url).stdout)
    eventmig("switch", store=store_url)
    rebuilt = json.loads(eventmig("rebuild", "--workers", "1", "--json", store=store_url).stdout)
    eventmig("rollback", store=store_url)

    timeline = json.loads(eventmig("status", "--json", store=store_url).stdout)["timeline"]
    kinds = [e["kind"] for e in timeline]
    assert kinds == ["epoch", "migrate", "switch", "rebuild", "rebuild", "rebuild", "swap", "swap", "swap", "rollback"]
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    epoch, migrate, switch = timeline[:3]
    assert epoch["what"] == "epoch 1 created" and epoch["status"] == "active"  # active again after the rollback
    assert migrate["run_id"] == migrated["run_id"] and migrate["status"] == "completed"
    assert migrate["what"] == "migrate epoch 1 -> 2" and migrate["until"] >= migrate["at"]
    assert migrate["detail"] == f"read 2,000, written {migrated['events_written']:,}, quarantined 0"
    assert switch["what"] == "epoch 2 active (was 1)"
    assert {e["run_id"] for e in timeline if e["kind"] == "rebuild"} == {p["run_id"] for p in rebuilt["projections"]}
    assert {e["run_id"] for e in timeline if e["kind"] == "swap"} == {p["run_id"] for p in rebuilt["projections"]}
    assert timeline[-1]["what"] == "epoch 1 active (was 2)"

    table = eventmig("status", store=store_url).stdout
    assert "Timeline" in table
    rows = [table.index(text) for text in ("epoch 1 created", "migrate epoch 1 -> 2", "epoch 2 active (was 1)",
                                           "rebuild order_summary v1 (epoch 2)", "order_summary v1 live",
                                           "epoch 1 active (was 2)")]
    assert rows == sorted(rows)


def test_entries_are_ordered_by_time_whatever_table_kept_them():
    epochs = [EpochInfo(1, "retired", None, 100.0), EpochInfo(2, "active", 1, 200.5)]
    runs = [Run("m1", "migrate", 1, 2, "completed", 9, "f", 200.0, 260.0, {"read": 9, "written": 8, "quarantined": 1})]
    switches = [Switch(1, "switch", 1, 2, 300.0, 9), Switch(2, "rollback", 2, 1, 500.0, 9), Switch(3, "switch", 1, 2, 600.0, 9)]
    rebuilds = [RebuildRun("r1", "totals", 2, "f", "abandoned", 1, 2, 9, 400.0, 410.0, {})]
    swaps = [SwapRecord(1, "swap", "totals", None, 2, "r0", 350.0), SwapRecord(2, "rollback", "totals", 2, None, "r0", 450.0)]
    timeline = build(epochs, runs, switches, rebuilds, swaps)
    assert [(e.at, e.kind) for e in timeline] == [
        (100.0, "epoch"), (200.0, "migrate"), (300.0, "switch"), (350.0, "swap"), (400.0, "rebuild"),
        (450.0, "read-model rollback"), (500.0, "rollback"), (600.0, "switch")]
    # epoch 2 is the migration's: its entry says so, not a second one
    assert timeline[1].what == "migrate epoch 1 -> 2" and timeline[1].detail == "read 9, written 8, quarantined 1"
    assert timeline[3].detail == "replaced tables eventmig did not build"
    assert timeline[5].what == "totals pre-eventmig tables live" and timeline[5].detail == "was v2"
    assert timeline[4].status == "abandoned" and timeline[4].until == 410.0
