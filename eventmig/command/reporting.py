"""``eventmig status`` and ``eventmig quarantine``: what a store holds, as reports.

Both only read: epochs, runs, read models, followers and quarantined events,
gathered into msgspec records the CLI prints as text or JSON.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec

from eventmig.jobs import migrate as _migrate
from eventmig.config import Settings
from eventmig.errors import ConfigError
from eventmig.jobs.timeline import TimelineEntry
from eventmig.jobs.timeline import build as build_timeline
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.ports import EventStore
from eventmig.model.records import EpochInfo, Run, Switch
from eventmig.jobs.follow_segment import lag_of
from eventmig.backends.sql.following import FollowerDB, FollowerRow
from eventmig.command.opening import open_configured_store


# ---------------------------------------------------------------------- status
class FollowerStatus(msgspec.Struct):
    """A projection segment's follower: where it is, how far behind the active epoch, who holds it."""

    projection: str
    segment: int
    epoch: int | None
    checkpoint: int | None
    #: events of the active epoch after the checkpoint now (None: it follows another epoch)
    lag_events: int | None
    #: seconds since the oldest of them was recorded
    lag_seconds: float | None
    holder: str | None  # None, or a holder whose lease expired: nobody follows it now
    lease_expired: bool
    events: int
    gaps: int
    error: str | None


class EpochStatus(msgspec.Struct):
    epoch: int
    status: str
    source_epoch: int | None
    events: int
    created_at: float


class RunStatus(msgspec.Struct):
    id: str
    kind: str
    source_epoch: int
    target_epoch: int
    status: str
    checkpoint: int | None
    read: int
    written: int
    quarantined: int
    unaccepted_quarantine: int
    started_at: float
    updated_at: float


class ReadModelStatus(msgspec.Struct):
    projection: str
    version: int | None  # of the live tables; None if never swapped in
    live_run: str | None
    last_rebuild: str | None  # id and status of the latest rebuild run
    last_rebuild_status: str | None
    rollback_available: bool
    #: the epoch the live tables were built from (None: not built by eventmig, or never swapped in)
    epoch: int | None = None
    #: why the live tables are stale (built from an epoch that is not the active one), None if they are not
    stale: str | None = None


class StatusReport(msgspec.Struct):
    store: str
    active_epoch: int
    epochs: list[EpochStatus]
    runs: list[RunStatus]
    switches: list[Switch]
    pending_events: int | None  # source events after the current run's checkpoint
    read_models: list[ReadModelStatus] = []
    #: epochs, runs, switches, rollbacks, rebuilds and swaps, oldest first
    timeline: list[TimelineEntry] = []
    followers: list[FollowerStatus] = []


def status(settings: Settings) -> StatusReport:
    with open_configured_store(settings, read_only=True) as store:
        active = store.active_epoch()
        epochs = [_epoch_status(store, e) for e in store.epochs()]
        quarantine = Counter[str]()
        unaccepted = Counter[str]()
        for q in store.quarantine():
            quarantine[q.run_id] += 1
            unaccepted[q.run_id] += not q.accepted
        runs = [_run_status(r, quarantine[r.id], unaccepted[r.id]) for r in store.runs()]
        current = _migrate.current_run(store)
        pending = None
        if current is not None:
            pending = store.at_epoch(current.source_epoch).count_events(after=current.checkpoint)
        switches = store.switches()
        live, rebuilds, swaps, followers = _read_model_bookkeeping(settings)
        history = build_timeline(store.epochs(), store.runs(), switches, rebuilds, swaps)
        return StatusReport(store.url, active, epochs, runs, switches, pending,
                            _read_model_status(live, rebuilds, active, switches), history,
                            _follower_status(store, active, followers))


def _read_model_bookkeeping(settings: Settings) -> tuple[dict[str, Any], list[Any], list[Any], list[FollowerRow]]:
    """Live read models, rebuild runs, swaps and followers of the read-model database, read once through a
    read-only handle; all empty when it does not exist yet or eventmig never rebuilt into it."""
    try:
        db = ReadModelDB(settings.read_models_url, create=False, read_only=True)
    except ConfigError:  # no read-model database yet
        return {}, [], [], []
    with db:
        if not db.table_exists("eventmig_read_models"):  # one eventmig never rebuilt into
            return {}, [], [], []
        return db.live_models(), db.runs(), db.swaps(), FollowerDB(db).followers()


