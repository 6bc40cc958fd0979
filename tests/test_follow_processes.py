"""follow as operators run it: processes on loopback, concurrent writers, SIGKILL, standbys, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import projections as shop
from eventmig.jobs.seed import ShopHistory
from eventmig.backends.sql.following import FollowerDB
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store
from test_follow import expected_digests, live_digests

REPO = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).resolve().parent / "follow_writer.py"


def start_follow(url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "EVENTMIG_STORE": url, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "eventmig", "follow", "--json", "--poll", "0.2", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def followers(url: str) -> list:
    with ReadModelDB(url) as db:
        return FollowerDB(db).followers()


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"follower exited {proc.returncode} waiting for {what}: {proc.stdout.read()[-1000:]} {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def caught_up(url: str, head: int) -> bool:
    rows = followers(url)
    return len(rows) == len(shop.projections) and all(r.checkpoint == head for r in rows)


def prepared(url: str, registry, total: int, built: int, seed: int = 11) -> list:
    events = list(ShopHistory(total, seed).events())
    with open_store(url) as store:
        store.write_batch(events[:built])
        rebuild(store, shop.projections, registry=registry, workers=1)
    return events


def test_concurrent_writers_with_rollbacks_end_equal_to_a_replay(postgres_url: str, shop_registry):
    total, built, writers = 3000, 500, 6
    prepared(postgres_url, shop_registry, total, built)
    follower = start_follow(postgres_url, "--gap-wait", "2", "--batch-size", "200")
    try:
        wait_until(lambda: len(followers(postgres_url)) == 3, 60, follower, "the follower to start")
        procs = [
            subprocess.Popen([sys.executable, str(WRITER), postgres_url, "11", str(total), str(built), str(w),
                              str(writers)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
            for w in range(writers)
        ]
        for p in procs:
            assert p.wait(timeout=300) == 0
        with open_store(postgres_url) as store:
            head = store.head_position()
            assert store.count_events() == total
        assert head > total, "no transaction was rolled back: nothing tested the gaps"
        wait_until(lambda: caught_up(postgres_url, head), 120, follower, "the follower to catch up")
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert json.loads(out)["stopped_by"] == "stop"
    with open_store(postgres_url) as store:
        assert live_digests(postgres_url) == expected_digests(store, shop_registry)
    with ReadModelDB(postgres_url) as db:
        gaps = FollowerDB(db).gaps()
    # every rolled-back position was passed, and recorded, by every projection
    assert sum(g[4] - g[3] + 1 for g in gaps) == (head - total) * len(shop.projections)


def test_sigkill_then_resume_loses_nothing_and_applies_nothing_twice(store_url: str, shop_registry):
    prepared(store_url, shop_registry, 6000, 500)
    with open_store(store_url) as store:
        store.write_batch(list(ShopHistory(6000, 11).events())[500:])
        head = store.head_position()
    last = -1
    for _ in range(3):
        proc = start_follow(store_url, "--batch-size", "25", "--lease", "1")

        def moved() -> bool:
            return any(r.checkpoint is not None and r.checkpoint > last + 100 for r in followers(store_url))

        wait_until(moved, 60, proc, "a checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        last = max(r.checkpoint for r in followers(store_url) if r.checkpoint is not None)
        assert last < head, "the follower caught up before it could be killed"
    proc = start_follow(store_url, "--once", "--lease", "1")  # waits for the dead holder's lease to expire
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert caught_up(store_url, head)
    with open_store(store_url) as store:
        assert live_digests(store_url) == expected_digests(store, shop_registry)


def test_a_standby_takes_over_after_the_active_follower_is_killed(postgres_url: str, shop_registry):
    events = prepared(postgres_url, shop_registry, 2000, 1000)
    active = start_follow(postgres_url, "--lease", "2")
    standby = None
    try:
        wait_until(lambda: len(followers(postgres_url)) == 3 and all(r.holder for r in followers(postgres_url)),
                   60, active, "the active follower's leases")
        first = {r.holder for r in followers(postgres_url)}
        assert len(first) == 1
        standby = start_follow(postgres_url, "--lease", "2")
        time.sleep(1.5)
        assert {r.holder for r in followers(postgres_url)} == first, "the standby took a live holder's lease"
        active.send_signal(signal.SIGKILL)
        active.communicate()
        with open_store(postgres_url) as store:
            store.write_batch(events[1000:])
            head = store.head_position()
        started = time.monotonic()
        wait_until(lambda: caught_up(postgres_url, head), 60, standby, "the standby to take over")
        assert time.monotonic() - started < 30
        assert {r.holder for r in followers(postgres_url)}.isdisjoint(first)
    finally:
        if active.poll() is None:
            active.kill()
            active.communicate()
        if standby is not None:
            standby.send_signal(signal.SIGTERM)
            out, err = standby.communicate(timeout=60)
    assert standby.returncode == 0, err
    report = json.loads(out)
    assert report["applied"] == 3 * 1000 and all(s["status"] == "following" for s in report["segments"])
    with open_store(postgres_url) as store:
        assert live_digests(postgres_url) == expected_digests(store, shop_registry)


def test_a_second_ctrl_c_interrupts_at_once():
    """The first Ctrl-C (or SIGTERM) asks for a stop at a transaction's end; a second Ctrl-C raises at once,
    which the command line reports as an interruption, exit 130 (as every command does)."""
    from eventmig.cli.app import _StopOnSignal

    with _StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_at_a_transaction_boundary_with_0(sqlite_url: str, shop_registry, sig):
    prepared(sqlite_url, shop_registry, 200, 200)
    proc = start_follow(sqlite_url)
    wait_until(lambda: len(followers(sqlite_url)) == 3, 60, proc, "the follower to start")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["stopped_by"] == "stop"
    assert all(r.holder is None for r in followers(sqlite_url)), "a clean stop gives its leases up"
