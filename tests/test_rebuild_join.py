"""rebuild shared by processes: `rebuild --share` and `rebuild --join RUN`, a joined process killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import projections as shop
from eventmig.backends import open_store
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.seed import ShopHistory
from test_follow import expected_digests, live_digests

REPO = Path(__file__).resolve().parent.parent
SUMMARY = [p for p in shop.projections if p.name == "order_summary"]


def eventmig(url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "EVENTMIG_STORE": url, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def query(url: str, sql: str, *params) -> list:
    with ReadModelDB(url) as db, db.read() as c:
        if not db.table_exists("eventmig_rebuild_claims", c) and "claims" in sql:
            return []
        return [tuple(r) for r in c.exec_driver_sql(sql, params).fetchall()]


def wait_for(predicate, timeout: float, *procs: subprocess.Popen, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[3:]} exited {p.returncode} waiting for {what}: {p.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_joined_process_killed_mid_run_is_taken_over_and_the_digests_equal_one_process(postgres_url, shop_registry):
    with open_store(postgres_url) as store:
        store.write_batch(list(ShopHistory(40_000, 3).events()))
        expected = expected_digests(store, shop_registry, SUMMARY)
    args = ("--batch-size", "100", "--lease", "2", "--json")
    primary = eventmig(postgres_url, "rebuild", "order_summary", "--share", "--workers", "4", *args)
    joiner = None
    try:
        run_id = wait_for(lambda: query(postgres_url, "SELECT id FROM eventmig_rebuilds WHERE status = 'running'"),
                          60, primary, what="the shared run")[0][0]
        joiner = eventmig(postgres_url, "rebuild", "--join", run_id, *args)
        mine = f"%:{joiner.pid}:%"
        # the joiner holds a partition and has committed part of it, not all
        held = wait_for(lambda: query(
            postgres_url,
            "SELECT c.partition, c.generation FROM eventmig_rebuild_claims c JOIN eventmig_rebuild_partitions p "
            "ON p.run_id = c.run_id AND p.partition = c.partition WHERE c.run_id = %s AND c.holder LIKE %s "
            "AND p.checkpoint IS NOT NULL AND p.status = 'folding'", run_id, mine,
        ), 120, primary, joiner, what="the joiner's first checkpoint")
        partition, generation = held[0]
        joiner.send_signal(signal.SIGKILL)
        joiner.communicate()
        out, err = primary.communicate(timeout=300)
    finally:
        for proc in (primary, joiner):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert primary.returncode == 0, err
    report = json.loads(out)
    assert report["swapped"] and report["ok"]
    assert joiner.returncode == -signal.SIGKILL
    # the killed process's partition was claimed again (a higher generation) and finished by the primary
    (after,) = query(postgres_url, "SELECT generation, holder FROM eventmig_rebuild_claims WHERE run_id = %s "
                                   "AND partition = %s", run_id, partition)
    assert after[0] > generation and after[1] is None
    assert {r[0] for r in query(postgres_url, "SELECT status FROM eventmig_rebuild_partitions WHERE run_id = %s",
                                run_id)} == {"done"}
    assert live_digests(postgres_url, SUMMARY) == expected


def test_the_starting_process_killed_mid_run_the_joined_one_finishes_and_a_rebuild_swaps(postgres_url, shop_registry):
    with open_store(postgres_url) as store:
        store.write_batch(list(ShopHistory(30_000, 4).events()))
        expected = expected_digests(store, shop_registry, SUMMARY)
    args = ("--batch-size", "100", "--lease", "2", "--json")
    primary = eventmig(postgres_url, "rebuild", "order_summary", "--share", "--workers", "3", *args)
    joiner = None
    try:
        run_id = wait_for(lambda: query(postgres_url, "SELECT id FROM eventmig_rebuilds WHERE status = 'running'"),
                          60, primary, what="the shared run")[0][0]
        # frozen, the starting process cannot fold every partition before the joiner claims one (on a quiet
        # machine it would); it dies below without having run again, as a host lost mid-run
        primary.send_signal(signal.SIGSTOP)
        joiner = eventmig(postgres_url, "rebuild", "--join", run_id, *args)
        wait_for(lambda: query(postgres_url, "SELECT partition FROM eventmig_rebuild_claims WHERE run_id = %s "
                                             "AND holder LIKE %s", run_id, f"%:{joiner.pid}:%"),
                 120, joiner, what="the joiner's first claim")
        primary.send_signal(signal.SIGKILL)
        primary.communicate()
        out, err = joiner.communicate(timeout=300)
    finally:
        for proc in (primary, joiner):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert joiner.returncode == 0, err
    joined = json.loads(out)
    assert joined["ok"] and joined["taken_over"] >= 1, joined  # the dead primary's partition, at least
    assert {r[0] for r in query(postgres_url, "SELECT status FROM eventmig_rebuild_partitions WHERE run_id = %s",
                                run_id)} == {"done"}
    finish = eventmig(postgres_url, "rebuild", "order_summary", "--json")  # resumes the run: verifies and swaps
    out, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err
    report = json.loads(out)
    assert report["swapped"] and report["projections"][0]["run_id"] == run_id and report["events_read"] == 0
    assert live_digests(postgres_url, SUMMARY) == expected


def test_join_and_share_are_refused_on_sqlite_in_one_line(sqlite_url):
    with open_store(sqlite_url) as store:
        store.write_batch(list(ShopHistory(50, 3).events()))
    for args in (("rebuild", "--join", "0123456789ab"), ("rebuild", "--share")):
        proc = eventmig(sqlite_url, *args)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "PostgreSQL" in lines[0], err


def test_joining_a_run_that_is_not_running_says_so(postgres_url):
    proc = eventmig(postgres_url, "rebuild", "--join", "0123456789ab")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "no rebuild run 0123456789ab" in err
