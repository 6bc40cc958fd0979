"""Switch and rollback: make a verified epoch active, atomically, and undo it.

``switch`` verifies first and refuses on any difference. The flip itself is
one store transaction that also re-checks that neither epoch's head moved
since verification: an event appended to the old epoch in the meantime
would otherwise be left behind, and the switch refuses instead.

``rollback`` makes the previous epoch active again, and refuses if
applications have appended to the current one since the switch (those
events exist only there) unless forced; forced, they stay in the retired
epoch, not lost but no longer active.

Read models have the same pair: :func:`swap_read_models` makes a rebuild's
verified shadow tables live, :func:`rollback_read_models` puts the previous
tables back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from eventmig.model.checksums import compare
from eventmig.errors import ConfigError, EventmigError, StoreError, VerificationFailed
from eventmig.config import DEFAULT_BATCH_SIZE, REBUILD_LOCK
from eventmig.config import MIGRATE_LOCK as LOCK
from eventmig.jobs.migrate import _migrate, _number, current_run
from eventmig.progress import SILENT, Progress, announce_run
from eventmig.retry import RetryPolicy, held, with_retries
from eventmig.ports import EventStore
from eventmig.ports_readmodels import UNMANAGED_RUN, LiveModel, ReadModelSink, RebuildRun, open_read_models
from eventmig.model.records import Run, Switch
from eventmig.model.transform import BatchCounts
from eventmig.model.chains import CompiledRegistry
from eventmig.jobs.verify import Verification, VerifyReport

#: at most this many events are migrated inside the switch transaction, while writers wait
LOCKED_CATCH_UP = 2000

if TYPE_CHECKING:
    from eventmig.projection.api import Projection


class ReadModelSwap(msgspec.Struct):
    projection: str
    from_version: int | None  # None: the tables were not built by eventmig, or there were none
    to_version: int | None  # None: back to tables eventmig did not build
    run_id: str
    tables: list[str]


class SwitchReport(msgspec.Struct):
    kind: str
    from_epoch: int
    to_epoch: int
    at: float
    verification: VerifyReport | None = None
    hidden_events: int = 0
    #: events appended to the old epoch during verification, migrated and verified by the switch
    caught_up: int = 0
    attempts: int = 1
    #: a rollback's read models built from the epoch it left, put back to their tables built from the one it restored
    read_models: list[ReadModelSwap] = []
    #: read models built from the epoch a rollback left, with no tables of the restored one to go back to
    stale_read_models: list[str] = []
    notes: list[str] = []


def switch(
    store: EventStore,
    compiled: CompiledRegistry,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    catch_up: bool = True,
    attempts: int = 5,
    retry: RetryPolicy = RetryPolicy(),
    progress: Progress = SILENT,
) -> SwitchReport:
    """Verify the current migration and, only if it passes, make its epoch active.

    Applications may keep appending to the old epoch meanwhile. With
    ``catch_up`` (the default) the switch first migrates and verifies what
    arrived since the migration, outside any lock, up to ``attempts`` times
    until little is left; then, in the flip's transaction, with writers held
    off, it migrates the last few events, reads them back, verifies them,
    and flips. Nothing appended before the flip is left behind, and what is
    appended after it lands in the new epoch. Without ``catch_up`` any event
    appended since the migration makes the switch refuse.

    A lost connection is retried as ``retry`` says: the verification and the
    catch-ups start again from the last committed checkpoint, and a flip that
    committed although its connection broke is recognised, not made twice.
    """
    retried = {"job": "switch", "store_url": store.url, "resume": "eventmig switch", "policy": retry, "progress": progress}
    with held(lambda: store.lock(LOCK), **retried):  # catch-ups run under this lock, hence _migrate, not migrate()
        seen = _History(store)

        def attempt(n: int) -> SwitchReport:
            done = seen.flipped("switch") if n > 1 else None
            if done is not None:
                return SwitchReport("switch", done.from_epoch, done.to_epoch, done.at)
            return _switch(store, compiled, seen, batch_size, workers, catch_up, attempts, progress)

        return with_retries(attempt, **retried)


class _History:
    """The switches a retried switch or rollback knew of before it tried: a flip that committed although its
    connection broke shows as a new one, and must not be made twice."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.known: int | None = None
        self.to_epoch: int | None = None

    def note(self, to_epoch: int) -> None:
        """Before the flip: remember the history so far and where the flip goes."""
        if self.known is None:
            self.known = len(self.store.switches())
        self.to_epoch = to_epoch

    def flipped(self, kind: str) -> Switch | None:
        """The flip of ``kind`` to the noted epoch that committed since :meth:`note`, if any."""
        if self.known is None or self.to_epoch is None:
            return None
        for flip in self.store.switches()[self.known:]:
            if flip.kind == kind and flip.to_epoch == self.to_epoch:
                return flip
        return None


