"""The ``eventmig`` command: flags in, a library call from ``command.py``, a report out.

Exit codes (see :class:`~eventmig.errors.ExitCode`): 0 ok; 1 verification or
check failed; 2 usage or configuration error; 3 runtime failure; 4 another
job holds the lock; 130 interrupted (Ctrl-C). Errors are one line on stderr;
``--json`` prints the report as JSON on stdout (errors too, as
``{"error": ..., "exit_code": ...}``).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
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
from rich.table import Column, Table
from rich.text import Text

from eventmig.cli import about, observe
from eventmig import command
from eventmig.config import (
    DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_MAX_WAIT_S, MAX_BATCH_SIZE, MAX_REBUILD_BATCH_SIZE, MAX_RETRY_ATTEMPTS,
    MAX_RETRY_MAX_WAIT_S, MAX_WORKERS, Settings, load_settings,
)
from eventmig.errors import ConfigError, EventmigError, ExitCode
from eventmig.model.graph import RENDERERS
from eventmig.cli.interrupts import Interrupts, exit_with, quiet_library_logs
from eventmig.progress import SILENT, FanOut, Progress
from eventmig.urls import mask_url
from eventmig.config import (
    DEFAULT_FOLLOW_GAP_WAIT_S,
    DEFAULT_FOLLOW_LEASE_S,
    DEFAULT_FOLLOW_POLL_S,
    DEFAULT_REBUILD_CLAIM_LEASE_S,
)
from eventmig.config import MAX_FOLLOW_BATCH_SIZE

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
                _fail(Interrupts.message(fn.__name__), ExitCode.INTERRUPTED, as_json)
            if isinstance(exc, EventmigError):
                _fail(str(exc), exc.exit_code, as_json)
            if not isinstance(exc, Exception) or os.environ.get("EVENTMIG_DEBUG"):
                raise
            # a bug or an unexpected failure: still one line, and no secrets
            _fail(f"unexpected {type(exc).__name__}: {mask_url(str(exc)).splitlines()[0] if str(exc) else ''} "
                  "(set EVENTMIG_DEBUG=1 for a traceback)", ExitCode.RUNTIME, as_json)

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: ExitCode, as_json: bool) -> None:
    message = mask_url(message)
    Interrupts.reported = code == ExitCode.INTERRUPTED
    if as_json:
        sys.stdout.write(msgspec.json.encode({"error": message, "exit_code": int(code)}).decode() + "\n")
    else:
        err.print(Text(f"error: {message}", style="red"), soft_wrap=True)
    raise typer.Exit(int(code))


def _settings(
    config: Path | None, store: str | None, batch_size: int | None = None, workers: int | None = None,
    retry_attempts: int | None = None, retry_max_wait: float | None = None, **extra: Any
) -> Settings:
    return load_settings(config, store=store, batch_size=batch_size, workers=workers, retry_attempts=retry_attempts,
                         retry_max_wait_s=retry_max_wait, **extra)


def _emit_json(report: Any) -> None:
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


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
def _progress(as_json: bool) -> Iterator[Progress]:
    watchers = observe.progresses()  # metrics and JSON logs, when the command was asked for them
    if as_json or not err.is_terminal or not observe.bars_allowed():
        yield FanOut(_Notices(), *watchers)
        return
    bars = _RichProgress()
    with bars.bars:
        yield FanOut(bars, _Notices(), *watchers)


#: metrics (--metrics-port) and JSON logs (--log-format json) around a long command
_observed = observe.observed(err)


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


@app.command()
@reports_errors
def init(
    directory: Annotated[Path, typer.Argument(help="The service's root directory.")] = Path("."),
    example: Annotated[str | None, typer.Option("--example", help="Write an example service instead of empty packages: shop (the reference service `eventmig demo` runs).", show_default=False)] = None,
    store: Annotated[str | None, typer.Option("--store", help="The service's existing database: [tool.eventmig] points at the events table `eventmig inspect` recognises there, or eventmig's store is set up in it.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scaffold [tool.eventmig], upcasters/ and projections/ in a service repository."""
    report = command.init(directory, example=example, store=store)
    if as_json:
        return _emit_json(report)
    for item in report.created:
        out.print(f"created {item}")
    for item in report.skipped:
        out.print(f"kept    {item}")
    if report.example == "shop" and report.created:
        out.print("next: eventmig demo")


