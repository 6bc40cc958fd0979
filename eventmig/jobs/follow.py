"""``follow``: keep rebuilt read models current from the active epoch, live, on any number of hosts.

A follower starts where the rebuild that built a projection's live tables
stopped (its checkpoint), with the states of every key at that point (folded
once, sequentially, the first time those tables are followed), and from then
on applies batches of new events with the one fold rebuild and replay use
(:mod:`eventmig.projection.fold`): decode and upcast, key, load the touched
keys' states in one query, evolve them, replace their rows, store the states
and the checkpoint, all in one transaction.

It is synchronous on purpose: one loop of read, apply, wait, where waiting is
PostgreSQL ``LISTEN`` (psycopg's synchronous ``notifies``) with polling as
the fallback, or polling alone (SQLite). Everything it waits on is a
database round trip in order; an async runtime would add a dependency and
an event loop for nothing it can overlap.

* **No event skipped**: it never moves past a hole in the commit positions
  that may still fill (:mod:`eventmig.jobs.follow_gaps`).
* **One active follower per segment**, through leases in the read-model
  database (:class:`~eventmig.ports_readmodels.FollowerStore`); a standby claims a dead holder's
  segments once their lease expires.
* **Stops cleanly**: between transactions when ``stop()`` says so (the CLI's
  SIGTERM and first Ctrl-C); a projection that raises stops alone, with the
  event named, and is tried again by the next ``follow``.
* **Epochs**: after a switch or a rollback it applies what the epoch it
  followed still holds up to where the two epochs agree, then carries its
  checkpoint over, or says that a rebuild is required (:func:`epoch_move`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence

import msgspec

from eventmig.config import (
    DEFAULT_FOLLOW_BATCH_SIZE as DEFAULT_BATCH_SIZE,
    DEFAULT_FOLLOW_GAP_WAIT_S as DEFAULT_GAP_WAIT_S,
    DEFAULT_FOLLOW_LEASE_S as DEFAULT_LEASE_S,
    DEFAULT_FOLLOW_POLL_S as DEFAULT_POLL_S,
    MAX_FOLLOW_BATCH_SIZE as MAX_BATCH_SIZE,
)
from eventmig.errors import ConfigError
from eventmig.jobs.follow_gaps import GapWatch
from eventmig.jobs.follow_segment import Segment, SegmentStopped, epoch_move, lag_of
from eventmig.jobs.rebuild import select_projections, store_url
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.ports import EventStore
from eventmig.ports_readmodels import (
    FollowerRow,
    FollowerStore,
    LeaseLost,
    ReadModelSink,
    ReadModelsSwapped,
    open_followers,
    open_read_models,
)
from eventmig.projection.api import Projection

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_GAP_WAIT_S", "DEFAULT_LEASE_S", "DEFAULT_POLL_S", "MAX_BATCH_SIZE",
           "FollowReport", "FollowStatus", "SegmentReport", "follow"]

#: seconds between two status lines (and two measurements of the lag)
STATUS_EVERY_S = 2.0


_BUSY, _BLOCKED, _IDLE = "busy", "blocked", "idle"
#: swaps in a row that may race a segment's seeding before it gives up until its next claim
_SWAPS_RACED = 5
#: seconds between two looks at a hole in the positions that may still fill
_BLOCKED_PAUSE_S = 0.05


class SegmentReport(msgspec.Struct):
    projection: str
    segment: int
    status: str  # "following" | "stopped" | "standby"
    epoch: int | None = None
    checkpoint: int | None = None
    applied: int = 0  # events applied by this follow
    gaps: int = 0  # positions passed without an event, ever
    lag_events: int | None = None
    lag_seconds: float | None = None
    error: str | None = None


class FollowReport(msgspec.Struct):
    ok: bool
    store: str
    read_models: str
    holder: str
    applied: int
    seconds: float
    events_per_second: float
    segments: list[SegmentReport]
    stopped_by: str  # "caught up" (--once) | "stop" (a signal) | "nothing to follow"


class FollowStatus(msgspec.Struct):
    """What the status line says: applied so far, and how far behind the active epoch's head."""

    applied: int
    events_per_second: float
    lag_events: int
    lag_seconds: float
    segments: int
    standby: int