def _follower_status(store: EventStore, active: int, followers: list[FollowerRow]) -> list[FollowerStatus]:
    """Each follower's checkpoint, and its lag measured now against the active epoch's head."""
    source = store.at_epoch(active)
    now = time.time()  # leases are by the database's clock; a host's is close enough to say "expired"
    out = []
    for f in followers:
        lag: tuple[int | None, float | None] = (None, None)
        if f.epoch == active:
            lag = lag_of(source, f.checkpoint)
        out.append(FollowerStatus(
            f.projection, f.segment, f.epoch, f.checkpoint, lag[0], lag[1], f.holder,
            f.holder is not None and (f.lease_until or 0) < now, f.events, f.gaps, f.error,
        ))
    return out


def _read_model_status(
    live: dict[str, Any], runs: list[Any], active: int, switches: list[Switch]
) -> list[ReadModelStatus]:
    """Live read models and their latest rebuilds, and which are stale."""
    latest = {run.projection: run for run in runs}
    built = {r.id: r.epoch for r in runs}
    out = []
    for name in sorted(live.keys() | latest.keys()):
        epoch = built.get(live[name].run_id) if name in live else None
        out.append(ReadModelStatus(
            name,
            live[name].version if name in live else None,
            live[name].run_id if name in live else None,
            latest[name].id if name in latest else None,
            latest[name].status if name in latest else None,
            bool(name in live and live[name].previous_run_id),
            epoch,
            _staleness(epoch, active, switches),
        ))
    return out


def _staleness(epoch: int | None, active: int, switches: list[Switch]) -> str | None:
    """Why tables built from ``epoch`` are stale while ``active`` is the active epoch (None: they are not)."""
    if epoch is None or epoch == active:
        return None
    left = [s for s in switches if s.from_epoch == epoch and s.to_epoch == active]
    how = f" since the {left[-1].kind} from it" if left else ""
    return f"built from epoch {epoch}; epoch {active} is active{how}: `eventmig rebuild` rebuilds it"


def _epoch_status(store: EventStore, e: EpochInfo) -> EpochStatus:
    return EpochStatus(e.epoch, e.status, e.source_epoch, store.at_epoch(e.epoch).count_events(), e.created_at)


def _run_status(r: Run, quarantined: int, unaccepted: int) -> RunStatus:
    return RunStatus(
        r.id, r.kind, r.source_epoch, r.target_epoch, r.status, r.checkpoint, r.stats.get("read", 0),
        r.stats.get("written", 0), quarantined, unaccepted, r.started_at, r.updated_at,
    )


# ------------------------------------------------------------------ quarantine
class QuarantineEntry(msgspec.Struct):
    id: int | None
    run_id: str
    stream: str
    version: int
    event_id: str
    type: str
    reason: str
    accepted: bool
    data: str


class QuarantineReport(msgspec.Struct):
    run_id: str | None
    entries: list[QuarantineEntry]
    accepted_now: int = 0


def quarantine(settings: Settings, *, accept: bool = False, ids: list[int] | None = None) -> QuarantineReport:
    """List the current run's quarantined events; ``accept`` marks them knowingly left behind."""
    with open_configured_store(settings, read_only=not accept) as store:
        run = _migrate.current_run(store)
        if run is None:
            return QuarantineReport(None, [])
        if accept and ids:
            held = {q.id for q in store.quarantine(run.id)}
            unknown = sorted(set(ids) - held)
            if unknown:
                raise ConfigError(
                    f"no quarantined event with id {', '.join(map(str, unknown))} in run {run.id}; "
                    "`eventmig quarantine` lists them"
                )
        accepted_now = store.accept_quarantine(run.id, ids) if accept else 0
        entries = [
            QuarantineEntry(q.id, q.run_id, q.stream, q.version, q.event_id, q.type, q.reason, q.accepted,
                            q.data.decode("utf-8", "replace"))
            for q in store.quarantine(run.id)
        ]
        return QuarantineReport(run.id, entries, accepted_now)
