"""Printing reports as tables and lines: what each command shows a person (``--json`` aside).

Kept apart from the commands so a command reads as flags, one library call
and one print, and the tables can change without touching what runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventmig import command
from eventmig.config import Settings
from eventmig.errors import ConfigError, ExitCode
from eventmig.model.graph import RENDERERS
from eventmig.cli.shared import err, out
from eventmig.cli.progress_display import progress_display


def stored_rows(table: Table, pairs: list[command.StoredPair]) -> None:
    """What the store holds of each (type, version); events whose version cannot be read, as such."""
    for p in pairs:
        style = "red" if p.treatment in ("no path", "unreadable") else None
        version = str(p.version) if p.version is not None else "unreadable"
        table.add_row(p.type, version, f"{p.events:,}", p.treatment, p.detail, style=style)


def print_unreadable(pairs: list[command.StoredPair], console: Console) -> None:
    unreadable: dict[str, int] = {}
    for p in pairs:
        if p.treatment == "unreadable":
            unreadable[p.type] = unreadable.get(p.type, 0) + p.events
    if unreadable:
        console.print(Text("schema version unreadable (migrate quarantines them): "
                           + ", ".join(f"{n:,} {t}" for t, n in unreadable.items()), style="red"), soft_wrap=True)


def print_recorded(report: command.RecordReport) -> None:
    for case in report.recorded:
        out.print(Text(f"recorded {case.name}", style="bold"), soft_wrap=True)
        out.print(f"  given   {case.type} v{case.version} {json_text(case.data)}", soft_wrap=True)
        for t, v, data in case.becomes:
            out.print(f"  becomes {t} v{v} {json_text(data)}", soft_wrap=True)
        if not case.becomes:
            out.print("  becomes nothing (dropped)")
    for item in report.skipped:
        out.print(Text(item, style="yellow"), soft_wrap=True)
    if report.recorded:
        out.print(f"{len(report.recorded)} case(s) from {report.source} events written to {report.pending}: "
                  "review them, then eventmig check --accept (or delete the file)", soft_wrap=True)
    else:
        out.print("nothing new to record", soft_wrap=True)


def json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def show_plan_graph(settings: Settings, scan_store: bool, fmt: str, as_json: bool) -> None:
    if as_json:
        raise ConfigError(f"--format {fmt} draws the graph and --json prints the plan's report: choose one")
    with progress_display(as_json) as progress:
        report, graph = command.plan_graph(settings, scan_store=scan_store, progress=progress)
    sys.stdout.write(RENDERERS[fmt](graph))
    if report.uncovered:
        err.print(Text("no path to a head: " + ", ".join(report.uncovered), style="red"))
    print_unreadable(report.stored, err)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def print_check(report: command.CheckReport) -> None:
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
        stored_rows(stored, s.stored)
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
        print_unreadable(s.stored, out)
    else:
        out.print(f"store not checked: {report.store_skipped}", soft_wrap=True)
    if report.pending_cases:
        out.print(Text(report.pending_cases, style="yellow"), soft_wrap=True)
    out.print(Text("check passed" if report.ok else "check FAILED", style="green" if report.ok else "red"))


def print_verify(report: Any) -> None:
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


def print_rebuild(report: Any) -> None:
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


def print_followers(followers: list[Any]) -> None:
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


def print_follow(report: Any) -> None:
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


def print_timeline(entries: list[Any]) -> None:
    """The store's history, oldest first: what happened, to which run, how it ended, how long it took."""
    if not entries:
        return
    table = Table(title="Timeline")
    for col in ("when", "event", "what", "run", "status", "took", "detail"):
        table.add_column(col, justify="right" if col == "took" else "left", no_wrap=col != "detail")
    for e in entries:
        took = f"{e.until - e.at:,.1f} s" if e.until is not None else ""
        style = "red" if e.status in ("failed", "abandoned") else ("yellow" if "rollback" in e.kind else None)
        table.add_row(local_time(e.at), e.kind, e.what, e.run_id or "", e.status or "", took, e.detail, style=style)
    out.print(table)


def local_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
