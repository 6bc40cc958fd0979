"""Progress reporting for long jobs, decoupled from how it is shown.

Library functions take a :class:`Progress`; the CLI passes one that draws
rich progress bars (events done, events/s, ETA), tests and library users get
:data:`SILENT` by default.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
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
