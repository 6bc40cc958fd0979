"""The typer app every command registers on, its consoles, its shared options and error reporting.

Each command module adds its commands to this one ``app``; the option types,
numeric bounds and the way an error becomes one line (or JSON) and an exit code
are defined once here so every command behaves alike.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.text import Text

from eventmig.cli import about, observe
from eventmig.config import (
    DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_MAX_WAIT_S, MAX_BATCH_SIZE, MAX_RETRY_ATTEMPTS, MAX_RETRY_MAX_WAIT_S,
    MAX_WORKERS, Settings, load_settings,
)
from eventmig.errors import EventmigError, ExitCode
from eventmig.cli.interrupts import Interrupts
from eventmig.urls import mask_url

app = typer.Typer(
    name="eventmig",
    help="Evolve event schemas without losing history: upcast, migrate, verify, switch, rebuild.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    add_completion=True,
    epilog=about.epilog(about.APP_EXAMPLE),
    pretty_exceptions_enable=False,
    # help texts name [tool.eventmig]: plain text, not rich markup that would swallow it
    rich_markup_mode=None,
)


# Everything printed is data (stream names, event types, paths, reasons), never markup: a stream
# named "[/x]" must print as itself, not vanish or crash the command.
# Piped into a log, tables get room rather than the 80 columns rich assumes without a terminal.
out = Console(width=None if sys.stdout.isatty() else 140, markup=False)


err = Console(stderr=True, soft_wrap=True, markup=False)


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="pyproject.toml with [tool.eventmig] (default: nearest one).", show_default=False)]


StoreOpt = Annotated[str | None, typer.Option("--store", help="Event store URL (env EVENTMIG_STORE).", show_default=False)]


TargetOpt = Annotated[str | None, typer.Option("--target", help="A second event store to migrate into, of any kind (env EVENTMIG_TARGET): --store is then the source, only read.", show_default=False)]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help=f"Events per batch (1 to {MAX_BATCH_SIZE:,}; default 10,000).", show_default=False)]


WorkersOpt = Annotated[int | None, typer.Option("--workers", min=1, max=MAX_WORKERS, help=f"Worker processes, at most one per batch and {MAX_WORKERS} in all (default: the number of cores).", show_default=False)]


MetricsPortOpt = Annotated[int | None, typer.Option("--metrics-port", min=1, max=65535, envvar="EVENTMIG_METRICS_PORT", help="Serve Prometheus metrics on this port while the job runs (needs eventmig[metrics]).", show_default=False)]


LogFormatOpt = Annotated[observe.LogFormat, typer.Option("--log-format", envvar="EVENTMIG_LOG_FORMAT", help="json: stderr carries one JSON object per line (run id, phase, counts, errors).")]


RetryAttemptsOpt = Annotated[int | None, typer.Option("--retry-attempts", min=0, max=MAX_RETRY_ATTEMPTS, help=f"Tries again after a lost connection, resuming from the last checkpoint (0 to {MAX_RETRY_ATTEMPTS:,}; default {DEFAULT_RETRY_ATTEMPTS}).", show_default=False)]


RetryWaitOpt = Annotated[float | None, typer.Option("--retry-max-wait", min=0, max=MAX_RETRY_MAX_WAIT_S, help=f"Longest wait between two tries, in seconds (default {DEFAULT_RETRY_MAX_WAIT_S:g}).", show_default=False)]


ReadModelsOpt = Annotated[str | None, typer.Option("--read-models", "--read-models-url", help="Read-model database URL (env EVENTMIG_READ_MODELS; default: the store's).", show_default=False)]


#: bounds of the other numeric options: past them a value is a typo, not a wish
MAX_EXAMPLES = 1_000_000


MAX_SAMPLE = 1_000_000


MAX_ATTEMPTS = 100


MAX_DEMO_EVENTS = 100_000_000


MAX_ID = 2**63 - 1  # a database's BIGINT


F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(fn: F) -> F:
    """Turn eventmig errors into one line on stderr (or JSON) and their documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        Interrupts.started = True
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BaseException as exc:
            if Interrupts.seen or isinstance(exc, KeyboardInterrupt):
                fail(Interrupts.message(fn.__name__), ExitCode.INTERRUPTED, as_json)
            if isinstance(exc, EventmigError):
                fail(str(exc), exc.exit_code, as_json)
            if not isinstance(exc, Exception) or os.environ.get("EVENTMIG_DEBUG"):
                raise
            # a bug or an unexpected failure: still one line, and no secrets
            fail(f"unexpected {type(exc).__name__}: {mask_url(str(exc)).splitlines()[0] if str(exc) else ''} "
                  "(set EVENTMIG_DEBUG=1 for a traceback)", ExitCode.RUNTIME, as_json)

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: ExitCode, as_json: bool) -> None:
    message = mask_url(message)
    Interrupts.reported = code == ExitCode.INTERRUPTED
    if as_json:
        sys.stdout.write(msgspec.json.encode({"error": message, "exit_code": int(code)}).decode() + "\n")
    else:
        err.print(Text(f"error: {message}", style="red"), soft_wrap=True)
    raise typer.Exit(int(code))


def settings_of(
    config: Path | None, store: str | None, batch_size: int | None = None, workers: int | None = None,
    retry_attempts: int | None = None, retry_max_wait: float | None = None, **extra: Any
) -> Settings:
    return load_settings(config, store=store, batch_size=batch_size, workers=workers, retry_attempts=retry_attempts,
                         retry_max_wait_s=retry_max_wait, **extra)


def emit_json(report: Any) -> None:
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


# ------------------------------------------------------------------- commands
def _print_version(value: bool) -> None:
    if value:
        out.print(f"eventmig {about.version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print eventmig's version and exit.")] = False,
) -> None:
    """Evolve event schemas without losing history: upcast, migrate, verify, switch, rebuild."""