@app.command("inspect")
@reports_errors
def inspect_(
    url: Annotated[str, typer.Argument(help="The database to look at (sqlite:///PATH or postgresql://...).")],
    as_json: JsonOpt = False,
) -> None:
    """List a database's tables, recognise event-store layouts, count events by (type, version); write nothing."""
    report = command.inspect(url)
    if as_json:
        return _emit_json(report)
    table = Table(title=f"Tables of {report.store}")
    for col in ("table", "layout", "events", "type", "version", "count"):
        table.add_column(col, justify="right" if col in ("events", "count", "version") else "left")
    for t in report.tables:
        events = f"{t.events:,}" if t.events is not None else ""
        table.add_row(t.table, t.layout or "-", events, *(("", "", "") if not t.counts else (
            t.counts[0].type, _shown_version(t.counts[0].version), f"{t.counts[0].events:,}")))
        for c in t.counts[1:]:
            table.add_row("", "", "", c.type, _shown_version(c.version), f"{c.events:,}")
    out.print(table)
    for t in report.tables:
        if t.problem:
            err.print(Text(f"{t.table}: {t.problem}", style="yellow"), soft_wrap=True)
    if report.snippet:
        out.print("\nsettings for pyproject.toml (or `eventmig init --store URL` writes them):\n")
        out.print(report.snippet, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print("no events table recognised; `eventmig init --store URL` sets eventmig's own store up here")


def _shown_version(version: int | None) -> str:
    return str(version) if version is not None else "unreadable"


class PlanFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


@app.command()
@reports_errors
def plan(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Only show the registered chains.")] = False,
    fmt: Annotated[PlanFormat, typer.Option("--format", help="mermaid (a ```mermaid block for a pull request) or dot (Graphviz): the upcaster graph, with stored counts.")] = PlanFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Show the registered chains and which stored (type, version) pairs can reach a head."""
    if fmt is not PlanFormat.text:
        return _plan_graph(_settings(config, store), not no_store, fmt.value, as_json)
    with _progress(as_json) as progress:
        report = command.plan(_settings(config, store), scan_store=not no_store, progress=progress)
    if as_json:
        _emit_json(report)
    else:
        table = Table(title="Upcaster chains", show_lines=False)
        table.add_column("from")
        table.add_column("to head")
        for node, paths in report.chains.items():
            table.add_row(node, "\n".join(paths))
        out.print(table)
        out.print("heads: " + ", ".join(f"{t} v{v}" for t, v in report.heads.items()))
        if report.store:
            stored = Table(title=f"Stored in epoch {report.epoch} of {report.store}")
            for col in ("type", "version", "events", "treatment", "detail"):
                stored.add_column(col, justify="right" if col == "events" else "left")
            _stored_rows(stored, report.stored)
            out.print(stored)
        else:
            out.print(f"store not scanned: {report.store_skipped}", soft_wrap=True)
        if report.uncovered:
            err.print(Text("no path to a head: " + ", ".join(report.uncovered), style="red"))
        _print_unreadable(report.stored, err)
        for warning in report.warnings:
            err.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command()
@reports_errors
def check(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    examples: Annotated[int | None, typer.Option("--examples", min=1, max=MAX_EXAMPLES, help=f"Generated events per schema for the property checks, 1 to {MAX_EXAMPLES:,} (default: check_examples of [tool.eventmig], 100).", show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", min=0, max=MAX_SAMPLE, help=f"Stored events per (type, version) to upcast in a dry run (0 to {MAX_SAMPLE:,}).")] = 100,
    no_store: Annotated[bool, typer.Option("--no-store", help="Check the registry only, not the store.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Randomize generation with this seed (default: derandomized, the same on every run).", show_default=False)] = None,
    no_strict: Annotated[bool, typer.Option("--no-strict", help="Skip the laws of the steps and the schema gaps (report gaps as notes).")] = False,
    record: Annotated[bool, typer.Option("--record", help="Record what sampled stored (or generated) events become, as cases pending review; checks nothing.")] = False,
    accept: Annotated[bool, typer.Option("--accept", help="Move the recorded cases into the cases file, then check.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """CI gate: property-check the upcasters, run their examples, and check that every stored (type, version) reaches a head."""
    settings = _settings(config, store)
    if record and accept:
        raise ConfigError("--record and --accept are two steps: record, review the cases, then accept them")
    if record:
        with _progress(as_json) as progress:
            recorded = command.record_cases(settings, scan_store=not no_store, progress=progress)
        return _emit_json(recorded) if as_json else _print_recorded(recorded)
    if accept:
        accepted = command.accept_cases(settings)
        if not as_json:
            out.print(f"accepted {len(accepted.accepted)} case(s) into {accepted.cases_file}", soft_wrap=True)
    with _progress(as_json) as progress:
        report = command.check(settings, examples=examples, sample=sample, scan_store=not no_store,
                               seed=seed, strict=not no_strict, progress=progress)
    if as_json:
        _emit_json(report)
    else:
        _print_check(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _stored_rows(table: Table, pairs: list[command.StoredPair]) -> None:
    """What the store holds of each (type, version); events whose version cannot be read, as such."""
    for p in pairs:
        style = "red" if p.treatment in ("no path", "unreadable") else None
        version = str(p.version) if p.version is not None else "unreadable"
        table.add_row(p.type, version, f"{p.events:,}", p.treatment, p.detail, style=style)


def _print_unreadable(pairs: list[command.StoredPair], console: Console) -> None:
    unreadable: dict[str, int] = {}
    for p in pairs:
        if p.treatment == "unreadable":
            unreadable[p.type] = unreadable.get(p.type, 0) + p.events
    if unreadable:
        console.print(Text("schema version unreadable (migrate quarantines them): "
                           + ", ".join(f"{n:,} {t}" for t, n in unreadable.items()), style="red"), soft_wrap=True)


def _print_recorded(report: command.RecordReport) -> None:
    for case in report.recorded:
        out.print(Text(f"recorded {case.name}", style="bold"), soft_wrap=True)
        out.print(f"  given   {case.type} v{case.version} {_json(case.data)}", soft_wrap=True)
        for t, v, data in case.becomes:
            out.print(f"  becomes {t} v{v} {_json(data)}", soft_wrap=True)
        if not case.becomes:
            out.print("  becomes nothing (dropped)")
    for item in report.skipped:
        out.print(Text(item, style="yellow"), soft_wrap=True)
    if report.recorded:
        out.print(f"{len(report.recorded)} case(s) from {report.source} events written to {report.pending}: "
                  "review them, then eventmig check --accept (or delete the file)", soft_wrap=True)
    else:
        out.print("nothing new to record", soft_wrap=True)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _plan_graph(settings: Settings, scan_store: bool, fmt: str, as_json: bool) -> None:
    if as_json:
        raise ConfigError(f"--format {fmt} draws the graph and --json prints the plan's report: choose one")
    with _progress(as_json) as progress:
        report, graph = command.plan_graph(settings, scan_store=scan_store, progress=progress)
    sys.stdout.write(RENDERERS[fmt](graph))
    if report.uncovered:
        err.print(Text("no path to a head: " + ", ".join(report.uncovered), style="red"))
    _print_unreadable(report.stored, err)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_check(report: command.CheckReport) -> None:
    props = report.properties
    strictness = "" if props.strict else ", not strict"
    table = Table(title=f"Property checks (boundary values and {props.examples} generated events per schema{strictness})")
    for col in ("schema", "role", "generated", "examples", "result"):
        table.add_column(col, justify="right" if col in ("generated", "examples") else "left")
    for node in props.nodes:
        if node.failures:
            result, style = "FAILED: " + ", ".join(dict.fromkeys(f.property for f in node.failures)), "red"
        elif not node.generated and not node.cases:
            result, style = "not generated", "yellow"
        else:
            result, style = "ok", None
        table.add_row(node.name, node.role, f"{node.examples:,}" if node.generated else "-",
                      f"{node.cases:,}" if node.cases else "-", result, style=style)
    out.print(table)
    # the failures with their shrunk examples, on stdout with the tables so that a CI log keeps them in order
    for line in props.format().splitlines()[:-1 - len(props.not_generated)]:
        out.print(Text(line, style="red"), soft_wrap=True)
    for item in props.not_generated:
        out.print(Text(f"not generated: {item}", style="yellow"), soft_wrap=True)
    if report.store is not None:
        s = report.store
        stored = Table(title=f"Stored in epoch {s.epoch} of {s.url}")
        for col in ("type", "version", "events", "treatment", "detail"):
            stored.add_column(col, justify="right" if col == "events" else "left")
        _stored_rows(stored, s.stored)
        out.print(stored)
        out.print(f"{s.sampled:,} of {s.events:,} stored events sampled (up to {s.sample_per_version:,} per version) "
                  f"and upcast without writing: {len(s.failed):,} failed", soft_wrap=True)
        for f in s.failed[:20]:
            out.print(Text(f"failed: {f.stream}@{f.stream_version} ({f.type}, {f.event_id}): {f.reason}", style="red"),
                      soft_wrap=True)
        if len(s.failed) > 20:
            out.print(Text(f"... and {len(s.failed) - 20:,} more (--json lists them all)", style="red"))
        if s.uncovered:
            out.print(Text("no path to a head: " + ", ".join(s.uncovered), style="red"), soft_wrap=True)
        _print_unreadable(s.stored, out)
    else:
        out.print(f"store not checked: {report.store_skipped}", soft_wrap=True)
    if report.pending_cases:
        out.print(Text(report.pending_cases, style="yellow"), soft_wrap=True)
    out.print(Text("check passed" if report.ok else "check FAILED", style="green" if report.ok else "red"))


@app.command()
@_observed
@reports_errors
def migrate(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    target: TargetOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    retry_attempts: RetryAttemptsOpt = None,
    retry_max_wait: RetryWaitOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; write nothing.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the unfinished new epoch and start over.")] = False,
    stream_map: Annotated[Path | None, typer.Option("--stream-map", help="JSON file {old stream: new stream}.", show_default=False)] = None,
    init: Annotated[bool, typer.Option("--init", help="Set eventmig up even in a database that holds other tables and no eventmig state (refused otherwise).")] = False,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Copy the active epoch through the upcasters into a new epoch (resumes if interrupted)."""
    with _progress(as_json) as progress:
        report = command.migrate(_settings(config, store, batch_size, workers, retry_attempts, retry_max_wait, target=target),
                                 dry_run=dry_run, restart=restart,
                                 stream_map=stream_map, init=init, progress=progress)
    observe.report(report)
    if as_json:
        _emit_json(report)
        if report.problems:  # what would make the real run refuse: the same exit code as its refusal
            raise typer.Exit(ExitCode.USAGE)
        return None
    title = "Dry run" if report.dry_run else f"Migrated epoch {report.source_epoch} -> {report.target_epoch} (run {report.run_id})"
    table = Table(title=title)
    table.add_column("schema")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for node in sorted(report.before.keys() | report.after.keys()):
        table.add_row(node, f"{report.before.get(node, 0):,}", f"{report.after.get(node, 0):,}")
    out.print(table)
    resumed = f" (resumed after position {report.resumed_from})" if report.resumed_from is not None else ""
    out.print(
        f"read {report.events_read:,} events{resumed}, wrote {report.events_written:,}; "
        f"{report.dropped:,} dropped, {report.unknown:,} of unknown types copied, {report.quarantined:,} quarantined; "
        f"{report.seconds:.2f} s, {report.events_per_second:,.0f} events/s"
    )
    for reason, n in report.quarantine_reasons.items():
        err.print(Text(f"quarantined {n:,}: {reason}", style="yellow"))
    for warning in report.warnings:
        err.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
    for problem in report.problems:
        err.print(Text(f"error: {problem}", style="red"), soft_wrap=True)
    if report.problems:
        raise typer.Exit(ExitCode.USAGE)


def _print_verify(report: Any) -> None:
    table = Table(title=f"Verify epoch {report.source_epoch} -> {report.target_epoch} (run {report.run_id})")
    table.add_column("")
    table.add_column("upcast source", justify="right")
    table.add_column("target", justify="right")
    table.add_row("events", f"{report.expected_events:,}", f"{report.target_events:,}")
    table.add_row("digest", report.expected_digest, report.target_digest)
    out.print(table)
    out.print(f"{report.streams_compared:,} streams compared in {report.seconds:.2f} s ({report.events_per_second:,.0f} events/s)")
    if report.source_advanced_by:
        err.print(Text(f"{report.source_advanced_by:,} event(s) appended to the source since the migration: migrate again to catch up", style="yellow"))
    for d in report.differences[:20]:
        where = f" at version {d.version}" if d.version is not None else ""
        detail = f" ({d.detail})" if d.detail else ""
        err.print(Text(f"differs: {d.stream}{where}: {d.field}{detail}", style="red"))
    shown = min(len(report.differences), 20)
    if report.differing_count > shown:
        err.print(Text(f"... and {report.differing_count - shown:,} more streams differ"
                       + (" (--json lists the first 50)" if report.differing_count > 20 else ""), style="red"))
    for problem in report.problems:
        err.print(Text(problem, style="red"))
    out.print(Text("verified: digests match" if report.ok else "verification FAILED", style="green" if report.ok else "red"))


@app.command()
@_observed
@reports_errors
def verify(
    config: ConfigOpt = None, store: StoreOpt = None, target: TargetOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    metrics_port: MetricsPortOpt = None, log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Compare digests of the upcast source with the migrated epoch, stream by stream."""
    with _progress(as_json) as progress:
        report = command.verify(_settings(config, store, batch_size, workers, target=target), progress=progress)
    observe.report(report)
    _emit_json(report) if as_json else _print_verify(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command()
@_observed
@reports_errors
def switch(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    target: TargetOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    retry_attempts: RetryAttemptsOpt = None,
    retry_max_wait: RetryWaitOpt = None,
    catch_up: Annotated[bool, typer.Option("--catch-up/--no-catch-up", help="Migrate and verify events appended meanwhile, then switch.")] = True,
    attempts: Annotated[int, typer.Option("--attempts", min=1, max=MAX_ATTEMPTS, help=f"Catch-ups to try while writers keep appending (1 to {MAX_ATTEMPTS}).")] = 5,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Verify, then make the migrated epoch active atomically."""
    with _progress(as_json) as progress:
        report = command.switch(_settings(config, store, batch_size, workers, retry_attempts, retry_max_wait, target=target),
                                catch_up=catch_up, attempts=attempts, progress=progress)
    observe.report(report)
    if as_json:
        return _emit_json(report)
    if report.verification:
        _print_verify(report.verification)
    if report.caught_up:
        out.print(f"caught up with {report.caught_up:,} event(s) appended during the switch ({report.attempts} attempt(s))")
    out.print(Text(f"switched: epoch {report.to_epoch} is active (was {report.from_epoch})", style="green"))


@app.command()
@reports_errors
def rollback(
    names: Annotated[list[str] | None, typer.Argument(help="With --read-models: the projections to roll back (default: those of the last swap).", show_default=False)] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    target: TargetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Roll back even if events were appended since the switch.")] = False,
    retry_attempts: RetryAttemptsOpt = None,
    retry_max_wait: RetryWaitOpt = None,
    read_models: Annotated[bool, typer.Option("--read-models", help="Put back the read-model tables the last rebuild swap replaced, instead.")] = False,
    read_models_url: Annotated[str | None, typer.Option("--read-models-url", help="Read-model database URL (env EVENTMIG_READ_MODELS; default: the store's).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the epoch that was active before the last switch active again (or, with --read-models, the read-model tables the last swap replaced)."""
    with _progress(True) as progress:  # notices only: a rollback is one transaction, no bars
        report = command.rollback(_settings(config, store, retry_attempts=retry_attempts, retry_max_wait=retry_max_wait,
                                            read_models=read_models_url, target=target),
                                  force=force, read_models=read_models, names=names, progress=progress)
    if as_json:
        return _emit_json(report)
    if isinstance(report, command.cutover.ReadModelRollbackReport):
        for swap in report.swaps:
            now = (f"{swap.projection} v{swap.to_version} (run {swap.run_id}) is" if swap.to_version is not None
                   else f"{swap.projection}: the tables it had before eventmig's first swap are")
            was = f"v{swap.from_version}" if swap.from_version is not None else "tables eventmig did not build"
            out.print(Text(f"rolled back: {now} live again (was {was}); tables {', '.join(swap.tables)}", style="green"))
        for note in report.notes:
            err.print(Text(note, style="yellow"))
        return None
    out.print(Text(f"rolled back: epoch {report.to_epoch} is active (was {report.from_epoch})", style="green"))
    if report.hidden_events:
        err.print(Text(f"{report.hidden_events} event(s) appended after the switch remain only in epoch {report.from_epoch}", style="yellow"))
    for swap in report.read_models:
        out.print(Text(f"read model {swap.projection} v{swap.to_version} (run {swap.run_id}), built from epoch "
                       f"{report.to_epoch}, is live again; tables {', '.join(swap.tables)}", style="green"))
    if report.stale_read_models:
        err.print(Text(f"stale read models, built from epoch {report.from_epoch}: {', '.join(report.stale_read_models)}; "
                       "`eventmig rebuild` rebuilds them", style="yellow"), soft_wrap=True)
    for note in report.notes:
        err.print(Text(note, style="yellow"), soft_wrap=True)


@app.command()
@_observed
@reports_errors
def rebuild(
    names: Annotated[list[str] | None, typer.Argument(help="Projections to rebuild (default: all).", show_default=False)] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    read_models: ReadModelsOpt = None,
    workers: WorkersOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=MAX_REBUILD_BATCH_SIZE, help=f"Events folded between two checkpoints (1 to {MAX_REBUILD_BATCH_SIZE:,}; default 1,000,000).", show_default=False)] = None,
    retry_attempts: RetryAttemptsOpt = None,
    retry_max_wait: RetryWaitOpt = None,
    accept_changes: Annotated[bool, typer.Option("--accept-changes", help="Swap in a new projection version even though rows differ.")] = False,
    no_swap: Annotated[bool, typer.Option("--no-swap", help="Stop after verification; a later rebuild swaps the verified tables in.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Abandon unfinished rebuilds instead of resuming them.")] = False,
    share: Annotated[bool, typer.Option("--share", help="Claim the runs' partitions one at a time through leases and fold them in this process (PostgreSQL read models), so that `rebuild --join RUN` on other hosts can take some.")] = False,
    join: Annotated[str | None, typer.Option("--join", metavar="RUN", help="Take partitions of the running shared rebuild run RUN until all are folded (PostgreSQL read models).", show_default=False)] = None,
    lease: Annotated[float, typer.Option("--lease", min=0.1, max=3600, help="Seconds a partition claim lasts unless renewed (--share, --join); a dead holder's partitions are taken over after it.")] = DEFAULT_REBUILD_CLAIM_LEASE_S,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Replay the active epoch into shadow read-model tables in parallel, verify them, swap them in."""
    settings = _settings(config, store, retry_attempts=retry_attempts, retry_max_wait=retry_max_wait,
                         read_models=read_models)
    if join is not None:
        joined = command.join_rebuild(settings, join, batch_size=batch_size, lease_s=lease)
        if as_json:
            _emit_json(joined)
        else:
            err.print(f"run {joined.run_id} ({joined.projection}): folded {len(joined.partitions)} partition(s), "
                      f"{joined.events_read:,} events, {joined.taken_over} taken over; {joined.next_step}")
        return
    with _progress(as_json) as progress:
        report = command.rebuild(
            settings, names=names, workers=workers, batch_size=batch_size,
            accept_changes=accept_changes, swap=not no_swap, restart=restart, progress=progress,
            share=share, lease_s=lease,
        )
    observe.report(report)
    if as_json:
        _emit_json(report)
    else:
        _print_rebuild(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_rebuild(report: Any) -> None:
    for note in report.notes:
        err.print(Text(note, style="yellow"))
    upto = f"up to position {report.until}" if report.until is not None else "(no events)"
    table = Table(title=f"Rebuild of epoch {report.epoch} {upto}")
    for col, justify in (("read model", "left"), ("version", "left"), ("rows", "right"), ("added", "right"),
                         ("removed", "right"), ("changed", "right"), ("status", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in report.projections:
        version = f"v{p.live_version}->v{p.version}" if p.live_version is not None else f"v{p.version} (new)"
        for t in p.tables:
            name = t.table if t.table == p.name else f"{p.name}: {t.table}"
            table.add_row(name, version, f"{t.rows:,}", f"{t.added:,}", f"{t.removed:,}", f"{t.changed:,}", p.status,
                          style="red" if p.status == "refused" else None)
    out.print(table)
    for p in report.projections:
        for t in p.tables:
            if t.sample and (t.removed or t.changed or t.live_rows):
                err.print(Text(f"{t.table}: differing keys include {', '.join(t.sample[:5])}", style="yellow"))
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items())
    processes = getattr(report, "processes", 0)
    how = f"with {processes} worker processes" if processes else "in one process"  # small inputs are not worth forking
    out.print(f"read {report.events_read:,} events {how} in {report.seconds:.2f} s "
              f"({report.events_per_second:,.0f} events/s; {timings})")
    for problem in report.problems:
        err.print(Text(problem, style="red"))
    if report.ok:
        out.print(Text("swapped in" if report.swapped else "verified; not swapped (--no-swap)", style="green"))
    else:
        out.print(Text("swap refused", style="red"))


@app.command()
@reports_errors
def status(config: ConfigOpt = None, store: StoreOpt = None, target: TargetOpt = None, as_json: JsonOpt = False) -> None:
    """Show the active epoch, the epochs, runs with their checkpoints, and quarantine counts."""
    report = command.status(_settings(config, store, target=target))
    if as_json:
        return _emit_json(report)
    out.print(f"store {report.store}: epoch {report.active_epoch} is active")
    epochs = Table(title="Epochs")
    for col in ("epoch", "status", "from", "events", "created"):
        epochs.add_column(col)
    for e in report.epochs:
        # a store eventmig never wrote to has no record of when its first epoch began
        epochs.add_row(str(e.epoch), e.status, str(e.source_epoch or "-"), f"{e.events:,}",
                       _when(e.created_at) if e.created_at else "-")
    out.print(epochs)
    if report.runs:
        runs = Table(title="Runs")
        for col in ("run", "kind", "epochs", "status", "checkpoint", "read", "written", "quarantined", "updated"):
            runs.add_column(col)
        for r in report.runs:
            q = f"{r.quarantined} ({r.unaccepted_quarantine} unaccepted)" if r.quarantined else "0"
            runs.add_row(r.id, r.kind, f"{r.source_epoch} -> {r.target_epoch}", r.status, str(r.checkpoint),
                         f"{r.read:,}", f"{r.written:,}", q, _when(r.updated_at))
        out.print(runs)
    _print_timeline(report.timeline)
    if report.pending_events:
        out.print(Text(f"{report.pending_events:,} source event(s) not migrated yet", style="yellow"))
    if report.read_models:
        models = Table(title="Read models")
        for col in ("projection", "live version", "live run", "epoch", "last rebuild", "rollback"):
            models.add_column(col)
        for m in report.read_models:
            models.add_row(m.projection, str(m.version) if m.version is not None else "-", m.live_run or "-",
                           (str(m.epoch) if m.epoch is not None else "-") + (" (stale)" if m.stale else ""),
                           f"{m.last_rebuild} ({m.last_rebuild_status})" if m.last_rebuild else "-",
                           "available" if m.rollback_available else "-", style="yellow" if m.stale else None)
        out.print(models)
        for m in report.read_models:
            if m.stale:
                err.print(Text(f"stale: {m.projection} {m.stale}", style="yellow"), soft_wrap=True)
    if report.followers:
        _print_followers(report.followers)


def _print_followers(followers: list[Any]) -> None:
    table = Table(title="Followers")
    for col in ("projection", "epoch", "checkpoint", "behind", "holder", "applied", "gaps"):
        table.add_column(col)
    for f in followers:
        behind = f"{f.lag_events:,} events, {f.lag_seconds:.1f} s" if f.lag_events is not None else "-"
        holder = f"{f.holder} (lease expired)" if f.lease_expired else f.holder or "-"
        table.add_row(f.projection, str(f.epoch) if f.epoch is not None else "-", str(f.checkpoint), behind, holder,
                      f"{f.events:,}", str(f.gaps), style="red" if f.error else None)
    out.print(table)
    for f in followers:
        if f.error:
            err.print(Text(f"stopped: {f.error}", style="red"), soft_wrap=True)


@app.command()
@reports_errors
def follow(
    names: Annotated[list[str] | None, typer.Argument(help="Projections to follow (default: all).", show_default=False)] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    read_models: ReadModelsOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Catch up with the head and exit (cron, tests).")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=MAX_FOLLOW_BATCH_SIZE, help=f"Events applied per transaction (1 to {MAX_FOLLOW_BATCH_SIZE:,}; default 10,000).", show_default=False)] = None,
    poll: Annotated[float, typer.Option("--poll", min=0.01, max=3600, help="Seconds between looks at the store when no append is announced.")] = DEFAULT_FOLLOW_POLL_S,
    gap_wait: Annotated[float, typer.Option("--gap-wait", min=0.01, max=3600, help="Seconds a hole in the positions may stay empty before it is treated as a rolled-back transaction.")] = DEFAULT_FOLLOW_GAP_WAIT_S,
    lease: Annotated[float, typer.Option("--lease", min=0.1, max=3600, help="Seconds a follower's lease lasts unless renewed; a standby takes over within about this long.")] = DEFAULT_FOLLOW_LEASE_S,
    as_json: JsonOpt = False,
) -> None:
    """Keep the live read models current from the active epoch: SIGTERM or Ctrl-C stop at a transaction's end."""
    stop = _StopOnSignal()
    started = time.monotonic()

    def status_line(s: Any) -> None:
        if not as_json:
            err.print(f"[{time.monotonic() - started:7.1f} s] applied {s.applied:,} ({s.events_per_second:,.0f} events/s), "
                      f"behind {s.lag_events:,} events / {s.lag_seconds:.1f} s; {s.segments} following, "
                      f"{s.standby} standby", soft_wrap=True)

    with stop:
        report = command.follow(
            _settings(config, store, read_models=read_models), names=names, once=once, batch_size=batch_size,
            poll_s=poll, gap_wait_s=gap_wait, lease_s=lease, stop=stop, on_status=status_line,
        )
    if as_json:
        _emit_json(report)
    else:
        _print_follow(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_follow(report: Any) -> None:
    table = Table(title=f"Follow ({report.stopped_by})")
    for col in ("projection", "status", "epoch", "checkpoint", "applied", "gaps"):
        table.add_column(col)
    for s in report.segments:
        table.add_row(s.projection, s.status, str(s.epoch) if s.epoch is not None else "-", str(s.checkpoint),
                      f"{s.applied:,}", str(s.gaps), style="red" if s.status == "stopped" else None)
    out.print(table)
    out.print(f"applied {report.applied:,} events in {report.seconds:.2f} s ({report.events_per_second:,.0f} events/s)")
    for s in report.segments:
        if s.error:
            err.print(Text(f"stopped: {s.error}", style="red"), soft_wrap=True)


class _StopOnSignal:
    """SIGTERM and a first Ctrl-C ask ``follow`` to stop at the end of its transaction (exit 0); a second
    Ctrl-C interrupts at once (130), as for every other command."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self) -> bool:
        return self.asked

    def _ask(self, signum: int, frame: Any) -> None:
        if self.asked and signum == signal.SIGINT:
            Interrupts.handler(signum, frame)
        self.asked = True

    def __enter__(self) -> _StopOnSignal:
        self._previous = {s: signal.signal(s, self._ask) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@app.command()
@reports_errors
def quarantine(
    config: ConfigOpt = None,
    store: StoreOpt = None,
    target: TargetOpt = None,
    accept: Annotated[bool, typer.Option("--accept", help="Accept quarantined events (all, or --id ones) as left behind.")] = False,
    ids: Annotated[list[int] | None, typer.Option("--id", min=1, max=MAX_ID, help="Quarantine entry id (repeatable).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the current migration's quarantined events, or accept them."""
    report = command.quarantine(_settings(config, store, target=target), accept=accept, ids=ids)
    if as_json:
        return _emit_json(report)
    if report.run_id is None:
        out.print("no migration of the active epoch")
        return
    table = Table(title=f"Quarantine of run {report.run_id}")
    for col in ("id", "stream", "version", "type", "accepted", "reason"):
        table.add_column(col)
    for q in report.entries:
        table.add_row(str(q.id), q.stream, str(q.version), q.type, "yes" if q.accepted else "no", q.reason)
    out.print(table)
    if accept:
        out.print(f"accepted {report.accepted_now} event(s)")


@app.command()
@_observed
@reports_errors
def demo(
    events: Annotated[int, typer.Option("--events", min=0, max=MAX_DEMO_EVENTS, help=f"How many legacy shop events to seed (at most {MAX_DEMO_EVENTS:,}).")] = 100_000,
    seed_only: Annotated[bool, typer.Option("--seed-only", help="Only seed the store.")] = False,
    store: Annotated[str | None, typer.Option("--store", help=f"Store URL (default {command.DEFAULT_DEMO_STORE}, recreated each run; another store must be empty).", show_default=False)] = None,
    config: ConfigOpt = None,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Seed a store with the reference shop's legacy events and run the whole pipeline on it."""
    with _progress(as_json) as progress:
        report = command.demo(_settings(config, None), events=events, seed_only=seed_only, store_url=store, progress=progress)
    observe.report(report)
    if as_json:
        _emit_json(report)
    else:
        table = Table(title=f"eventmig demo on {report.store}")
        for col, justify in (("step", "left"), ("events", "right"), ("seconds", "right"), ("events/s", "right"), ("result", "left")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for s in report.steps:
            table.add_row(s.step, "-" if s.events is None else f"{s.events:,}", f"{s.seconds:.2f}",
                          "-" if s.events_per_second is None else f"{s.events_per_second:,.0f}", s.result)
        out.print(table)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


# every command's --help ends with an example (eventmig/cli/about.py holds them)
for _info in app.registered_commands:
    _name = _info.name or (_info.callback.__name__ if _info.callback else "")
    if _name in about.EXAMPLES and _info.epilog is None:
        _info.epilog = about.epilog(about.EXAMPLES[_name])


def _print_timeline(entries: list[Any]) -> None:
    """The store's history, oldest first: what happened, to which run, how it ended, how long it took."""
    if not entries:
        return
    table = Table(title="Timeline")
    for col in ("when", "event", "what", "run", "status", "took", "detail"):
        table.add_column(col, justify="right" if col == "took" else "left", no_wrap=col != "detail")
    for e in entries:
        took = f"{e.until - e.at:,.1f} s" if e.until is not None else ""
        style = "red" if e.status in ("failed", "abandoned") else ("yellow" if "rollback" in e.kind else None)
        table.add_row(_when(e.at), e.kind, e.what, e.run_id or "", e.status or "", took, e.detail, style=style)
    out.print(table)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


#: click's base of usage errors; typer exposes it only through subclasses (recent typers vendor click)
_CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> None:
    """Run the command line; a usage error is one more error report, JSON with ``--json``.

    Click reports bad flags and values itself, before any command runs; in
    standalone mode it would print them as text even to a script that asked
    for JSON, so eventmig takes them over here.
    """
    args = sys.argv[1:] if argv is None else argv
    quiet_library_logs()
    Interrupts.install()
    try:
        code = app(args=args, prog_name="eventmig", standalone_mode=False)
    except KeyboardInterrupt:  # before or after the command itself, which reports its own
        _fail_interrupted(args)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `eventmig` alone: the help, as a usage error's answer
            exc.show()
            exit_with(int(ExitCode.USAGE))
        message = mask_url(" ".join(exc.format_message().split()))
        if "--json" in args:
            sys.stdout.write(msgspec.json.encode({"error": message, "exit_code": int(ExitCode.USAGE)}).decode() + "\n")
        else:
            context = getattr(exc, "ctx", None)
            hint = f" (see `{context.command_path} --help`)" if context is not None else ""
            err.print(Text(f"error: {message.rstrip('.')}{hint}", style="red"), soft_wrap=True)
        exit_with(int(ExitCode.USAGE))
    except typer.Abort:  # click's word for a Ctrl-C outside a command
        _fail_interrupted(args)
    if code == ExitCode.INTERRUPTED and not Interrupts.reported:
        _fail_interrupted(args)  # typer turns a Ctrl-C outside a command into 130, silently
    exit_with(code if isinstance(code, int) else 0)


def _fail_interrupted(args: list[str]) -> None:
    """A Ctrl-C that reached no command's own report: while flags were parsed, or as a command returned."""
    message = "interrupted" if Interrupts.started else "interrupted before the command started; nothing was done"
    try:
        _fail(message, ExitCode.INTERRUPTED, "--json" in args)
    except typer.Exit:
        exit_with(int(ExitCode.INTERRUPTED))


if __name__ == "__main__":
    main()
