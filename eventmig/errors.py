"""Exceptions, each carrying the process exit code the CLI turns it into.

Operators script around eventmig, so a failure's *kind* must survive to the
exit status: a verification failure (1) is not a typo in the config (2), and
neither is a failure mid-run (3), a job that is already running elsewhere
(4), a store that stayed unreachable through every retry (5: run the same
command again once it is back, nothing is lost) or an operator's Ctrl-C
(130, as shells report SIGINT).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes of the ``eventmig`` command."""

    OK = 0
    #: verification or a CI check failed: digests differ, quarantine not accepted...
    CHECK_FAILED = 1
    #: bad usage or configuration: unknown store URL, invalid upcaster registry...
    USAGE = 2
    #: a runtime failure: the store is unreachable, a write conflict, a failing step...
    RUNTIME = 3
    #: another job holds the lock on the same target; try again when it is done
    BUSY = 4
    #: the store stayed unreachable through every retry; what was committed is kept, the same command resumes
    UNAVAILABLE = 5
    #: interrupted (SIGINT, Ctrl-C): what was committed is kept, running the command again resumes it
    INTERRUPTED = 130


class EventmigError(Exception):
    """Base of every error eventmig raises on purpose; ``str(e)`` is one readable line."""

    exit_code: ExitCode = ExitCode.RUNTIME


class ConfigError(EventmigError):
    """The configuration, a store URL or a command's arguments are wrong."""

    exit_code = ExitCode.USAGE


class RegistryError(ConfigError):
    """The upcaster registrations do not form valid chains to head schemas."""


class StoreError(EventmigError):
    """The event store failed or refused an operation."""


class TransientStoreError(StoreError):
    """The store failed in a way that trying again may fix: a lost connection, a server shutting down or
    restarting, a serialization failure or a deadlock. Jobs retry these (:mod:`eventmig.retry`)."""


class StoreUnavailable(StoreError):
    """The store stayed unreachable through every retry of a job; the message says how to resume."""

    exit_code = ExitCode.UNAVAILABLE


class WrongExpectedVersion(StoreError):
    """An append's expected stream version did not match: a concurrent writer won."""

    def __init__(self, stream: str, expected: object, actual: int | None) -> None:
        self.stream, self.expected, self.actual = stream, expected, actual
        super().__init__(
            f"concurrency conflict on stream {stream!r}: expected {_expectation(expected)}, "
            f"{'the stream does not exist' if actual is None else f'the stream is at version {actual}'}"
        )


def _expectation(expected: object) -> str:
    """An expected version as words: ``StreamState.NO_STREAM`` reads "no stream", not its repr."""
    value = getattr(expected, "value", expected)
    words = {"no_stream": "no stream", "exists": "an existing stream", "any": "any version"}
    return words.get(value, f"version {value}") if isinstance(value, str) else f"version {value}"


class HeadMoved(StoreError):
    """Events were appended to an epoch after it was verified; the switch did not happen."""


class Busy(EventmigError):
    """Another job already holds the lock this job needs."""

    exit_code = ExitCode.BUSY


class LeaseLost(Busy):
    """The job's lease was taken over (it expired while this job could not renew it): the job stops writing."""


class VerificationFailed(EventmigError):
    """Digests or counts differ, or quarantined events are not accepted."""

    exit_code = ExitCode.CHECK_FAILED


class UpcastError(EventmigError):
    """A step failed on one event; the migrate runner quarantines the event with this reason."""


def first_line(exc: BaseException | None) -> str:
    """A driver's (or a user's code's) error message, first line only: what fits a one-line error."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
