"""What counts as transient, how many tries a job makes, and the settings that say so."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventmig.config import load_settings
from eventmig.errors import ConfigError, ExitCode, LeaseLost, StoreError, StoreUnavailable, TransientStoreError
from eventmig.retry import RetryPolicy, is_transient, retry_policy, with_retries
from eventmig.backends import open_store
from eventmig.errors import Busy

URL = "postgresql+psycopg://app:***@db.example/shop"


@pytest.mark.parametrize("error", [
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.CrashShutdown(), psycopg.errors.CannotConnectNow("the database system is starting up"),
    psycopg.errors.SerializationFailure(), psycopg.errors.DeadlockDetected(),
    psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
    TransientStoreError("lost"),
])
def test_transient_failures(error: BaseException):
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    psycopg.errors.UniqueViolation(), psycopg.errors.UndefinedTable(), sqlite3.OperationalError("database is locked"),
    StoreError("refused"), LeaseLost("taken over"), ValueError("a bug"), ConfigError("typo"),
])
def test_failures_that_are_not_retried(error: BaseException):
    assert not is_transient(error)


@given(attempts=st.integers(0, 5), failures=st.integers(0, 7), transient=st.booleans())
def test_tries_until_success_or_the_budget(attempts: int, failures: int, transient: bool):
    """k failures then success: a job makes min(k, budget) + 1 tries, one notice per retry, and succeeds iff
    the budget covers the failures; a failure that is not transient ends it at once."""
    calls: list[int] = []
    notices: list[str] = []

    class Notes:
        def task(self, label, total):  # noqa: ANN001, ANN201 - a Progress
            raise AssertionError("unused")

        def notice(self, message: str) -> None:
            notices.append(message)

    def work(attempt: int) -> str:
        calls.append(attempt)
        if len(calls) <= failures:
            raise TransientStoreError(f"{URL}: connection lost") if transient else StoreError("refused")
        return "done"

    run = lambda: with_retries(work, job="migrate", store_url=URL, resume="eventmig migrate",  # noqa: E731
                               policy=RetryPolicy(attempts, 0.0), progress=Notes())
    if failures == 0:
        assert run() == "done" and calls == [1] and notices == []
    elif not transient:
        with pytest.raises(StoreError, match="refused"):
            run()
        assert calls == [1] and notices == []
    elif failures <= attempts:
        assert run() == "done"
        assert calls == list(range(1, failures + 2)) and len(notices) == failures
        assert notices[0] == (f"migrate: lost {URL} (connection lost); retry 1 of {attempts} in 0 ms, "
                              "resuming from the last committed checkpoint")
    else:
        with pytest.raises(StoreUnavailable) as failed:
            run()
        assert calls == list(range(1, attempts + 2)) and len(notices) == attempts
        assert failed.value.exit_code == ExitCode.UNAVAILABLE == 5
        assert str(failed.value).startswith(f"migrate stopped: {URL} is unavailable (connection lost) after ")
        assert str(failed.value).endswith("run `eventmig migrate` to resume once the store is back")


def test_waits_grow_and_stay_under_the_cap():
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        with_retries(lambda _a: (_ for _ in ()).throw(TransientStoreError("x")), job="j", store_url=URL,
                     resume="r", policy=RetryPolicy(4, 0.05))
    assert time.monotonic() - started < 4 * 0.05 + 0.5


# ----------------------------------------------------------------- settings
def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.eventmig]\n{body}\n")
    return path


def test_retry_settings_from_the_file_and_flags(tmp_path: Path):
    settings = load_settings(_config(tmp_path, "retry_attempts = 3\nretry_max_wait_s = 0.5"))
    assert retry_policy(settings) == RetryPolicy(3, 0.5)
    assert retry_policy(load_settings(_config(tmp_path, "retry_attempts = 3"), retry_attempts=0)).attempts == 0
    assert retry_policy(load_settings(_config(tmp_path, ""))) == RetryPolicy()


@pytest.mark.parametrize("body, named", [
    ("retry_attempts = -1", "retry_attempts"), ('retry_attempts = "5"', "retry_attempts"),
    ("retry_attempts = 1001", "retry_attempts"), ("retry_max_wait_s = -0.1", "retry_max_wait_s"),
    ("retry_max_wait_s = true", "retry_max_wait_s"), ("retry_max_wait_s = 3601", "retry_max_wait_s"),
])
def test_bad_retry_settings_are_refused(tmp_path: Path, body: str, named: str):
    with pytest.raises(ConfigError, match=f"setting {named} must be"):
        load_settings(_config(tmp_path, body))


# ------------------------------------------------------------------- leases
def test_a_lease_renewed_by_its_heartbeat_outlives_its_time(postgres_url: str):
    with open_store(postgres_url) as first, open_store(postgres_url) as second:
        with first.lock("migrate", ttl_s=0.3):
            time.sleep(1.0)  # three times the lease's time: only the heartbeat keeps it
            with pytest.raises(Busy, match="holds the 'migrate' lock"):
                with second.lock("migrate"):
                    pass
            first.save_run(_run())  # and its writes still pass the fence
        with second.lock("migrate"):  # released: free at once
            pass


def _run():
    from eventmig.model.records import Run

    return Run(id="r1", kind="migrate", source_epoch=1, target_epoch=2, status="running", checkpoint=None,
               fingerprint="f", started_at=0.0, updated_at=0.0)
