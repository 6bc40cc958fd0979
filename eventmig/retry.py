"""Retrying a job through transient store failures: bounded exponential backoff with jitter.

A job's work is checkpointed (migrate's batches, a rebuild's partitions, a
switch's flip is one transaction), so the cure for a lost connection is to
run the same work again: it resumes from the last committed checkpoint. This
module decides *whether* a failure is worth another try (a backend registers
how to recognise its transient errors: :func:`register_transient`) and
*when* (tenacity's full-jitter exponential wait, capped), says so in one
line per retry through the job's :class:`~eventmig.progress.Progress`, and,
once the budget is spent, stops with :class:`~eventmig.errors.StoreUnavailable`
(exit code 5) naming the store, its masked URL and the command that resumes.

Errors that are not transient (a bug, a refused switch, a lost lease) pass
through at once: retrying them would only repeat them, or, for a lease
another job now holds, write beside that job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, NamedTuple, TypeVar

import tenacity

from eventmig.config import DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_MAX_WAIT_S, Settings
from eventmig.errors import LeaseLost, StoreUnavailable, TransientStoreError
from eventmig.progress import SILENT, Progress, notify
from eventmig.urls import mask_url

T = TypeVar("T")

#: the wait before the first retry is at most this (then doubles, capped by the max wait)
FIRST_WAIT_S = 0.5


class RetryPolicy(NamedTuple):
    """How hard a job tries again after a transient failure."""

    #: tries after the first failure (0: fail at once, as if there were no retries)
    attempts: int = DEFAULT_RETRY_ATTEMPTS
    #: the longest wait between two tries, in seconds
    max_wait_s: float = DEFAULT_RETRY_MAX_WAIT_S


def retry_policy(settings: Settings) -> RetryPolicy:
    """The policy ``[tool.eventmig]`` and the flags ask for."""
    return RetryPolicy(settings.retry_attempts, float(settings.retry_max_wait_s))


#: functions that recognise a backend's transient errors among exceptions that escaped it unconverted
_transient_checks: list[Callable[[BaseException], bool]] = []


def register_transient(check: Callable[[BaseException], bool]) -> None:
    """Let a backend say which of its raw errors are transient (it should raise TransientStoreError itself,
    this catches what a driver raised where the backend could not wrap it)."""
    if check not in _transient_checks:
        _transient_checks.append(check)


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same work again may succeed: a lost connection, a server restarting, a
    serialization failure or deadlock; never a lost lease, a bug or a refusal."""
    if isinstance(exc, LeaseLost):
        return False
    if isinstance(exc, TransientStoreError) or getattr(exc, "transient", False) is True:
        return True
    return any(check(exc) for check in _transient_checks)


def with_retries(
    work: Callable[[int], T],
    *,
    job: str,
    store_url: str,
    resume: str,
    policy: RetryPolicy = RetryPolicy(),
    progress: Progress = SILENT,
) -> T:
    """``work(attempt)`` (attempt 1, 2, ...), tried again after each transient failure, up to the budget.

    ``job`` names the work in notices (``migrate``), ``store_url`` is the
    masked URL of the store it talks to, ``resume`` the command that picks
    the work up again later. ``work`` must resume from its last committed
    checkpoint when called again: that is what makes a retry safe.
    """
    attempt = 0

    def one_try() -> T:
        nonlocal attempt
        attempt += 1
        return work(attempt)

    def announce(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        notify(progress, f"{job}: lost {store_url} ({_cause(error, store_url)}); retry {state.attempt_number} of "
                         f"{policy.attempts} in {_seconds(wait)}, resuming from the last committed checkpoint")

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts + 1),
        wait=tenacity.wait_random_exponential(multiplier=min(FIRST_WAIT_S, policy.max_wait_s), max=policy.max_wait_s),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=announce,
        reraise=True,
    )
    try:
        return retrying(one_try)
    except Exception as exc:
        if not is_transient(exc):
            raise
        tries = f"{attempt} tries" if attempt > 1 else "1 try"
        raise StoreUnavailable(
            f"{job} stopped: {store_url} is unavailable ({_cause(exc, store_url)}) after {tries}; what was committed "
            f"is kept: run `{resume}` to resume once the store is back"
        ) from exc


@contextmanager
def held(
    lock: Callable[[], AbstractContextManager[Any]],
    *,
    job: str,
    store_url: str,
    resume: str,
    policy: RetryPolicy = RetryPolicy(),
    progress: Progress = SILENT,
) -> Iterator[None]:
    """Hold ``lock()`` (a job's lock or lease) for the block, its taking retried like the work itself.

    A lock that is busy is not retried: :class:`~eventmig.errors.Busy` means
    another job is at work, and a second one must be refused at once.
    """
    with ExitStack() as stack:
        with_retries(lambda _attempt: stack.enter_context(lock()), job=job, store_url=store_url, resume=resume,
                     policy=policy, progress=progress)
        yield


def _seconds(wait: float) -> str:
    return f"{wait:.1f}s" if wait >= 1 else f"{wait * 1000:.0f} ms"


def _cause(exc: BaseException | None, store_url: str) -> str:
    """What went wrong, in one line, without the URL the message around it names already."""
    text = mask_url(_one_line(exc))
    for url in store_url.split(" or "):
        text = text.replace(f"cannot connect to {url}: ", "cannot connect: ").replace(f"{url}: ", "")
    return text


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