def _switch(
    store: EventStore, compiled: CompiledRegistry, seen: _History, batch_size: int, workers: int | None,
    catch_up: bool, attempts: int, progress: Progress,
) -> SwitchReport:
    """One try of :func:`switch`, under its lock."""
    run = current_run(store)
    if run is None:
        raise ConfigError("nothing to switch to: the active epoch has no migration; run `eventmig migrate` first")
    seen.note(run.target_epoch)
    source, target = store.at_epoch(run.source_epoch), store.at_epoch(run.target_epoch)
    announce_run(progress, run.id, f"switch to epoch {run.target_epoch}")
    verification = Verification(store, compiled, run, batch_size=batch_size, workers=workers)
    verification.extend(run.checkpoint, target.head_position(), progress=progress)
    report = verification.report()
    if not report.ok:
        raise VerificationFailed("switch refused, verification failed: " + "; ".join(report.problems))
    if report.source_advanced_by and not catch_up:
        raise VerificationFailed(
            f"switch refused: {report.source_advanced_by} event(s) were appended to epoch {run.source_epoch} "
            "after the migration; run `eventmig migrate` to catch up, then switch"
        )
    caught_up = 0
    stream_map = dict(run.options.get("stream_map") or {})
    for _ in range(max(attempts, 1)):
        # shrink what the locked part has to do, so writers wait for as short a time as possible
        if source.count_events(after=run.checkpoint) <= LOCKED_CATCH_UP:
            break
        caught_up += _migrate(store, compiled, batch_size, stream_map, False, workers or 1, progress).events_read
        run = verification.run = current_run(store)  # type: ignore[assignment]
        verification.extend(run.checkpoint, target.head_position())
        report = verification.report()
        if not report.ok:
            raise VerificationFailed("switch refused, verification failed: " + "; ".join(report.problems))
    locked = _LockedCatchUp(verification, target.stream_versions(), target.capabilities.first_stream_version) if catch_up else None
    flip = store.switch_epoch(
        run.target_epoch,
        kind="switch",
        expect_heads={run.source_epoch: run.checkpoint, run.target_epoch: verification.target_until},
        catch_up=locked,
    )
    if locked is not None:
        caught_up += locked.caught_up
    return SwitchReport("switch", flip.from_epoch, flip.to_epoch, flip.at, verification=verification.report(),
                        caught_up=caught_up)


