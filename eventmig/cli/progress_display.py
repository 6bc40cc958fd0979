"""Progress bars and notices on stderr for long commands, and their metrics and JSON logs.

A job reports progress through :class:`~eventmig.progress.Progress`; this
module draws it with rich on a terminal and stays quiet when piped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress as RichProgress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from eventmig.cli import observe
from eventmig.progress import SILENT, FanOut, Progress
from eventmig.cli.shared import err


# -------------------------------------------------------------- progress bars
class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="cyan")


class _RichProgress:
    """Progress bars on stderr: events done of total, events/s, elapsed, ETA."""

    def __init__(self) -> None:
        # the label gives way first on a narrow terminal; the figures keep their width
        self.bars = RichProgress(
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=16), MofNCompleteColumn(), _RateColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False, expand=True,
        )

    @contextmanager
    def task(self, label: str, total: int | None) -> Iterator[Any]:
        task_id = self.bars.add_task(label, total=total)
        bars = self.bars

        class _Task:
            def advance(self, n: int) -> None:
                bars.advance(task_id, n)

        yield _Task()
        bars.update(task_id, completed=bars.tasks[task_id].completed, total=bars.tasks[task_id].completed)


class _Notices:
    """A job's one-line notices (a lost connection being retried) on stderr, with or without bars."""

    def task(self, label: str, total: int | None) -> Any:
        return SILENT.task(label, total)

    def notice(self, message: str) -> None:
        err.print(Text(message, style="yellow"), soft_wrap=True)


@contextmanager
def progress_display(as_json: bool) -> Iterator[Progress]:
    watchers = observe.progresses()  # metrics and JSON logs, when the command was asked for them
    if as_json or not err.is_terminal or not observe.bars_allowed():
        yield FanOut(_Notices(), *watchers)
        return
    bars = _RichProgress()
    with bars.bars:
        yield FanOut(bars, _Notices(), *watchers)


#: metrics (--metrics-port) and JSON logs (--log-format json) around a long command
observing = observe.observed(err)
