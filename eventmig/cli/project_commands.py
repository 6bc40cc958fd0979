"""The commands that look before anything changes: init, inspect, plan and check.

They scaffold a project, read an existing store and check the upcasters, so a
migration is planned and tested before it runs; none of them writes events.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from eventmig import command
from eventmig.errors import ConfigError, ExitCode
from eventmig.cli.shared import (
    ConfigOpt,
    JsonOpt,
    MAX_EXAMPLES,
    MAX_SAMPLE,
    StoreOpt,
    app,
    emit_json,
    err,
    out,
    reports_errors,
    settings_of,
)
from eventmig.cli.progress_display import progress_display
from eventmig.cli.rendering import print_check, print_recorded, print_unreadable, show_plan_graph, stored_rows


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
        return emit_json(report)
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
        return emit_json(report)
    table = Table(title=f"Tables of {report.store}")
    for col in ("table", "layout", "events", "type", "version", "count"):
        table.add_column(col, justify="right" if col in ("events", "count", "version") else "left")
    for t in report.tables:
        events = f"{t.events:,}" if t.events is not None else ""
        table.add_row(t.table, t.layout or "-", events, *(("", "", "") if not t.counts else (
            t.counts[0].type, shown_version(t.counts[0].version), f"{t.counts[0].events:,}")))
        for c in t.counts[1:]:
            table.add_row("", "", "", c.type, shown_version(c.version), f"{c.events:,}")
    out.print(table)
    for t in report.tables:
        if t.problem:
            err.print(Text(f"{t.table}: {t.problem}", style="yellow"), soft_wrap=True)
    if report.snippet:
        out.print("\nsettings for pyproject.toml (or `eventmig init --store URL` writes them):\n")
        out.print(report.snippet, markup=False, highlight=False, soft_wrap=True)
    else:
        out.print("no events table recognised; `eventmig init --store URL` sets eventmig's own store up here")


def shown_version(version: int | None) -> str:
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
        return show_plan_graph(settings_of(config, store), not no_store, fmt.value, as_json)
    with progress_display(as_json) as progress:
        report = command.plan(settings_of(config, store), scan_store=not no_store, progress=progress)
    if as_json:
        emit_json(report)
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
            stored_rows(stored, report.stored)
            out.print(stored)
        else:
            out.print(f"store not scanned: {report.store_skipped}", soft_wrap=True)
        if report.uncovered:
            err.print(Text("no path to a head: " + ", ".join(report.uncovered), style="red"))
        print_unreadable(report.stored, err)
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
    settings = settings_of(config, store)
    if record and accept:
        raise ConfigError("--record and --accept are two steps: record, review the cases, then accept them")
    if record:
        with progress_display(as_json) as progress:
            recorded = command.record_cases(settings, scan_store=not no_store, progress=progress)
        return emit_json(recorded) if as_json else print_recorded(recorded)
    if accept:
        accepted = command.accept_cases(settings)
        if not as_json:
            out.print(f"accepted {len(accepted.accepted)} case(s) into {accepted.cases_file}", soft_wrap=True)
    with progress_display(as_json) as progress:
        report = command.check(settings, examples=examples, sample=sample, scan_store=not no_store,
                               seed=seed, strict=not no_strict, progress=progress)
    if as_json:
        emit_json(report)
    else:
        print_check(report)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)
