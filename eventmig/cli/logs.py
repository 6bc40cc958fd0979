"""Machine-readable logs (``--log-format json``): one JSON object per line, for operators who ship logs.

Every line holds the time, the level, the command, the run id (once the
job knows it), the phase and the counts so far, and an ``event``:

* ``started``: the command began (with eventmig's version and the process id);
* ``run``: the job works for this run (``subject`` says what it is);
* ``phase_started`` / ``progress`` (every few seconds) / ``phase_finished``:
  what a phase has read of its total, at what rate;
* ``message``: a line the command would print on stderr (a warning, an error);
* ``finished``: the exit code, the error if any, the counts and the seconds.

A :class:`JsonLog` is a :class:`~eventmig.progress.Progress` and a
:class:`~eventmig.progress.RunObserver`, fed by the jobs like the progress
bars and the metrics are.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import msgspec

#: seconds between two ``progress`` lines of one phase
PROGRESS_EVERY = 10.0

_encode = msgspec.json.Encoder().encode


class _LoggedTask:
    def __init__(self, log: JsonLog, phase: str, total: int | None) -> None:
        self.log, self.phase, self.total = log, phase, total
        self.done = 0
        self.started = self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        self.log.counts["read"] += n
        now = time.monotonic()
        if now - self.last >= self.log.every:
            self.last = now
            self.log.emit("progress", phase=self.phase, done=self.done, total=self.total, events_per_second=self.rate(now))

    def rate(self, now: float) -> float:
        return round(self.done / (now - self.started), 1) if now > self.started else 0.0


class JsonLog:
    """The JSON lines of one command, written to ``stream`` (stderr by default)."""

    def __init__(self, command: str, stream: TextIO | None = None, *, every: float = PROGRESS_EVERY) -> None:
        self.command = command
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.run_id: str | None = None
        self.runs: dict[str, str] = {}  # subject -> run id
        self._fresh_runs = True  # the next announcement adds to the current runs rather than replacing them
        self.phase: str | None = None
        self.counts = {"read": 0, "written": 0, "quarantined": 0}
        self.error: str | None = None
        self.started = time.monotonic()

    def emit(self, event: str, *, level: str = "info", **fields: Any) -> None:
        line = {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "event": event,
            "command": self.command,
            "run_id": self.run_id,
            "phase": fields.pop("phase", self.phase),
            "counts": dict(self.counts),
            **fields,
        }
        self.stream.write(_encode(line).decode() + "\n")
        self.stream.flush()

    def start(self) -> None:
        from eventmig.cli import about

        self.emit("started", version=about.version(), pid=os.getpid())

    def message(self, text: str) -> None:
        """A line the command printed on stderr; ``error: ...`` is the command's error."""
        if text.startswith("error: "):
            self.error = text[len("error: "):]
            self.emit("message", level="error", message=self.error)
        else:
            self.emit("message", level="warning", message=text)

    def finish(self, exit_code: int, report: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"exit_code": exit_code, "error": self.error,
                                  "seconds": round(time.monotonic() - self.started, 3)}
        if report:
            fields["report"] = report
        self.phase = None
        self.emit("finished", level="info" if exit_code == 0 else "error", **fields)

    # ------------------------------------------------------------ Progress
    @contextmanager
    def task(self, label: str, total: int | None) -> Iterator[_LoggedTask]:
        self.phase = label
        self._fresh_runs = False
        task = _LoggedTask(self, label, total)
        self.emit("phase_started", total=total)
        try:
            yield task
        finally:
            now = time.monotonic()
            self.emit("phase_finished", phase=label, done=task.done, total=total,
                      seconds=round(now - task.started, 3), events_per_second=task.rate(now))
            self.phase = None

    # --------------------------------------------------------- RunObserver
    def run_started(self, run_id: str, subject: str) -> None:
        if not self._fresh_runs:  # a new job of the same command (the demo's rebuild after its migrate)
            self.runs = {}
            self._fresh_runs = True
        self.runs[subject] = run_id
        self.run_id = ",".join(dict.fromkeys(self.runs.values()))
        self.emit("run", subject=subject)

    def events_written(self, written: int, quarantined: int) -> None:
        self.counts["written"] += written
        self.counts["quarantined"] += quarantined
