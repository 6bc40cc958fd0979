"""Watching a long job from outside: Prometheus metrics scraped mid-run, and JSON logs on stderr.

The migrations here run a service whose upcaster of a "Gate" event waits
for a file: the job stops half-way, in the middle of a real run on a real
store, for as long as the test needs to scrape it.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventmig import new_event, open_store
from eventmig.cli.logs import JsonLog

GATED_SERVICE = '''
import os
import time

from eventmig import Registry

registry = Registry()
registry.fields("Tick", 1, defaults={"unit": "s"})


@registry.upcaster("Gate", 1, to=("Gate", 2))
def wait_for_the_test(data):
    gate = os.environ.get("GATE_FILE")
    deadline = time.monotonic() + 120
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return data
'''

HALF = 1_500  # events before the gate, one of them malformed


def gated_service(tmp_path: Path) -> str:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text(textwrap.dedent(GATED_SERVICE))
    url = f"sqlite:///{tmp_path / 'events.db'}"
    (tmp_path / "pyproject.toml").write_text(f'[tool.eventmig]\nstore = "{url}"\nupcasters = "svc:registry"\n')
    with open_store(url, create=True) as store:
        for s in range(49):
            store.append(f"tick-{s}", [new_event("Tick", {"n": i}) for i in range(30)])
        store.append("broken", [new_event("Tick", b"{not json", {})])
        store.append("tick-49", [new_event("Tick", {"n": i}) for i in range(29)])
        store.append("gate", [new_event("Gate", {"at": HALF})])
        for s in range(50, 100):
            store.append(f"tick-{s}", [new_event("Tick", {"n": i}) for i in range(30)])
    return url


def start(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.Popen([sys.executable, "-m", "eventmig", *args], cwd=cwd, env={**environment, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    found = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    return sum(found) if found else None


def test_metrics_move_while_a_migration_runs(tmp_path: Path):
    gated_service(tmp_path)
    gate, port = tmp_path / "open-the-gate", free_port()
    proc = start("migrate", "--workers", "1", "--batch-size", "500", "--metrics-port", str(port), "--json",
                 cwd=tmp_path, env={"GATE_FILE": str(gate), "EVENTMIG_METRICS_ADDR": "127.0.0.1"})
    try:
        seen: list[float] = []
        deadline = time.monotonic() + 60
        samples: dict = {}
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:  # not serving yet
                time.sleep(0.1)
                continue
            read = value(samples, "eventmig_events_read_total", command="migrate") or 0.0
            seen.append(read)
            if read >= HALF:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the migration should be waiting at the gate"
        # half-way, held at the gate: the counters moved, and what is left shows as lag
        assert value(samples, "eventmig_events_read_total", command="migrate", phase="migrate epoch 1 -> 2") == HALF
        assert value(samples, "eventmig_events_written_total", command="migrate") == HALF - 1
        assert value(samples, "eventmig_events_quarantined_total", command="migrate") == 1
        assert value(samples, "eventmig_lag_events", command="migrate") == 2 * HALF + 1 - HALF
        assert value(samples, "eventmig_phase", phase="migrate epoch 1 -> 2") == 1
        assert (value(samples, "eventmig_events_per_second", command="migrate") or 0) > 0
        (run_id,) = {dict(ls)["run_id"] for (n, ls), _ in samples.items() if n == "eventmig_run_info"}
        assert seen[0] <= seen[-1] == HALF
    finally:
        gate.touch()
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["run_id"] == run_id and report["events_read"] == 2 * HALF + 1
    with pytest.raises(OSError):  # the server went with the job
        scrape(port)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = start(*args, cwd=cwd, env=env or {})
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_metrics_without_the_extra_is_one_line_naming_it(tmp_path: Path):
    gated_service(tmp_path)
    code = "import sys; sys.modules['prometheus_client'] = None; from eventmig.cli.app import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "migrate", "--metrics-port", str(free_port())],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --metrics-port needs prometheus-client: pip install 'eventmig[metrics]'"
    with open_store(f"sqlite:///{tmp_path / 'events.db'}") as store:
        assert len(store.epochs()) == 1  # refused before any work


def test_a_busy_metrics_port_is_a_usage_error(tmp_path: Path):
    gated_service(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("migrate", "--metrics-port", str(port), cwd=tmp_path, env={"EVENTMIG_METRICS_ADDR": "127.0.0.1"})
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: ")


def json_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object


def test_json_logs_of_a_migration(tmp_path: Path):
    gated_service(tmp_path)
    result = run("migrate", "--workers", "1", "--log-format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Migrated epoch 1 -> 2" in result.stdout  # the report itself stays on stdout
    lines = json_lines(result.stderr)
    assert [line["event"] for line in lines] == [
        "started", "run", "phase_started", "phase_finished", "message", "finished"]
    run_id = lines[-1]["report"]["run_id"]
    assert {line["command"] for line in lines} == {"migrate"}
    assert lines[0]["run_id"] is None and lines[0]["version"]
    assert all(line["run_id"] == run_id for line in lines[1:])
    phase = lines[3]
    assert phase["phase"] == "migrate epoch 1 -> 2" and phase["done"] == phase["total"] == 2 * HALF + 1
    # what the command prints on stderr comes as JSON too: here, the quarantine's reason
    assert lines[4]["level"] == "warning" and lines[4]["message"].startswith("quarantined 1: ")
    finished = lines[-1]
    assert finished["exit_code"] == 0 and finished["error"] is None and finished["level"] == "info"
    assert finished["counts"] == {"read": 2 * HALF + 1, "written": 2 * HALF, "quarantined": 1}
    assert finished["report"]["events_written"] == 2 * HALF
    for line in lines:
        assert line["ts"].endswith("Z") and line["level"] in ("info", "warning", "error")


def test_json_logs_of_a_failure_end_with_its_exit_code_and_error(tmp_path: Path):
    gated_service(tmp_path)
    result = run("verify", cwd=tmp_path, env={"EVENTMIG_LOG_FORMAT": "json"})  # the format from the environment
    assert result.returncode == 2
    lines = json_lines(result.stderr)
    assert [line["event"] for line in lines] == ["started", "message", "finished"]
    error = "nothing to verify: the active epoch has no migration; run `eventmig migrate` first"
    assert lines[1]["level"] == "error" and lines[1]["message"] == error
    assert lines[2]["level"] == "error" and lines[2]["exit_code"] == 2 and lines[2]["error"] == error


def test_progress_lines_come_at_the_interval_with_rate_and_counts():
    stream = io.StringIO()
    log = JsonLog("rebuild", stream, every=0.0)
    log.run_started("r1", "rebuild order_summary")
    log.run_started("r2", "rebuild order_snapshots")
    with log.task("rebuild order_summary p0", 30) as task:
        for _ in range(3):
            task.advance(10)
    log.events_written(25, 2)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    progress = [line for line in lines if line["event"] == "progress"]
    assert [p["done"] for p in progress] == [10, 20, 30]
    assert all(p["run_id"] == "r1,r2" and p["phase"] == "rebuild order_summary p0" for p in progress)
    assert [p["counts"]["read"] for p in progress] == [10, 20, 30]
    # a run announced after a phase is a new job's: it replaces the runs of the one before
    log.run_started("r3", "migrate epoch 2 -> 3")
    assert log.run_id == "r3" and log.counts == {"read": 30, "written": 25, "quarantined": 2}


def test_a_fan_out_advances_every_display_and_tells_the_runs_to_those_that_listen():
    from contextlib import contextmanager

    from eventmig.progress import SILENT, FanOut, announce_run, count_written

    class Bars:  # a display without the run hooks, as progress bars are
        def __init__(self) -> None:
            self.done: dict[str, int] = {}

        @contextmanager
        def task(self, label: str, total: int | None):
            self.done[label] = 0
            bars = self

            class Task:
                def advance(self, n: int) -> None:
                    bars.done[label] += n

            yield Task()

    bars, stream = Bars(), io.StringIO()
    log = JsonLog("migrate", stream)
    fan = FanOut(bars, SILENT, log)
    assert fan.members == [bars, log]
    announce_run(fan, "r9", "migrate epoch 1 -> 2")
    with fan.task("migrate epoch 1 -> 2", 10) as task:
        task.advance(4)
        count_written(fan, 3, 1)
        task.advance(6)
    assert bars.done == {"migrate epoch 1 -> 2": 10}
    assert log.run_id == "r9" and log.counts == {"read": 10, "written": 3, "quarantined": 1}
