"""Jobs survive PostgreSQL terminating their connections, and a second job never writes beside the first.

A thread with a connection of its own plays the administrator: it
terminates, with ``pg_terminate_backend``, the backends of the job under
test while they work (the job's connections carry an application name of
their own, so no other test's connections are touched). The server itself
is never restarted: other suites share it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa

import projections as shop
import eventmig.jobs.rebuild.workers as rebuild_workers
from eventmig.jobs.cutover import switch
from eventmig.jobs.seed import seed
from eventmig.errors import Busy, ExitCode, LeaseLost, StoreUnavailable
from eventmig.jobs.migrate import migrate
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.backends.sql.rowdigests import digest_table_rows
from eventmig.projection.fold import replay
from eventmig.jobs.rebuild import rebuild
from eventmig.retry import RetryPolicy
from eventmig.backends import open_store
from eventmig.backends.sql.lease import SQLLease
from eventmig.jobs.verify import verify

#: retries enough for five terminations and then some, with waits short enough for a test
FAST = RetryPolicy(attempts=30, max_wait_s=0.05)
TABLES = {t.name: t for p in shop.projections for t in p.tables}


def _named(url: str) -> tuple[str, str]:
    """The URL with an application name of its own (the test's schema), and that name."""
    app = re.search(r"search_path%3D(\w+)", url).group(1)  # type: ignore[union-attr]
    return f"{url}&application_name={app}", app


def _libpq(url: str) -> str:
    return re.sub(r"^postgresql\+psycopg://", "postgresql://", url.split("?")[0])


class _Terminator:
    """Terminates the working backends of ``app``, ``times`` times, at least ``gap_s`` apart."""

    def __init__(self, server: str, app: str, times: int, gap_s: float, armed: bool) -> None:
        self.server, self.app, self.times, self.gap_s = server, app, times, gap_s
        self.kills = 0
        self.stop = threading.Event()
        #: terminations start once armed
        self.armed = threading.Event()
        if armed:
            self.armed.set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(_libpq(self.server), autocommit=True) as conn:
            while self.kills < self.times and not self.stop.is_set():
                if not self.armed.wait(0.01):
                    continue
                killed = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND state <> 'idle' AND pid <> pg_backend_pid()", (self.app,),
                ).fetchone()[0]
                if killed:
                    self.kills += 1
                    self.stop.wait(self.gap_s)
                else:
                    time.sleep(0.001)


@contextmanager
def terminating(
    server: str, app: str, times: int = 5, gap_s: float = 0.05, armed: bool = True
) -> Iterator[_Terminator]:
    killer = _Terminator(server, app, times, gap_s, armed)
    killer.thread.start()
    try:
        yield killer
    finally:
        killer.stop.set()
        killer.thread.join(10)


class Notices:
    """A Progress that keeps the job's notices, and slows each of its batches down a little so that the
    terminations land while the job is still at work."""

    def __init__(self, pause_s: float = 0.0, arm: tuple[str, _Terminator] | None = None) -> None:
        self.lines: list[str] = []
        self.pause_s = pause_s
        self.phase = ""
        #: the job's phase at each notice
        self.phases: list[str] = []
        self.arm = arm

    @contextmanager
    def task(self, label: str, total: int | None) -> Iterator[Notices]:
        self.phase = label
        if self.arm is not None and label.startswith(self.arm[0]):
            self.arm[1].armed.set()
        yield self

    def advance(self, n: int) -> None:
        time.sleep(self.pause_s)

    def notice(self, message: str) -> None:
        self.lines.append(message)
        self.phases.append(self.phase)


def _check_notices(notices: Notices, job: str) -> None:
    assert notices.lines, "no retry was announced"
    for line in notices.lines:
        assert line.startswith(f"{job}: lost postgresql+psycopg://") and "retry " in line and "\n" not in line


# ------------------------------------------------------------------ migrate
def test_migrate_survives_five_terminations(postgres_server: str, postgres_url: str, shop_registry):
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 3000)
        clean = migrate(store, shop_registry, dry_run=True)
        notices = Notices(pause_s=0.02)
        with terminating(postgres_server, app) as killer:
            report = migrate(store, shop_registry, batch_size=50, workers=2, retry=FAST, progress=notices)
        assert killer.kills == 5
        _check_notices(notices, "migrate")
        (run,) = store.runs("migrate")
        assert run.status == "completed" and report.status == "completed"
        assert run.stats["before"] == clean.before and run.stats["after"] == clean.after
        checked = verify(store, shop_registry)
        assert checked.ok, checked.problems
        assert checked.target_digest == checked.expected_digest