def follow(
    store: EventStore,
    projections: Sequence[Projection],
    *,
    registry: CompiledRegistry | Registry,
    read_models: str | ReadModelSink | None = None,
    names: Sequence[str] | None = None,
    once: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    poll_s: float = DEFAULT_POLL_S,
    gap_wait_s: float = DEFAULT_GAP_WAIT_S,
    lease_s: float = DEFAULT_LEASE_S,
    stop: Callable[[], bool] = lambda: False,
    on_status: Callable[[FollowStatus], None] | None = None,
) -> FollowReport:
    """Keep the selected projections' live read models current until ``stop()`` (or, ``once``, caught up).

    ``read_models`` is the read-model database (URL or handle; default: the
    store's own database). ``once`` catches up with the head as it is and
    returns (cron, tests). A projection whose lease another follower holds is
    waited for as a standby, unless ``once``.
    """
    if type(batch_size) is not int or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch size must be between 1 and {MAX_BATCH_SIZE:,}, got {batch_size!r}")
    for what, value in (("poll interval", poll_s), ("gap wait", gap_wait_s), ("lease", lease_s)):
        if not isinstance(value, (int, float)) or not 0 < value <= 3600:
            raise ConfigError(f"{what} must be between 0 and 3600 seconds, got {value!r}")
    compiled = registry.compile() if isinstance(registry, Registry) else registry
    selected = select_projections(projections, names)
    owns_db = read_models is None or isinstance(read_models, str)
    db = open_read_models(read_models or store_url(store)) if owns_db else read_models  # type: ignore[arg-type]
    try:
        for projection in selected:
            db.check_names(projection.name, projection.tables)
        loop = _Loop(store, selected, compiled, open_followers(db), batch_size, poll_s, gap_wait_s, lease_s)
        return loop.run(once, stop, on_status)
    finally:
        if owns_db:
            db.close()


