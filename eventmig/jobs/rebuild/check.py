"""Verification of shadow tables against the live ones before a swap, and what may explain a difference."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eventmig.jobs.appended import Touched
from eventmig.jobs.rebuild.plan import Job
from eventmig.jobs.rebuild.reports import ProjectionReport, TableReport
from eventmig.ports_readmodels import LiveModel, ReadModelSink, RebuildRun, RowDigest, TableDiff
from eventmig.projection.api import Projection

def verify_runs(
    db: ReadModelSink, job: Job, accept_changes: bool, written: dict[tuple[str, str], RowDigest],
    touched: Callable[[Projection, int | None, int], Touched],
) -> tuple[list[ProjectionReport], list[str]]:
    """Compare each run's shadow tables with the live ones. A shadow table every partition of which was
    written by this invocation has the digest of its rows already (:class:`~eventmig.ports_readmodels.RowDigest`): it is read
    back only if that digest is not exact, or differs from the live table's. ``touched`` gives the rows
    events appended since live tables were built changed (:func:`eventmig.jobs.appended.touched_rows`)."""
    reports: list[ProjectionReport] = []
    problems: list[str] = []
    with db.read() as conn:
        live = db.live_models(conn)
        built = {r.id: r for r in db.runs(conn=conn)}
        for run in job.runs:
            projection = job.projections[run.projection]
            model: LiveModel | None = live.get(projection.name)
            tables, any_live = _compared_tables(db, conn, projection, run, written)
            live_version = model.version if model is not None else None
            report = ProjectionReport(
                name=projection.name, version=projection.version, live_version=live_version, run_id=run.id,
                partitions=run.partitions, resumed=job.resumed.get(projection.name, False),
                keys=int(run.stats.get("keys", 0)), status="verified", tables=tables,
            )
            if any_live and any(t.added or t.removed or t.changed for t in tables):
                earlier = built.get(model.run_id) if model else None
                _judge_difference(db, job, report, projection, run, earlier, accept_changes, touched)
            if report.problems:
                report.status = "refused"
                problems.extend(report.problems)
            reports.append(report)
    _mark_verified(db, job)
    return reports, problems


def _compared_tables(
    db: ReadModelSink, conn: Any, projection: Projection, run: RebuildRun, written: dict[tuple[str, str], RowDigest]
) -> tuple[list[TableReport], bool]:
    """Each shadow table of ``run`` compared with its live table, and whether any live table exists."""
    tables: list[TableReport] = []
    any_live = False
    for table in projection.tables:
        live_name = table.name if db.table_exists(table.name, conn) else None
        any_live = any_live or live_name is not None
        digest = written.get((run.id, table.name))
        whole = digest is not None and sorted(digest.partitions) == list(range(run.partitions))
        diff = db.compare(conn, table, live_name, run.tables[table.name], written=digest if whole else None)
        tables.append(_table_report(diff))
    return tables, any_live


def _judge_difference(
    db: ReadModelSink, job: Job, report: ProjectionReport, projection: Projection, run: RebuildRun,
    earlier: RebuildRun | None, accept_changes: bool, touched: Callable[[Projection, int | None, int], Touched],
) -> None:
    """Rows differ from the live tables: a note when the difference is explained, else a problem of ``report``."""
    tables = report.tables
    live_version = report.live_version
    summary = ", ".join(
        f"{t.table}: {t.added} added, {t.removed} removed, {t.changed} changed" for t in tables
        if t.added or t.removed or t.changed
    )
    stale = _other_epoch(earlier, run)
    appended = _appended_since(earlier, run)
    if live_version == projection.version and stale is not None:
        job.notes.append(f"{projection.name} v{projection.version}: {summary}, {stale}")
    elif live_version == projection.version and earlier is not None and appended is not None:
        unexplained = _unexplained(db, projection, run, tables, touched(projection, earlier.until, run.until))
        if unexplained is None:
            job.notes.append(f"{projection.name} v{projection.version}: {summary}, {appended}")
        else:
            report.problems.append(
                f"{projection.name} v{projection.version} rows differ from the live tables ({summary}) "
                f"beyond what {unexplained} appended after position {earlier.until} explain: the live "
                "tables were changed outside eventmig, or the projection's code gives other rows for "
                "the same events"
            )
    elif live_version == projection.version:
        report.problems.append(
            f"{projection.name} v{projection.version} rows differ from the live tables although its version "
            f"did not change ({summary}): bump the projection's version if the change is intended"
        )
    elif not accept_changes:
        was = f"v{live_version}" if live_version is not None else "unversioned tables"
        report.problems.append(
            f"{projection.name} v{projection.version} (live: {was}) changes rows ({summary}): "
            "pass --accept-changes to swap them in"
        )


def _mark_verified(db: ReadModelSink, job: Job) -> None:
    """Record that the runs folded by this invocation passed verification (or were compared, at least)."""
    with db.write() as conn:
        for run in job.runs:
            if run.status == "folded":
                run.status = "verified"
                run.updated_at = time.time()
                db.save_run(run, conn)


def _appended_since(live: RebuildRun | None, run: RebuildRun) -> str | None:
    """Why rows of an unchanged projection may differ from its live tables: events appended since they were built.

    Only when the live tables are a rebuild of the same code over the same
    epoch up to an earlier position: then the differences are the new
    events' doing, not a change of the code, and refusing would leave no way
    to bring the tables up to date short of a version bump. Anything else
    (other code, another epoch) is None: a difference to refuse. Even then
    only the rows those events touch may differ (:func:`_unexplained`): a row
    edited by hand is refused however many events were appended.
    """
    if live is None or live.fingerprint != run.fingerprint or live.epoch != run.epoch or run.until is None:
        return None
    if live.until is not None and live.until >= run.until:
        return None
    since = f"after position {live.until}" if live.until is not None else "since"
    return f"from events appended {since} (the live tables were built by run {live.id} of the same code)"


def _other_epoch(live: RebuildRun | None, run: RebuildRun) -> str | None:
    """Why rows of an unchanged projection may differ from its live tables: those are stale, built from another
    epoch than the active one (before a switch, or from an epoch a rollback left). A migration renumbers
    streams and rewrites payloads, so the rows may differ; the live ones match no active epoch, so there is
    nothing to protect. None when the live tables are of this epoch (or eventmig did not build them)."""
    if live is None or live.epoch == run.epoch:
        return None
    return f"replacing stale tables built from epoch {live.epoch} (epoch {run.epoch} is active)"


def _unexplained(
    db: ReadModelSink, projection: Projection, run: RebuildRun, tables: list[TableReport], change: Touched
) -> str | None:
    """None if the live tables are the rebuilt ones with the touched keys' rows as they were before the
    appended events; otherwise what those events were, for the refusal. Each live table's digest and count
    must be the shadow's, less the touched rows of now, plus those of then. Those rows are written into
    scratch tables and read back, so that their digests are what the database gives back (a float column,
    a date), and dropped again."""
    with db.write() as conn:
        for table, report in zip(projection.tables, tables):
            # ``<table>__was`` or ``__now``: shorter than a shadow's ``__<run id>``, so within the checked names
            then = db.scratch_digest(conn, table, "was", change.then[table.name])
            now = db.scratch_digest(conn, table, "now", change.now[table.name])
            expected = db.replace_in_digest(report.digest, now[0], then[0])
            if (report.live_digest, report.live_rows) != (expected, report.rows - now[1] + then[1]):
                return f"the {change.events} event(s) (touching {change.keys} key(s))"
    return None


def _table_report(diff: TableDiff) -> TableReport:
    return TableReport(
        str(diff.table), diff.rows, diff.live_rows, diff.digest, diff.live_digest, diff.added, diff.removed, diff.changed,
        list(diff.sample),
    )