# ------------------------------------------------------------------ rebuild
def test_rebuild_survives_five_terminations_of_its_workers(
    postgres_server: str, postgres_url: str, shop_registry, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
):
    monkeypatch.setattr(rebuild_workers, "FORK_MIN_EVENTS", 0)  # worker processes, however small the history
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 6000)
        expected = {name: digest_table_rows(TABLES[name], rows) for name, rows in replay(
            shop.projections, shop_registry, [r for b in store.read_all_rows() for r in b]).items()}
        notices = Notices()
        with ReadModelDB(url) as db, terminating(postgres_server, app, gap_s=0.02) as killer:
            report = rebuild(store, shop.projections, registry=shop_registry, read_models=db, workers=2,
                             batch_size=100, retry=FAST, progress=notices)
        assert killer.kills == 5
        _check_notices(notices, "rebuild")
        assert report.ok and report.swapped, report.problems
        assert {t.table: t.digest for p in report.projections for t in p.tables} == expected
    assert "Traceback" not in capfd.readouterr().err


# ------------------------------------------------------------------ switch
def test_switch_catch_up_survives_five_terminations(postgres_server: str, postgres_url: str, shop_registry):
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 2000)
        migrate(store, shop_registry, batch_size=500)
        seed(store, 3000, seed=7)  # appended after the migration: the switch catches up with them
        source_epoch = store.active_epoch()
        with terminating(postgres_server, app, armed=False) as killer:
            # the first termination comes once the catch-up migrates what was appended; the others land
            # wherever the retried switch is by then (verifying again, catching up again)
            notices = Notices(pause_s=0.02, arm=("migrate epoch", killer))
            report = switch(store, shop_registry, batch_size=200, workers=1, retry=FAST, progress=notices)
        assert killer.kills == 5
        _check_notices(notices, "switch")
        assert notices.phases[0].startswith("migrate epoch"), notices.phases
        assert report.kind == "switch" and store.active_epoch() == report.to_epoch != source_epoch
        assert [s.kind for s in store.switches()] == ["switch"]  # one flip, however many tries
        (run,) = store.runs("migrate")
        assert run.stats["read"] == 5000
        # the epoch now active is exactly the upcast of all 5000 events: a clean migration of the old epoch
        checked = verify(store, shop_registry, run=run)
        assert checked.ok, checked.problems
        assert checked.source_events == 5000 and checked.target_digest == checked.expected_digest


# ------------------------------------------------------------------ fencing
def test_a_second_job_is_refused_while_the_first_lost_its_connections(postgres_server: str, postgres_url: str,
                                                                      shop_registry):
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 1500)
    started, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    class Paused(Notices):
        def advance(self, n: int) -> None:
            started.set()
            go_on.wait(30)

    def first() -> None:
        with open_store(url) as store:
            outcome["report"] = migrate(store, shop_registry, batch_size=100, workers=1, retry=FAST, progress=Paused())

    job = threading.Thread(target=first)
    job.start()
    try:
        assert started.wait(30)
        with psycopg.connect(_libpq(postgres_server), autocommit=True) as conn:  # every connection of the job
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,))
        with open_store(postgres_url) as other, pytest.raises(Busy, match="holds the 'migrate' lock"):
            migrate(other, shop_registry, retry=FAST)
    finally:
        go_on.set()
        job.join(60)
    assert outcome["report"].status == "completed"  # type: ignore[attr-defined]


def test_a_job_whose_lease_was_taken_over_stops_writing(postgres_url: str):
    """A lease that expired unrenewed may be taken over; the job it was taken from then writes nothing."""
    with open_store(postgres_url) as first, open_store(postgres_url) as second:
        lease = SQLLease(first._db, "migrate:events", ttl_s=0.3, label="migrate")
        lease.acquire()
        first._db.fences.append(lease.fence)  # held, but never renewed: a job cut off from its database
        with pytest.raises(Busy):
            with second.lock("migrate"):
                pass
        time.sleep(0.5)
        with second.lock("migrate"):  # expired: a second job may take it over
            with pytest.raises(LeaseLost, match="lost its 'migrate' lock") as lost:
                first.save_run(_run())
            assert lost.value.exit_code == ExitCode.BUSY
            second.save_run(_run())
        assert [r.id for r in second.runs()] == ["r2"]


