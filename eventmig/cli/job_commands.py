"""The commands that run a job on a store: migrate, verify, switch, rollback and rebuild.

Each parses its flags, calls one function of :mod:`eventmig.command` under the
progress display and the metrics and logs asked for, and prints the report;
everything the job does lives in :mod:`eventmig.jobs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from eventmig.cli import observe
from eventmig import command
from eventmig.config import MAX_REBUILD_BATCH_SIZE
from eventmig.errors import ExitCode
from eventmig.cli.shared import (
    BatchOpt,
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    MAX_ATTEMPTS,
    MetricsPortOpt,
    ReadModelsOpt,
    RetryAttemptsOpt,
    RetryWaitOpt,
    StoreOpt,
    TargetOpt,
    WorkersOpt,
    app,
    emit_json,
    err,
    out,
    reports_errors,
    settings_of,
)
from eventmig.cli.progress_display import observing, progress_display
from eventmig.cli.rendering import print_rebuild, print_verify


@app.command()
@observing
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
    with progress_display(as_json) as progress:
        report = command.migrate(settings_of(config, store, batch_size, workers, retry_attempts, retry_max_wait, target=target),
                                 dry_run=dry_run, restart=restart,
                                 stream_map=stream_map, init=init, progress=progress)
    observe.report(report)
    if as_json:
        emit_json(report)
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


@app.command()
@observing
@reports_errors
def verify(
    config: ConfigOpt = None, store: StoreOpt = None, target: TargetOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    metrics_port: MetricsPortOpt = None, log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Compare digests of the upcast source with the migrated epoch, stream by stream."""
    with progress_display(as_json) as progress:
        report = command.verify(settings_of(config, store, batch_size, workers, target=target), progress=progress)
    observe.report(report)
    emit_json(report) if as_json else print_verify(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@app.command()
@observing
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
    with progress_display(as_json) as progress:
        report = command.switch(settings_of(config, store, batch_size, workers, retry_attempts, retry_max_wait, target=target),
                                catch_up=catch_up, attempts=attempts, progress=progress)
    observe.report(report)
    if as_json:
        return emit_json(report)
    if report.verification:
        print_verify(report.verification)
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
    with progress_display(True) as progress:  # notices only: a rollback is one transaction, no bars
        report = command.rollback(settings_of(config, store, retry_attempts=retry_attempts, retry_max_wait=retry_max_wait,
                                            read_models=read_models_url, target=target),
                                  force=force, read_models=read_models, names=names, progress=progress)
    if as_json:
        return emit_json(report)
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
@observing
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
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = observe.LogFormat.text,
    as_json: JsonOpt = False,
) -> None:
    """Replay the active epoch into shadow read-model tables in parallel, verify them, swap them in."""
    with progress_display(as_json) as progress:
        report = command.rebuild(
            settings_of(config, store, retry_attempts=retry_attempts, retry_max_wait=retry_max_wait,
                      read_models=read_models),
            names=names, workers=workers, batch_size=batch_size,
            accept_changes=accept_changes, swap=not no_swap, restart=restart, progress=progress,
        )
    observe.report(report)
    if as_json:
        emit_json(report)
    else:
        print_rebuild(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)
