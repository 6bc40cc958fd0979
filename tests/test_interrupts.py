"""Ctrl-C and worker counts, as an operator meets them: real processes on a store big enough to take a while.

A terminal's Ctrl-C sends SIGINT to every process of the job, workers
included; the tests send it the same way, to the process group, once the job
has committed some of its work. The job must stop with exit code 130 and one
line saying how to resume, leave no worker behind, and resume to a result
that verifies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: enough events for a migration of many batches, and for a rebuild in worker processes (50,000 at least)
EVENTS = 120_000


def environment(store: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return {**env, "EVENTMIG_STORE": store, **extra}


def eventmig(*args: str, store: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=environment(store, **extra),
                          capture_output=True, text=True, timeout=300)


def seed(url: str, events: int) -> subprocess.CompletedProcess[str]:
    return eventmig("demo", "--seed-only", "--events", str(events), "--store", url, "--json", store=url)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file of the shop's legacy events, seeded once per module."""
    path = tmp_path_factory.mktemp("seeded") / "shop.db"
    result = seed(f"sqlite:///{path}", EVENTS)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def big_store(seeded: Path, tmp_path: Path) -> tuple[str, Path]:
    """A copy of the seeded file for one test: its URL and path."""
    path = tmp_path / "shop.db"
    shutil.copyfile(seeded, path)
    return f"sqlite:///{path}", path


def query(path: Path, sql: str) -> list[tuple]:
    """Read the store the job is writing, as a bystander (WAL lets readers in while it commits)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # a table the job has not created yet
        return []
    finally:
        conn.close()


def interrupt(args: tuple[str, ...], store: str, started: Callable[[], bool]) -> subprocess.CompletedProcess[str]:
    """Run ``eventmig *args`` in a process group of its own; once ``started()``, Ctrl-C it as a terminal does."""
    proc = subprocess.Popen([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=environment(store),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not started():
        assert proc.poll() is None, f"the job ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "the job never got going"
        time.sleep(0.02)
    assert proc.poll() is None, "the job was over before the interruption: the store is too small for this test"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    # the parent stopped its workers: nothing of the job's process group is left
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "worker processes outlived the interrupted job"
        time.sleep(0.05)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_interrupted(result: subprocess.CompletedProcess[str], command: str) -> None:
    assert result.returncode == 130, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: interrupted; what was committed is kept: run `eventmig {command}` again to resume"], lines
    assert not result.stdout


def test_an_interrupted_migration_exits_130_in_one_line_and_resumes(big_store: tuple[str, Path]):
    url, path = big_store

    def committed_a_batch() -> bool:
        return bool(query(path, "SELECT 1 FROM eventmig_runs WHERE kind = 'migrate' AND checkpoint IS NOT NULL"))

    result = interrupt(("migrate", "--workers", "2", "--batch-size", "2000"), url, committed_a_batch)
    assert_interrupted(result, "migrate")
    (checkpoint, status), = query(path, "SELECT checkpoint, status FROM eventmig_runs WHERE kind = 'migrate'")
    assert status == "running" and 0 < checkpoint < EVENTS

    resumed = eventmig("migrate", "--workers", "2", "--batch-size", "2000", "--json", store=url)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed_from"] is not None and report["events_read"] < EVENTS
    verified = eventmig("verify", "--json", store=url)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"]


def test_an_interrupted_migration_on_postgresql_exits_130_and_resumes(postgres_url: str):
    """A Ctrl-C that lands inside the driver (a COPY, a commit) is the same one line."""
    import sqlalchemy as sa

    assert seed(postgres_url, 30_000).returncode == 0
    engine = sa.create_engine(postgres_url)

    def committed_a_batch() -> bool:
        with engine.connect() as conn:
            found = conn.exec_driver_sql("SELECT to_regclass('eventmig_runs') IS NOT NULL").scalar() and \
                conn.exec_driver_sql("SELECT 1 FROM eventmig_runs WHERE checkpoint IS NOT NULL").first()
        return bool(found)

    try:
        result = interrupt(("migrate", "--workers", "2", "--batch-size", "1000"), postgres_url, committed_a_batch)
    finally:
        engine.dispose()
    assert_interrupted(result, "migrate")
    resumed = eventmig("migrate", "--workers", "2", "--batch-size", "1000", "--json", store=postgres_url)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] is not None
    verified = eventmig("verify", "--json", store=postgres_url)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stderr


def test_an_interrupted_rebuild_exits_130_in_one_line_and_resumes(big_store: tuple[str, Path]):
    url, path = big_store

    def workers_committed() -> bool:
        return bool(query(path, "SELECT 1 FROM eventmig_rebuild_partitions WHERE checkpoint IS NOT NULL"))

    result = interrupt(("rebuild", "--workers", "2", "--batch-size", "5000"), url, workers_committed)
    assert_interrupted(result, "rebuild")
    assert {s for s, in query(path, "SELECT status FROM eventmig_rebuilds")} == {"running"}

    resumed = eventmig("rebuild", "--workers", "2", "--batch-size", "5000", "--json", store=url)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["ok"] and report["swapped"] and report["processes"] == 2
    assert any("resuming run" in note for note in report["notes"])
    # a rebuild from scratch of the same code over the same events finds exactly the rows the resumed one swapped in
    again = eventmig("rebuild", "--json", store=url)
    assert again.returncode == 0, again.stderr
    tables = [t for p in json.loads(again.stdout)["projections"] for t in p["tables"]]
    assert tables and all((t["added"], t["removed"], t["changed"]) == (0, 0, 0) for t in tables)


FORK_COUNTER = """
import os

