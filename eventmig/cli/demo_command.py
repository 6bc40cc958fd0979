"""``eventmig demo``: the whole life of a schema change on a scratch store.

Its own module so that it registers last and the help lists it after the
commands a real project runs.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from eventmig.cli import observe
from eventmig import command
from eventmig.errors import ExitCode
from eventmig.cli.shared import (
    ConfigOpt,
    JsonOpt,
    LogFormatOpt,
    MAX_DEMO_EVENTS,
    MetricsPortOpt,
    app,
    emit_json,
    out,
    reports_errors,
    settings_of,
)
from eventmig.cli.progress_display import observing, progress_display


@app.command()
@observing
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
    with progress_display(as_json) as progress:
        report = command.demo(settings_of(config, None), events=events, seed_only=seed_only, store_url=store, progress=progress)
    observe.report(report)
    if as_json:
        emit_json(report)
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