def _run():
    from eventmig.model.records import Run

    return Run(id="r2", kind="migrate", source_epoch=1, target_epoch=2, status="running", checkpoint=None,
               fingerprint="f", started_at=0.0, updated_at=0.0)


def test_a_finished_migration_whose_release_fails_succeeds(postgres_url: str, shop_registry,
                                                          monkeypatch: pytest.MonkeyPatch):
    """The work is done and committed when the lease is released: a server gone by then is no failure."""
    release = SQLLease.release

    def release_unreachable(self: SQLLease) -> None:
        working = self.db.engine
        self.db.engine = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens
        try:
            release(self)
        finally:
            self.db.engine.dispose()
            self.db.engine = working

    monkeypatch.setattr(SQLLease, "release", release_unreachable)
    with open_store(postgres_url) as store:
        seed(store, 500)
        report = migrate(store, shop_registry, batch_size=100, workers=1, retry=FAST)
        assert report.status == "completed"
        assert store.runs("migrate")[-1].status == "completed"
        monkeypatch.setattr(SQLLease, "release", release)
        with store.lock("migrate"):  # the lease this process could not release is not in anyone's way
            pass
        assert verify(store, shop_registry).ok


def test_store_unavailable_after_the_budget(postgres_server: str, postgres_url: str, shop_registry):
    """Every try loses its connection: StoreUnavailable, exit code 5, naming the masked URL and the resume command."""
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 3000)
        with terminating(postgres_server, app, times=10_000, gap_s=0.0):
            with pytest.raises(StoreUnavailable) as failed:
                migrate(store, shop_registry, batch_size=50, workers=1, retry=RetryPolicy(2, 0.01),
                        progress=Notices(pause_s=0.01))
    assert failed.value.exit_code == ExitCode.UNAVAILABLE == 5
    message = str(failed.value)
    assert message.startswith("migrate stopped: postgresql+psycopg://postgres@") and "after 3 tries" in message
    assert "run `eventmig migrate` to resume" in message
    with open_store(postgres_url) as store:  # and it does resume
        assert migrate(store, shop_registry, retry=FAST).status == "completed"
        assert verify(store, shop_registry).ok


# ---------------------------------------------------------------------- CLI
def _cli_migrate(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "eventmig", "migrate", "--batch-size", "100", "--workers", "2", *args],
        env={**os.environ, "EVENTMIG_STORE": url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _arm_at_first_checkpoint(url: str, proc: subprocess.Popen, killer: _Terminator) -> None:
    """Terminations start once the job is under way (a store it cannot open at all is another matter)."""
    deadline = time.monotonic() + 60
    with open_store(url) as store:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = store.runs("migrate")
            if runs and runs[-1].checkpoint is not None:
                killer.armed.set()
                return
            time.sleep(0.005)


def test_cli_migrate_retries_with_one_line_notices(postgres_server: str, postgres_url: str):
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 20_000)
    with terminating(postgres_server, app, times=3, gap_s=0.1, armed=False) as killer:
        proc = _cli_migrate(url, "--retry-max-wait", "0.05")
        _arm_at_first_checkpoint(postgres_url, proc, killer)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert killer.kills >= 1
    notices = [line for line in err.splitlines() if line.startswith("migrate: lost ")]
    assert notices and all("retry " in line and "resuming from the last committed checkpoint" in line for line in notices)
    assert "Traceback" not in err and "error" not in err


def test_cli_exit_code_5_once_the_retries_are_spent(postgres_server: str, postgres_url: str):
    url, app = _named(postgres_url)
    with open_store(url) as store:
        seed(store, 20_000)
    with terminating(postgres_server, app, times=100_000, gap_s=0.0, armed=False) as killer:
        proc = _cli_migrate(url, "--retry-attempts", "2", "--retry-max-wait", "0.01", "--json")
        _arm_at_first_checkpoint(postgres_url, proc, killer)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.UNAVAILABLE == 5, err
    error = json.loads(out.splitlines()[-1])
    assert error["exit_code"] == 5 and "run `eventmig migrate` to resume" in error["error"]
    assert "Traceback" not in err
