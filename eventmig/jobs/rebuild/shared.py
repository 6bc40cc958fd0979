"""One rebuild run shared by processes on any number of hosts: partitions claimed through leases.

``rebuild(share=True)`` starts (or resumes) its runs as usual, then folds
their partitions one claim at a time instead of handing them all to its own
workers; ``rebuild --join RUN`` (:func:`join_rebuild`) on another host
claims partitions of the same run. Both use the same worker code
(:func:`~eventmig.jobs.rebuild.workers.fold_units`), each on a handle whose
every commit is fenced by its claim (:class:`~eventmig.ports_readmodels.PartitionClaims`),
with a heartbeat renewing the claim meanwhile. A process that dies stops
renewing; once its claim expires another process takes the partition over
and resumes it from its last committed checkpoint. Each process goes on
until every partition is done; the process that started the run then
verifies and swaps, as a one-process rebuild does. The shadow rows are the
same whoever folded which partition: the digests equal a one-process run's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import msgspec

from eventmig.config import DEFAULT_REBUILD_CLAIM_LEASE_S as DEFAULT_LEASE_S
from eventmig.config import DEFAULT_REBUILD_BATCH_SIZE
from eventmig.errors import ConfigError, LeaseLost
from eventmig.jobs.rebuild.plan import Job
from eventmig.jobs.rebuild.units import Unit
from eventmig.jobs.rebuild.workers import fold_units
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.ports import EventStore
from eventmig.ports_readmodels import (
    PartitionClaim,
    PartitionClaims,
    ReadModelSink,
    RebuildRun,
    RowDigest,
    open_claims,
    open_read_models,
)
from eventmig.projection.api import Projection
from eventmig.projection.binding import Binding

__all__ = ["DEFAULT_LEASE_S", "JoinReport", "SharedFold", "fold_shared", "join_rebuild", "new_holder", "store_url"]


class SharedFold(msgspec.Struct):
    """What one process folded of shared runs."""

    events_read: int = 0
    partitions: list[str] = []  # "<run id>/<partition>" folded (or finished) here
    taken_over: int = 0  # of those, partitions another process had claimed before (a dead or stalled one)
    lost: int = 0  # claims lost to another process while folding (this one stalled past its lease)


class JoinReport(msgspec.Struct):
    ok: bool
    run_id: str
    projection: str
    read_models: str
    holder: str
    events_read: int
    partitions: list[str]
    taken_over: int
    seconds: float
    next_step: str


def fold_shared(
    source: EventStore, db: ReadModelSink, binding: Binding, job: Job, runs: Sequence[RebuildRun],
    claims: PartitionClaims, holder: str, *, lease_s: float = DEFAULT_LEASE_S,
    batch_size: int = DEFAULT_REBUILD_BATCH_SIZE, stop: Callable[[], bool] = lambda: False,
    written: dict[tuple[str, str], RowDigest] | None = None,
) -> SharedFold:
    """Claim, fold and release the runs' partitions one at a time until all are done (or ``stop()``).

    A partition another live process holds is waited for: if that process
    dies, its claim expires and this one takes the partition over.
    """
    out = SharedFold()
    pending = list(runs)
    while pending and not stop():
        folded_any = False
        status = {r.id: r.status for r in db.runs()}
        # a run folded, swapped or abandoned (a --restart elsewhere) has nothing left to fold
        pending = [r for r in pending if status.get(r.id) == "running"]
        for run in list(pending):
            claim = claims.claim(run.id, holder, lease_s)
            if claim is None:
                if all(p.status == "done" for p in db.partitions(run.id)):
                    pending.remove(run)
                continue
            folded_any = True
            _fold_claimed(source, db, binding, job, run, claims, claim, lease_s, batch_size, out, written)
        if pending and not folded_any:
            time.sleep(min(1.0, lease_s / 3))  # the rest is held by live processes: look again for expired claims
    return out


def _fold_claimed(
    source: EventStore, db: ReadModelSink, binding: Binding, job: Job, run: RebuildRun, claims: PartitionClaims,
    claim: PartitionClaim, lease_s: float, batch_size: int, out: SharedFold,
    written: dict[tuple[str, str], RowDigest] | None,
) -> None:
    """Fold one claimed partition from its checkpoint, on a handle fenced by the claim; release it after."""
    part = next(p for p in db.partitions(run.id) if p.partition == claim.partition)
    if claim.generation > 1 and part.status != "done":
        out.taken_over += 1
    handle = claims.fenced(db, claim)
    beat = _Heartbeat(claims, claim, lease_s)
    try:
        unit = Unit(run, part, job.projections[run.projection], handle.state_table(run.id, part.partition))
        read, rows = fold_units(source, handle, binding, job, [unit], batch_size, lambda _k, _n: None)
    except LeaseLost:
        out.lost += 1  # another process resumes the partition from the last checkpoint committed here
        return
    finally:
        beat.stop()
        handle.close()
    claims.release(claim)
    out.events_read += read
    out.partitions.append(f"{run.id}/{claim.partition}")
    if written is not None:
        for key, digest in rows.items():
            written.setdefault(key, db.new_digest()).merge(digest)


class _Heartbeat:
    """Renews a claim every third of its lease while the partition is folded."""

    def __init__(self, claims: PartitionClaims, claim: PartitionClaim, lease_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(claims, claim, lease_s), daemon=True,
                                        name=f"eventmig-claim-{claim.run_id}-{claim.partition}")
        self._thread.start()

    def _run(self, claims: PartitionClaims, claim: PartitionClaim, lease_s: float) -> None:
        while not self._stop.wait(lease_s / 3):
            try:
                if not claims.renew(claim, lease_s):
                    return  # taken over: the fence stops this process's next commit
            except Exception:  # noqa: BLE001 - the database is away: the next beat tries again
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def join_rebuild(
    store: EventStore,
    projections: Sequence[Projection],
    run_id: str,
    *,
    registry: CompiledRegistry | Registry,
    read_models: str | ReadModelSink | None = None,
    batch_size: int = DEFAULT_REBUILD_BATCH_SIZE,
    lease_s: float = DEFAULT_LEASE_S,
    stop: Callable[[], bool] = lambda: False,
) -> JoinReport:
    """Take partitions of the running rebuild run ``run_id`` (started elsewhere with ``share``) until all are
    done. It neither verifies nor swaps: the process that started the run does, once every partition is in
    (or, if that one died, the next ``eventmig rebuild``, which resumes the run)."""
    if not isinstance(lease_s, (int, float)) or not 0 < lease_s <= 3600:
        raise ConfigError(f"lease must be between 0 and 3600 seconds, got {lease_s!r}")
    started = time.monotonic()
    compiled = registry.compile() if isinstance(registry, Registry) else registry
    owns_db = read_models is None or isinstance(read_models, str)
    db = open_read_models(read_models or store_url(store)) if owns_db else read_models  # type: ignore[arg-type]
    try:
        claims = open_claims(db)
        run = next((r for r in db.runs() if r.id == run_id), None)
        if run is None:
            raise ConfigError(f"no rebuild run {run_id} in {db.url}")
        if run.status != "running":
            raise ConfigError(f"rebuild run {run_id} is {run.status}, not running: nothing to join")
        projection = next((p for p in projections if p.name == run.projection), None)
        if projection is None:
            raise ConfigError(f"run {run_id} rebuilds {run.projection}, which this code does not define")
        if projection.fingerprint() != run.fingerprint:
            raise ConfigError(f"run {run_id} rebuilds {run.projection} with other code than this process has: "
                              "join it with the same version of the service")
        job = Job()
        job.runs, job.projections = [run], {projection.name: projection}
        holder = new_holder()
        done = fold_shared(store.at_epoch(run.epoch), db, Binding([projection], compiled), job, [run], claims, holder,
                           lease_s=lease_s, batch_size=batch_size, stop=stop)
        finished = all(p.status == "done" for p in db.partitions(run_id))
        return JoinReport(
            ok=finished or stop(), run_id=run_id, projection=run.projection, read_models=db.url, holder=holder,
            events_read=done.events_read, partitions=done.partitions, taken_over=done.taken_over,
            seconds=round(time.monotonic() - started, 3),
            next_step=("every partition is folded: the rebuild that started the run verifies and swaps "
                       "(if it is gone, `eventmig rebuild` resumes the run and does)") if finished
            else "stopped: the partitions left are taken over by the other processes of the run",
        )
    finally:
        if owns_db:
            db.close()


def new_holder() -> str:
    """Who holds a claim: the host and process (for people), and a random part (for fencing)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def store_url(store: EventStore) -> str:
    """The store's own database, where read models live unless given elsewhere."""
    url = getattr(store, "_raw_url", None)
    if not url:
        raise ConfigError("give the read-model database URL (read_models=...)")
    return url
