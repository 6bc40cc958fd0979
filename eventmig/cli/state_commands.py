"""The commands about a store's state and its live read models: status, follow and quarantine.

Status and quarantine only read and print; follow runs until stopped, so it
owns the signal handling that ends it cleanly between batches.
"""

from __future__ import annotations

import signal
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from eventmig import command
from eventmig.errors import ExitCode
from eventmig.cli.interrupts import Interrupts
from eventmig.config import DEFAULT_FOLLOW_GAP_WAIT_S, DEFAULT_FOLLOW_LEASE_S, DEFAULT_FOLLOW_POLL_S
from eventmig.config import MAX_FOLLOW_BATCH_SIZE
from eventmig.cli.shared import (
    ConfigOpt,
    JsonOpt,
    MAX_ID,
    ReadModelsOpt,
    StoreOpt,
    TargetOpt,
    app,
    emit_json,
    err,
    out,
    reports_errors,
    settings_of,
)
from eventmig.cli.rendering import local_time, print_follow, print_followers, print_timeline


@app.command()
@reports_errors
def status(config: ConfigOpt = None, store: StoreOpt = None, target: TargetOpt = None, as_json: JsonOpt = False) -> None:
    """Show the active epoch, the epochs, runs with their checkpoints, and quarantine counts."""
    report = command.status(settings_of(config, store, target=target))
    if as_json:
        return emit_json(report)
    out.print(f"store {report.store}: epoch {report.active_epoch} is active")
    epochs = Table(title="Epochs")
    for col in ("epoch", "status", "from", "events", "created"):
        epochs.add_column(col)
    for e in report.epochs:
        # a store eventmig never wrote to has no record of when its first epoch began
        epochs.add_row(str(e.epoch), e.status, str(e.source_epoch or "-"), f"{e.events:,}",
                       local_time(e.created_at) if e.created_at else "-")
    out.print(epochs)
    if report.runs:
        runs = Table(title="Runs")
        for col in ("run", "kind", "epochs", "status", "checkpoint", "read", "written", "quarantined", "updated"):
            runs.add_column(col)
        for r in report.runs:
            q = f"{r.quarantined} ({r.unaccepted_quarantine} unaccepted)" if r.quarantined else "0"
            runs.add_row(r.id, r.kind, f"{r.source_epoch} -> {r.target_epoch}", r.status, str(r.checkpoint),
                         f"{r.read:,}", f"{r.written:,}", q, local_time(r.updated_at))
        out.print(runs)
    print_timeline(report.timeline)
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
        print_followers(report.followers)


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
            settings_of(config, store, read_models=read_models), names=names, once=once, batch_size=batch_size,
            poll_s=poll, gap_wait_s=gap_wait, lease_s=lease, stop=stop, on_status=status_line,
        )
    if as_json:
        emit_json(report)
    else:
        print_follow(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


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
    report = command.quarantine(settings_of(config, store, target=target), accept=accept, ids=ids)
    if as_json:
        return emit_json(report)
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
