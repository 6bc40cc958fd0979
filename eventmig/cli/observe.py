"""How the command line lets a long job be watched from outside: Prometheus metrics and JSON logs.

Part of the command-line layer. :func:`observed` wraps a command (outside
its error handling, so it sees the exit code the error handling chose):
with ``--log-format json`` it turns every line the command writes on stderr
into a JSON object and closes the log with a ``finished`` line carrying the
exit code; with ``--metrics-port`` the command's progress also feeds
Prometheus metrics, served while it runs. Inside the command,
:func:`progresses` gives the progress displays to fan the job's progress
out to, starting the metrics server there, where a missing extra or a busy
port is reported as the command's own error (exit 2).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from typing import Any, TypeVar

import msgspec

from eventmig.cli.logs import JsonLog
from eventmig.progress import Progress

F = TypeVar("F", bound=Callable[..., Any])

#: where the metrics server listens (all interfaces, as Prometheus exporters do, unless set)
METRICS_ADDR_ENV = "EVENTMIG_METRICS_ADDR"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class _Watch:
    """What one command invocation is watched by."""

    def __init__(self, command: str, metrics_port: int | None, log_format: str) -> None:
        self.command = command
        self.metrics_port = metrics_port
        self.log = JsonLog(command) if log_format == LogFormat.json.value else None
        self.metrics: Any = None
        self.report: dict[str, Any] | None = None

    def progresses(self) -> list[Progress]:
        if self.metrics_port is not None and self.metrics is None:
            from eventmig.cli.metrics import Metrics

            metrics = Metrics(self.command)
            metrics.serve(self.metrics_port, os.environ.get(METRICS_ADDR_ENV) or "0.0.0.0")
            self.metrics = metrics
        return [p for p in (self.metrics, self.log) if p is not None]


_current: ContextVar[_Watch | None] = ContextVar("eventmig_watch", default=None)


def progresses() -> list[Progress]:
    """The metrics and JSON log the running command asked for (none by default)."""
    watch = _current.get()
    return watch.progresses() if watch is not None else []


def bars_allowed() -> bool:
    """Progress bars would interleave with JSON lines on stderr: none with ``--log-format json``."""
    watch = _current.get()
    return watch is None or watch.log is None


def report(job_report: Any) -> None:
    """The job's report: its figures close the JSON log (``finished``)."""
    watch = _current.get()
    if watch is not None:
        built = msgspec.to_builtins(job_report)
        watch.report = {k: v for k, v in built.items() if v is None or isinstance(v, (bool, int, float, str))}


class _LinesTo:
    """A text stream that hands each complete line written to it to ``sink``."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.sink(line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.pending.strip():
            self.sink(self.pending.rstrip())
        self.pending = ""

    def isatty(self) -> bool:
        return False


def observed(console: Any) -> Callable[[F], F]:
    """Decorate a command taking ``metrics_port`` and ``log_format``; ``console`` is its stderr console."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            log_format = kwargs.get("log_format") or LogFormat.text
            watch = _Watch(fn.__name__, kwargs.get("metrics_port"), getattr(log_format, "value", log_format))
            token = _current.set(watch)
            saved = console.file
            lines = None
            if watch.log is not None:
                lines = _LinesTo(watch.log.message)
                console.file = lines
                watch.log.start()
            code = 3  # anything but an exit the command chose is a runtime failure
            try:
                result = fn(*args, **kwargs)
                code = 0
                return result
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
                raise
            except Exception as exc:
                code = getattr(exc, "exit_code", code)  # click's Exit, which typer.Exit is
                raise
            finally:
                if lines is not None:
                    lines.close()
                    console.file = saved
                if watch.metrics is not None:
                    watch.metrics.close()
                if watch.log is not None:
                    watch.log.finish(int(code), watch.report)
                _current.reset(token)

        return wrapper  # type: ignore[return-value]

    return decorate