def _note_fork():
    with open(os.environ["EVENTMIG_TEST_FORKS"], "a") as log:
        log.write(f"{os.getpid()}\\n")

os.register_at_fork(after_in_child=_note_fork)
"""


def forks_of(args: tuple[str, ...], store: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run eventmig and count the processes it forked (every fork, whatever forked it, notes itself)."""
    shim = tmp_path / "fork-counter"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(FORK_COUNTER)
    log = tmp_path / f"forks-{args[0]}.log"
    log.write_text("")
    result = eventmig(*args, store=store, PYTHONPATH=str(shim), EVENTMIG_TEST_FORKS=str(log))
    return result, len(log.read_text().split())


def test_no_more_workers_start_than_there_are_batches(sqlite_url: str, tmp_path: Path):
    assert seed(sqlite_url, 3000).returncode == 0
    # 3,000 events in batches of 1,000: three slices to upcast, three processes at most however many are allowed
    migrated, forks = forks_of(("migrate", "--workers", "64", "--batch-size", "1000", "--json"), sqlite_url, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert forks == 3 and json.loads(migrated.stdout)["processes"] == 3
    # both sides of the migration: six slices at most
    verified, forks = forks_of(("verify", "--workers", "64", "--batch-size", "1000", "--json"), sqlite_url, tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert forks <= 6 and json.loads(verified.stdout)["processes"] == forks
    # in one batch, nothing is worth a process
    single, forks = forks_of(("migrate", "--dry-run", "--workers", "64", "--json"), sqlite_url, tmp_path)
    assert single.returncode == 0 and forks == 0 and json.loads(single.stdout)["processes"] == 0
    # a rebuild of a few thousand events folds them in this process
    rebuilt, forks = forks_of(("rebuild", "--workers", "64", "--json"), sqlite_url, tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert forks == 0 and json.loads(rebuilt.stdout)["processes"] == 0


def test_a_rebuild_starts_a_worker_per_share_of_events_at_most(big_store: tuple[str, Path], tmp_path: Path):
    url, _path = big_store
    rebuilt, forks = forks_of(("rebuild", "--workers", "64", "--json"), url, tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    # 120,000 events: five processes of 25,000 events at most, for 64 partitions of the streams
    assert forks == 5 and report["ok"] and report["processes"] == 5


@pytest.mark.parametrize(("command", "workers"), [
    ("migrate", "1000000"), ("migrate", "65"), ("migrate", "0"), ("migrate", "1e3"),
    ("verify", "1000000"), ("switch", "-3"), ("rebuild", "1000000"), ("rebuild", "many"),
])
def test_absurd_worker_counts_exit_2_in_one_line(sqlite_url: str, command: str, workers: str):
    result = eventmig(command, "--workers", workers, store=sqlite_url)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0] and "Traceback" not in result.stderr, lines
    assert not os.path.exists(sqlite_url[len("sqlite:///"):])  # refused before anything was opened