class _Loop:
    """One follower process: its leases, its segments, and the read-apply-wait loop."""

    def __init__(
        self, store: EventStore, selected: list[Projection], compiled: CompiledRegistry, fdb: FollowerStore,
        batch_size: int, poll_s: float, gap_wait_s: float, lease_s: float,
    ) -> None:
        self.store, self.compiled, self.fdb = store, compiled, fdb
        self.projections = {p.name: p for p in selected}
        self.batch_size, self.poll_s, self.gap_wait_s, self.lease_s = batch_size, poll_s, gap_wait_s, lease_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.segments: dict[tuple[str, int], Segment] = {}
        self.stopped: dict[tuple[str, int], str] = {}
        self.gaps: dict[int, GapWatch] = {}
        self.applied = 0
        self.started = time.monotonic()
        self._claimed_at = self._lag_at = float("-inf")
        self._lag: dict[tuple[str, int], tuple[int, float]] = {}
        #: per epoch left by a switch or rollback: the positions where it and the active epoch agree
        self._moves: dict[int, tuple[int | None, int | None]] = {}

    # ------------------------------------------------------------------ run
    def run(self, once: bool, stop: Callable[[], bool], on_status: Callable[[FollowStatus], None] | None) -> FollowReport:
        reason = "stop"
        try:
            if once:
                self._await_leases(stop)
            while not stop():
                self._claim()
                if not self.segments:
                    if once or len(self.stopped) == len(self.projections):
                        reason = "nothing to follow" if not once else "caught up"
                        break
                    self._sleep(min(self.lease_s / 3, 1.0), stop)  # a standby: try again for a lease soon
                    continue
                progress = self._step()
                if time.monotonic() - self._lag_at >= STATUS_EVERY_S:
                    self._measure_lag()
                    if on_status is not None:
                        on_status(self._status())
                if progress is _BLOCKED:
                    time.sleep(_BLOCKED_PAUSE_S)  # a hole that may still fill: look again shortly
                elif progress is _IDLE:
                    if once:
                        reason = "caught up"
                        break
                    self.store.wait_for_appends(self.poll_s)
        finally:
            self._release()
        return self._report(reason)

    def _await_leases(self, stop: Callable[[], bool]) -> None:
        """``once``: a segment held by a follower that died is free within a lease; wait that long for it."""
        deadline = time.monotonic() + self.lease_s + 1.0
        while not stop():
            self._claimed_at = float("-inf")
            self._claim()
            if len(self.segments) + len(self.stopped) == len(self.projections) or time.monotonic() >= deadline:
                return
            self._sleep(min(0.2, self.lease_s / 3), stop)

    def _sleep(self, seconds: float, stop: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while not stop() and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _claim(self) -> None:
        """Renew the leases held, and claim free or expired ones (at most every third of a lease)."""
        if time.monotonic() - self._claimed_at < self.lease_s / 3:
            return
        self._claimed_at = time.monotonic()
        if self.segments or self.stopped:
            # a stopped segment's lease is kept while this process lives: a standby would only fail the same way
            kept = self.fdb.renew([*self.segments, *self.stopped], self.holder, self.lease_s)
            for key in set(self.segments) - kept:
                del self.segments[key]  # taken over while this process stalled: it applies nothing more there
        wanted = [(name, 0) for name in self.projections if (name, 0) not in self.segments and (name, 0) not in self.stopped]
        for row in self.fdb.claim(wanted, self.holder, self.lease_s) if wanted else []:
            self._start(row)

    def _start(self, row: FollowerRow) -> None:
        """Resume the segment, or seed it from the live tables' rebuild (again if a swap raced the seeding)."""
        for _ in range(_SWAPS_RACED):
            segment = Segment(self.projections[row.projection], self.compiled, self.fdb, row)
            try:
                segment.prepare(self.store, self.holder, self.lease_s)
            except SegmentStopped as stopped:
                self.stopped[segment.key] = str(stopped)
                return
            except ReadModelsSwapped:
                row = self._reload(segment)
                continue
            except LeaseLost:
                return
            self.segments[segment.key] = segment
            return

    def _reload(self, segment: Segment) -> FollowerRow:
        with self.fdb.db.read() as c:
            return self.fdb.follower(c, segment.row.projection, segment.row.segment)

    # ----------------------------------------------------------------- step
    def _step(self) -> str:
        """Apply one batch per epoch the segments are in: _BUSY, _BLOCKED (a hole may fill) or _IDLE."""
        active = self.store.active_epoch()
        by_epoch: dict[int, list[Segment]] = {}
        outcomes = set()
        for segment in list(self.segments.values()):
            epoch = segment.row.epoch if segment.row.epoch is not None else active
            if epoch != active:
                if self._leave_epoch(segment, epoch, active):
                    outcomes.add(_BUSY)
                if segment.key not in self.segments or segment.row.epoch == active:
                    continue
            by_epoch.setdefault(epoch, []).append(segment)
        for epoch, members in by_epoch.items():
            outcomes.add(self._apply(epoch, members, None if epoch == active else self._moves[epoch][0]))
        return next((o for o in (_BUSY, _BLOCKED) if o in outcomes), _IDLE)

    def _leave_epoch(self, segment: Segment, left: int, active: int) -> bool:
        """After a switch or rollback: carry the segment over once it applied all it can of ``left``."""
        move = self._moves.get(left)
        if move is None:
            found = epoch_move(self.store, self.store.switches(), left, active)
            if isinstance(found, str):
                return self._drop(segment, f"{segment.projection.name}: {found}: a rebuild is required")
            move = self._moves[left] = found
        agree_left, agree_active = move
        checkpoint = segment.row.checkpoint
        if segment.epoch_bound:
            return self._drop(segment, f"{segment.projection.name} reads positions or stream versions, which differ "
                                       f"between epochs {left} and {active}: a rebuild is required")
        if checkpoint is not None and (agree_left is None or checkpoint > agree_left):
            return self._drop(segment, f"{segment.projection.name} applied events of epoch {left} that epoch {active} "
                                       "does not hold (a rollback hid them): a rebuild is required")
        if checkpoint == agree_left:
            self._guard(segment, lambda: segment.move_epoch(active, agree_active, self.holder, self.lease_s))
            return True
        return False  # still behind in the epoch it left: it catches up there first

    def _drop(self, segment: Segment, reason: str) -> bool:
        try:
            raise segment._stop(reason, self.holder, self.lease_s)
        except SegmentStopped as stopped:
            self.stopped[segment.key] = str(stopped)
        self.segments.pop(segment.key, None)
        return True

    def _guard(self, segment: Segment, action: Callable[[], object]) -> object:
        try:
            return action()
        except SegmentStopped as stopped:
            self.stopped[segment.key] = str(stopped)
        except ReadModelsSwapped:
            # a rebuild (or a rollback) made other tables live: nothing of the batch was written; start again
            # from the checkpoint those tables were built up to
            self.segments.pop(segment.key, None)
            self._start(self._reload(segment))
            return None
        except LeaseLost:
            pass
        self.segments.pop(segment.key, None)
        return None

    def _apply(self, epoch: int, members: list[Segment], until: int | None) -> str:
        """One page of ``epoch`` after the members' lowest checkpoint, applied to each in its transaction."""
        source = self.store.at_epoch(epoch)
        live = until is None
        watch = self.gaps.setdefault(epoch, GapWatch(source, self.gap_wait_s)) if live else None
        if watch is not None:
            watch.before_read()
        checkpoints = [s.row.checkpoint for s in members]
        after = None if None in checkpoints else min(c for c in checkpoints if c is not None)
        pages = source.read_all_rows(after, until=until, batch_size=self.batch_size)
        rows = next(iter(pages), [])
        close = getattr(pages, "close", None)
        if close is not None:
            close()
        gaps = []
        read = len(rows)
        if watch is not None:
            usable, gaps = watch.usable(rows, after)
            rows = rows[:usable]
        if not rows and not gaps:
            return _BLOCKED if read else _IDLE
        done = 0
        for segment in members:
            mine = [g for g in gaps if segment.row.checkpoint is None or g.first > segment.row.checkpoint]
            lag = self._lag.get(segment.key)
            applied = self._guard(segment, lambda s=segment, m=mine, l=lag: s.apply(rows, m, l, self.holder, self.lease_s))
            done += applied or 0  # type: ignore[operator]
        self.applied += done
        return _BUSY

    def _measure_lag(self) -> None:
        """Events behind the active epoch's head, and seconds since the oldest of them was recorded."""
        self._lag_at = time.monotonic()
        active = self.store.active_epoch()
        source = self.store.at_epoch(active)
        for key, segment in self.segments.items():
            if segment.row.epoch == active:
                self._lag[key] = lag_of(source, segment.row.checkpoint)

    # --------------------------------------------------------------- report
    def _status(self) -> FollowStatus:
        behind = [self._lag.get(k, (0, 0.0)) for k in self.segments]
        seconds = time.monotonic() - self.started
        return FollowStatus(
            self.applied, round(self.applied / seconds, 1) if seconds else 0.0,
            max((b[0] for b in behind), default=0), max((b[1] for b in behind), default=0.0),
            len(self.segments), len(self.projections) - len(self.segments) - len(self.stopped),
        )

    def _release(self) -> None:
        if self.segments or self.stopped:
            try:
                self.fdb.release([*self.segments, *self.stopped], self.holder)
            except Exception:  # noqa: BLE001 - the leases expire anyway
                pass

    def _report(self, reason: str) -> FollowReport:
        seconds = time.monotonic() - self.started
        self._measure_lag()
        rows = {(r.projection, r.segment): r for r in self.fdb.followers()}
        out = []
        for name in self.projections:
            key = (name, 0)
            row = rows.get(key)
            status = "following" if key in self.segments else "stopped" if key in self.stopped else "standby"
            segment = self.segments.get(key)
            out.append(SegmentReport(
                name, 0, status,
                epoch=row.epoch if row else None, checkpoint=row.checkpoint if row else None,
                applied=segment.applied if segment else 0, gaps=row.gaps if row else 0,
                lag_events=self._lag[key][0] if key in self._lag else None,
                lag_seconds=self._lag[key][1] if key in self._lag else None,
                error=self.stopped.get(key),
            ))
        return FollowReport(
            ok=not self.stopped, store=self.store.url, read_models=self.fdb.db.url, holder=self.holder,
            applied=self.applied, seconds=round(seconds, 3),
            events_per_second=round(self.applied / seconds, 1) if seconds else 0.0, segments=out, stopped_by=reason,
        )