class _LockedCatchUp:
    """Migrates and verifies, inside the switch transaction, the events that arrived last."""

    def __init__(self, verification: Verification, last_versions: dict[str, int], first_version: int) -> None:
        self.verification = verification
        self.run = verification.run
        self.source_epoch = self.run.source_epoch
        self.last_versions, self.first_version = last_versions, first_version
        self.caught_up = 0

    def prepare(self, rows: list[tuple[Any, ...]]) -> tuple[list[Any], Run]:
        transformer = self.verification.transformer
        batch = transformer.prepare(rows)
        if batch.collisions:
            raise ConfigError(
                "switch refused, events appended during the switch collide: "
                + "; ".join(transformer.merge_problems(batch.collisions, self.source_epoch))
                + "; add them to the stream map and migrate with --restart"
            )
        if batch.failures:
            raise VerificationFailed(
                f"switch refused: {len(batch.failures)} event(s) appended during the switch failed to upcast "
                f"({batch.failures[0][1]}); run `eventmig migrate` to quarantine them, then decide"
            )
        totals = BatchCounts.from_json(self.run.stats)
        totals.merge(batch.counts)
        self.run.stats = totals.as_json()
        self.run.checkpoint = rows[-1][2] if rows else self.run.checkpoint
        self.run.updated_at = time.time()
        self.caught_up = len(rows)
        return _number(batch.outputs, self.last_versions, self.first_version), self.run

    def check(self, source_rows: list[tuple[Any, ...]], written: list[tuple[Any, ...]]) -> None:
        """Extend the verification with the rows on both sides; pure computation, no other connection."""
        v = self.verification
        v.add(source_rows, written)
        comparison = compare(v.expected, v.actual)
        if not comparison.ok:
            raise VerificationFailed(
                "switch refused: events caught up during the switch do not verify: "
                + ", ".join(comparison.differing_streams[:5])
            )


def rollback(
    store: EventStore, *, force: bool = False, read_models: str | ReadModelSink | None = None,
    retry: RetryPolicy = RetryPolicy(), progress: Progress = SILENT,
) -> SwitchReport:
    """Make the epoch that was active before the last switch active again.

    Rollbacks undo switches, latest first, and never a rollback: run twice,
    the second goes one switch further back (or refuses), rather than
    putting back, unverified, the epoch the first one left.

    ``read_models`` (a read-model database, URL or handle): then the read
    models and snapshots built from the epoch left behind go back to the
    tables their last swap replaced, where those were built from the epoch
    restored (see :func:`restore_read_models`); the others are named stale.
    A SQLite read-model database that does not exist has none.

    A lost connection is retried as ``retry`` says; a rollback that committed
    although its connection broke is recognised, never made twice.
    """
    retried = {"job": "rollback", "store_url": store.url, "resume": "eventmig rollback", "policy": retry,
               "progress": progress}
    with held(lambda: store.lock(LOCK), **retried):
        seen = _History(store)

        def attempt(n: int) -> SwitchReport:
            done = seen.flipped("rollback") if n > 1 else None
            if done is not None:
                return SwitchReport("rollback", done.from_epoch, done.to_epoch, done.at)
            return _rollback(store, seen, force)

        report = with_retries(attempt, **retried)
    if read_models is not None:
        _read_models_after_rollback(report, read_models)
    return report


def _rollback(store: EventStore, seen: _History, force: bool) -> SwitchReport:
    """One try of :func:`rollback`, under its lock."""
    active = store.active_epoch()
    history = store.switches()
    last = switch_to_undo(history, active)
    if last is None:
        raise ConfigError(f"nothing to roll back: {_why_nothing_to_undo(history, active)}")
    current = store.at_epoch(active)
    head = current.head_position()
    appended = current.count_events(after=last.to_head) if last.to_head is not None else current.count_events()
    if appended and not force:
        raise StoreError(
            f"rollback refused: {appended} event(s) were appended to epoch {active} since the switch and "
            f"exist only there; pass --force to roll back anyway (they stay in epoch {active}, retired)"
        )
    seen.note(last.from_epoch)
    flip = store.switch_epoch(last.from_epoch, kind="rollback", expect_heads={active: head})
    return SwitchReport("rollback", flip.from_epoch, flip.to_epoch, flip.at, hidden_events=appended)


