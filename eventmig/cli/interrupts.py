"""Ctrl-C on the command line: reported once, in one line, with exit code 130; never a traceback.

A terminal sends SIGINT to every process of a job. Worker processes leave it
to the command (see :func:`eventmig.jobs.parallel.ignore_interrupts`), which
stops them and reports the interruption; what it committed stays committed,
so running the command again resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

#: commands whose work is committed as it goes: run again, they resume where an interruption left them
RESUMABLE = frozenset({"follow", "migrate", "rebuild", "switch"})


class Interrupts:
    """Ctrl-C, as the command line sees it: at most once per command.

    Python raises KeyboardInterrupt wherever the main thread happens to be:
    inside a driver's commit, a connection's close or a ``finally`` whose
    own clean-up then fails differently. Whatever error comes out of the
    command after a Ctrl-C is the interruption, reported as such.
    """

    #: a command began (its report of an interruption says how to resume it)
    started = False
    #: a Ctrl-C arrived while a command ran
    seen = False
    #: the command is over: a Ctrl-C now changes nothing, and must not turn its exit into a traceback
    finished = False
    #: the interruption was reported (once is enough)
    reported = False

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGINT, cls.handler)

    @classmethod
    def handler(cls, signum: int, frame: Any) -> None:
        if cls.finished:
            return
        cls.seen = True
        raise KeyboardInterrupt

    @staticmethod
    def message(command: str) -> str:
        if command in RESUMABLE:
            return f"interrupted; what was committed is kept: run `eventmig {command}` again to resume"
        return f"interrupted: run `eventmig {command}` again"


def exit_with(code: int) -> None:
    """Exit with the command's code: it is done, and a Ctrl-C from now on changes nothing.

    Python runs a signal's handler at its next check, which may come after
    the command returned; and at exit it puts back the default action,
    which would kill the process rather than let it report its code.
    """
    try:
        Interrupts.finished = True
    except KeyboardInterrupt:  # the handler ran just before: the command is over all the same
        Interrupts.finished = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if Interrupts.seen:
        # a process that saw a Ctrl-C is now and then ended by SIGINT rather than by its exit code
        # (the interpreter's own bookkeeping of interruptions): leave with the code, at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def quiet_library_logs() -> None:
    """The command reports failures itself, in one line: libraries' own error logs would add tracebacks.

    SQLAlchemy logs, with a traceback, a connection whose close failed (as
    one does when Ctrl-C lands in it); the command's one line says what
    happened, and ``EVENTMIG_DEBUG=1`` shows everything.
    """
    if not os.environ.get("EVENTMIG_DEBUG"):
        logger = logging.getLogger("sqlalchemy")
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
