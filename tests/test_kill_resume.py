"""A migration killed with SIGKILL at any moment resumes to exactly the right events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import msgspec
import pytest

from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import migrate
from eventmig.backends import open_store
from eventmig.jobs.verify import verify

EVENTS = 12_000


def start_migrate(url: str) -> subprocess.Popen:
    env = {**os.environ, "EVENTMIG_STORE": url}
    return subprocess.Popen(
        [sys.executable, "-m", "eventmig", "migrate", "--batch-size", "150", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def wait_for_checkpoint(url: str, proc: subprocess.Popen, beyond: int | None) -> int | None:
    """Poll the run record until the job has committed past ``beyond``."""
    deadline = time.monotonic() + 60
    with open_store(url) as s:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = s.runs("migrate")
            if runs and runs[-1].checkpoint is not None and (beyond is None or runs[-1].checkpoint > beyond):
                return runs[-1].checkpoint
            time.sleep(0.005)
    return None


@pytest.mark.parametrize("kills", [3])
def test_sigkill_mid_migration_then_resume(store_url: str, shop_registry, kills: int):
    with open_store(store_url) as s:
        seed(s, EVENTS)
        expected = migrate(s, shop_registry, dry_run=True)

    checkpoints = []
    last = None
    for _ in range(kills):
        proc = start_migrate(store_url)
        checkpoint = wait_for_checkpoint(store_url, proc, last)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
        assert checkpoint is not None
        checkpoints.append(checkpoint)
        last = checkpoint

    with open_store(store_url) as s:
        (run,) = s.runs("migrate")
        assert run.status == "running" and run.checkpoint >= checkpoints[-1]

    done = subprocess.run([sys.executable, "-m", "eventmig", "migrate", "--json"],
                          env={**os.environ, "EVENTMIG_STORE": store_url}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"resumed_from":' in done.stdout and '"resumed_from":null' not in done.stdout

    with open_store(store_url) as s:
        (run,) = s.runs("migrate")
        target = s.at_epoch(run.target_epoch)
        rows = [r for batch in target.read_all_rows() for r in batch]
        # exactly the events a clean run writes: none missing, none twice
        assert len(rows) == expected.events_written
        assert len({r[3] for r in rows}) == len(rows)
        assert len({(r[0], r[1]) for r in rows}) == len(rows)
        versions: dict[str, list[int]] = {}
        for r in rows:
            versions.setdefault(r[0], []).append(r[1])
        assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
        assert run.stats["read"] == EVENTS and run.stats["written"] == expected.events_written
        # the counts per (type, version), carried across the kills with the checkpoints, are a clean run's
        assert run.stats["before"] == expected.before and run.stats["after"] == expected.after
        written = Counter(f"{r[4]} v{msgspec.json.decode(r[6]).get('schema_version', 1)}" for r in rows)
        assert written == Counter(expected.after)
        report = verify(s, shop_registry)
        assert report.ok, report.problems