def _read_models_after_rollback(report: SwitchReport, read_models: str | ReadModelSink) -> None:
    """The read-model half of an epoch rollback, in a database of its own: the epochs have flipped already,
    so a failure here is a note (the read models are then stale, which ``status`` and ``rebuild`` know)."""
    try:
        db = open_read_models(read_models, create=False) if isinstance(read_models, str) else read_models
    except ConfigError:  # no read-model database (a SQLite file never created): no read models
        return
    try:
        report.read_models, report.stale_read_models = restore_read_models(db, report.to_epoch, report.from_epoch)
    except EventmigError as exc:
        report.notes.append(
            f"read models built from epoch {report.from_epoch} were not put back ({exc}); they are stale: "
            "`eventmig status` names them, `eventmig rebuild` rebuilds them"
        )
    finally:
        if db is not read_models:
            db.close()


def switch_to_undo(history: Sequence[Switch], active: int) -> Switch | None:
    """The switch a rollback undoes: the latest one no rollback has undone, if it made ``active`` active.

    Switches stack up and each rollback takes the top one off, so switches
    1 -> 2 -> 3 are undone 3 -> 2, then 2 -> 1.
    """
    in_effect: list[Switch] = []
    for flip in history:
        if flip.kind == "switch":
            in_effect.append(flip)
        elif in_effect:
            in_effect.pop()
    return in_effect[-1] if in_effect and in_effect[-1].to_epoch == active else None


def _why_nothing_to_undo(history: Sequence[Switch], active: int) -> str:
    undone = [f for f in history if f.kind == "rollback" and f.to_epoch == active]
    if undone:
        return (f"epoch {active} is active again since the rollback from epoch {undone[-1].from_epoch}; "
                f"`eventmig switch` verifies and switches forward again")
    return f"epoch {active} was not made active by a switch"


# ------------------------------------------------------------------ read models
# A rebuild's shadow tables replace the live ones in one transaction of
# renames (SQLite and PostgreSQL both have transactional DDL); the live
# tables become ``<table>__prev``, so rolling back is the same swap again.
# Live tables eventmig did not build (the application's own, before the
# first rebuild) are kept the same way, recorded as UNMANAGED_RUN.


class ReadModelRollbackReport(msgspec.Struct):
    kind: str  # "rollback"
    read_models: str
    swaps: list[ReadModelSwap]
    at: float
    #: projections of the last swap left as they are: their first swap replaced no table
    notes: list[str] = []


def swap_read_models(db: ReadModelSink, runs: Sequence[RebuildRun], projections: Mapping[str, Projection]) -> list[ReadModelSwap]:
    """Make verified shadow tables live, all in one transaction; the replaced tables are kept as ``__prev``."""
    now = time.time()
    done: list[ReadModelSwap] = []
    with db.write() as conn:
        live = db.live_models(conn)
        for run in runs:
            model = live.get(run.projection)
            if model is None and any(db.table_exists(t, conn) for t in run.tables):
                model = _unmanaged(run.projection, list(run.tables), now)  # the application's own tables
            for table, shadow in run.tables.items():
                if not db.table_exists(shadow, conn):
                    raise StoreError(f"shadow table {shadow} of run {run.id} is missing; rebuild {run.projection} again")
                db.swap_in(conn, table, shadow)
            db.drop_tables(conn, [db.state_table(run.id, p) for p in range(run.partitions)])
            db.record_live(
                conn, run.projection, version=run.version, run_id=run.id, tables=list(run.tables),
                previous=model, at=now, kind="swap",
            )
            run.status = "swapped"
            run.updated_at = now
            db.save_run(run, conn)
            done.append(ReadModelSwap(run.projection, model.version if model else None, run.version, run.id, list(run.tables)))
    return done


