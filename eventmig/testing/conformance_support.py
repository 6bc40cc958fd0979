"""What the store conformance suite's tests share: the fixtures a backend overrides, event builders,
and the functions its child processes run.

Child processes are started with ``spawn`` and given the test-class
instance, so they open the store the way the backend's own subclass says
(:meth:`StoreFixtures.open_another`), also for backends registered outside
eventmig.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from eventmig.backends import open_store
from eventmig.errors import WrongExpectedVersion
from eventmig.model.events import NewEvent, new_event
from eventmig.model.records import Run, TargetEvent
from eventmig.ports import EventStore


class StoreFixtures:
    """The fixtures every part of the suite uses; a backend's test class overrides ``store_url``.

    ``store`` opens the store at ``store_url`` through :meth:`open_another`;
    override either where a URL alone does not say how to open the store.
    Each test must get a store of its own, empty (one epoch, no events).
    """

    @pytest.fixture
    def store_url(self) -> str:
        """The URL of a new, empty store for one test (and for the processes it starts)."""
        pytest.fail(f"{type(self).__name__} must override the store_url fixture", pytrace=False)

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[EventStore]:
        """An open handle on the store at ``store_url``, closed after the test."""
        opened = self.open_another(store_url)
        try:
            yield opened
        finally:
            opened.close()

    def open_another(self, store_url: str, **options: Any) -> EventStore:
        """A new handle on the store at ``store_url`` (``options``: those of :func:`open_store`).

        Called in the test's process and in the processes it spawns.
        """
        return open_store(store_url, **options)


def first(store: EventStore) -> int:
    """The version the store gives a stream's first event."""
    return store.capabilities.first_stream_version


def events(n: int, type_: str = "Happened", start: int = 0) -> list[NewEvent]:
    """``n`` new events whose payloads number them from ``start``, with a trace in their metadata."""
    return [new_event(type_, {"n": start + i}, {"trace": f"t{start + i}"}) for i in range(n)]


def target(stream: str, version: int, index: int, type_: str = "T", recorded_at: int = 5) -> TargetEvent:
    """A migrated event with a deterministic id made from ``index``."""
    return TargetEvent(stream, version, f"00000000-0000-4000-8000-{index:012d}", type_, b"{}", b"{}", recorded_at)


def make_run(checkpoint: int | None = None, run_id: str = "r1", kind: str = "migrate", started: float | None = None) -> Run:
    """A running migrate job from epoch 1 to epoch 2 that got as far as ``checkpoint``."""
    now = time.time() if started is None else started
    return Run(run_id, kind, 1, 2, "running", checkpoint, "fp", now, now, {"read": 1}, {})


def flat(batches: Iterator[list[Any]]) -> list[Any]:
    """The items of a stream of batches, in order."""
    return [item for batch in batches for item in batch]


# ------------------------------------------------------ in child processes
def append_expecting(suite: StoreFixtures, url: str, expected: int) -> str:
    """Append one event to ``race`` expecting ``expected``: "ok" or "conflict"."""
    with suite.open_another(url) as s:
        try:
            s.append("race", events(1), expected)
            return "ok"
        except WrongExpectedVersion:
            return "conflict"


def hold_lock(suite: StoreFixtures, url: str, ready: Any, release: Any) -> None:
    """Take the ``migrate`` lock, say so, and hold it until released (or killed)."""
    with suite.open_another(url) as s:
        with s.lock("migrate"):
            ready.set()
            release.wait(60)


def append_many(suite: StoreFixtures, url: str, stream: str, count: int) -> int:
    """Append ``count`` events to ``stream`` one append at a time; return how many were appended."""
    with suite.open_another(url) as s:
        for i in range(count):
            s.append(stream, [new_event("Written", {"stream": stream, "n": i})])
    return count
