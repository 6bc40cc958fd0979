"""Progress reporting for long jobs, decoupled from how it is shown.

Library functions take a :class:`Progress`; the CLI passes one that draws
rich progress bars (events done, events/s, ETA), tests and library users get
:data:`SILENT` by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: int | None) -> AbstractContextManager[Task]:
        """A unit of work of ``total`` events (None if unknown), advanced as it goes."""


class _SilentTask:
    def advance(self, n: int) -> None:
        pass


class _Silent:
    def task(self, label: str, total: int | None) -> AbstractContextManager[Task]:
        return nullcontext(_SilentTask())


SILENT: Progress = _Silent()


class RunObserver(Protocol):
    """What a :class:`Progress` may also want to hear: the run a job works for, and what it wrote.

    Metrics and machine-readable logs label what they report with the run
    id and count events written and quarantined; progress bars need
    neither, so a Progress implements this only if it cares, and jobs tell
    it through :func:`announce_run` and :func:`count_written` (once per
    run and once per batch: nothing is added to a per-event loop).
    """

    def run_started(self, run_id: str, subject: str) -> None:
        """The job works for run ``run_id``; ``subject`` says what it is (``migrate epoch 1 -> 2``, a projection)."""

    def events_written(self, written: int, quarantined: int) -> None:
        """A batch was committed: ``written`` events written, ``quarantined`` set aside."""

    def notice(self, message: str) -> None:
        """A one-line notice for the operator (a lost connection being retried); the job carries on."""


# getattr rather than isinstance of a runtime-checkable protocol, which costs some 20 µs a call here


def announce_run(progress: Progress, run_id: str, subject: str) -> None:
    hook = getattr(progress, "run_started", None)
    if hook is not None:
        hook(run_id, subject)


def count_written(progress: Progress, written: int, quarantined: int) -> None:
    hook = getattr(progress, "events_written", None)
    if hook is not None:
        hook(written, quarantined)


def notify(progress: Progress, message: str) -> None:
    hook = getattr(progress, "notice", None)
    if hook is not None:
        hook(message)


class _FanOutTask:
    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks

    def advance(self, n: int) -> None:
        for task in self.tasks:
            task.advance(n)


class FanOut:
    """One Progress that reports to several: progress bars, metrics and logs of one job."""

    def __init__(self, *members: Progress) -> None:
        self.members = [m for m in members if m is not SILENT]

    @contextmanager
    def task(self, label: str, total: int | None) -> Iterator[Task]:
        with ExitStack() as stack:
            yield _FanOutTask([stack.enter_context(m.task(label, total)) for m in self.members])

    def run_started(self, run_id: str, subject: str) -> None:
        for member in self.members:
            announce_run(member, run_id, subject)

    def events_written(self, written: int, quarantined: int) -> None:
        for member in self.members:
            count_written(member, written, quarantined)

    def notice(self, message: str) -> None:
        for member in self.members:
            notify(member, message)