def rollback_read_models(db: ReadModelSink, names: Sequence[str] | None = None) -> ReadModelRollbackReport:
    """Put back the read-model tables the last swap replaced (or, given names, those projections' last swap).

    The last swap is the last rebuild's swap, or the last rollback: the
    tables rolled back from become the ``__prev`` ones, so a second
    rollback undoes the first. A projection whose first swap replaced no
    table has nothing to go back to and is left as it is.
    """
    now = time.time()
    swaps: list[ReadModelSwap] = []
    notes: list[str] = []
    with db.lock(REBUILD_LOCK), db.write() as conn:
        live = db.live_models(conn)
        if names:
            unknown = [n for n in names if n not in live]
            if unknown:
                raise ConfigError(f"no swapped read models named {', '.join(unknown)} in {db.url}")
            chosen = [live[n] for n in dict.fromkeys(names)]
        else:
            last = [n for n in dict.fromkeys(db.last_swapped(conn)) if n in live]
            if not last:
                raise ConfigError(f"nothing to roll back: no read-model tables were ever swapped into {db.url}")
            chosen = [live[n] for n in last if live[n].previous_run_id is not None]
            notes = [f"{n}: its first swap replaced no tables; left as it is" for n in last
                     if live[n].previous_run_id is None]
            if not chosen:
                raise ConfigError(
                    f"nothing to roll back: the last swap in {db.url} ({', '.join(last)}) replaced no tables"
                )
        for model in chosen:
            unmanaged = model.previous_run_id == UNMANAGED_RUN
            present = {t for t in model.tables if db.table_exists(db.previous_name(t), conn)}
            # the application's own tables may have been fewer than the projection's; not so eventmig's
            missing = [t for t in model.tables if t not in present]
            if model.previous_run_id is None:
                raise ConfigError(f"nothing to roll back for {model.projection}: its first swap replaced no tables")
            if not present or (missing and not unmanaged):
                raise ConfigError(
                    f"nothing to roll back for {model.projection}: its previous tables "
                    f"({', '.join(db.previous_name(t) for t in missing) or 'none recorded'}) do not exist"
                )
            swaps.append(_put_back(db, conn, model, present, now))
    return ReadModelRollbackReport("rollback", db.url, swaps, now, notes)


def restore_read_models(db: ReadModelSink, epoch: int, left: int) -> tuple[list[ReadModelSwap], list[str]]:
    """After an epoch rollback from ``left`` to ``epoch``: the read models built from ``left`` go back to their
    previous tables, in one transaction, where those were built from ``epoch``; the others are returned by name,
    stale until rebuilt (a rebuild replaces a stale model's rows without --accept-changes)."""

    now = time.time()
    back: list[ReadModelSwap] = []
    stale: list[str] = []
    with db.lock(REBUILD_LOCK), db.write() as conn:
        runs = {r.id: r for r in db.runs(conn=conn)}
        for name, model in sorted(db.live_models(conn).items()):
            built = runs.get(model.run_id)
            if built is None or built.epoch != left:
                continue  # tables eventmig did not build, or built from another epoch than the one left
            previous = runs.get(model.previous_run_id or "")
            present = {t for t in model.tables if db.table_exists(db.previous_name(t), conn)}
            if previous is not None and previous.epoch == epoch and present == set(model.tables):
                back.append(_put_back(db, conn, model, present, now))
            else:
                stale.append(name)
    return back, stale


def _put_back(db: ReadModelSink, conn: Any, model: LiveModel, present: set[str], at: float) -> ReadModelSwap:
    """Exchange a projection's live tables with its ``__prev`` ones (either may be absent), and record it."""
    for table in model.tables:
        db.exchange_previous(conn, table, has_previous=table in present)
    db.record_live(
        conn, model.projection, version=model.previous_version, run_id=model.previous_run_id,  # type: ignore[arg-type]
        tables=model.tables, previous=model, at=at, kind="rollback",
    )
    return ReadModelSwap(model.projection, model.version, model.previous_version, model.previous_run_id or "", model.tables)


def _unmanaged(projection: str, tables: list[str], at: float) -> LiveModel:
    """The record of live tables eventmig did not build, so that a rollback can put them back."""
    return LiveModel(projection, None, UNMANAGED_RUN, tables, None, None, at)
