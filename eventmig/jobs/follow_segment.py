"""One projection segment under a follower: seeding its states, applying a batch, moving epochs.

A segment is what one follower holds one lease for (today a whole
projection: segment 0). Every change it makes to the read-model database
is one transaction that covers the rows, the states of the keys they come
from and the checkpoint, after checking that the lease is still held and
the checkpoint still the one the batch started from (``FollowerDB.held``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy.engine import Connection

from eventmig.backends.sql.following import FollowerDB, FollowerRow
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.rebuild.units import decode_key, encode_key
from eventmig.model.records import Gap, Switch
from eventmig.model.chains import CompiledRegistry
from eventmig.ports import EventStore
from eventmig.projection import fold
from eventmig.projection.api import Index, Projection
from eventmig.projection.binding import Binding
from eventmig.projection.sentinels import _DELETED
from eventmig.projection.fold import Replay

#: states written to the state table at once while seeding
_SEED_WRITE = 10_000


class _HandlerFailed(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


class SegmentStopped(Exception):
    """The segment cannot go on (its projection raised, or a rebuild is required); the reason is recorded."""


class Segment:
    """A projection segment this follower holds the lease of."""

    def __init__(self, projection: Projection, compiled: CompiledRegistry, fdb: FollowerDB, row: FollowerRow) -> None:
        self.projection = projection
        self.compiled = compiled
        self.binding = Binding([projection], compiled)
        self.fdb = fdb
        self.db: ReadModelDB = fdb.db
        self.row = row
        self.tracks = fold.tracks_version(projection)
        state_type = tuple[int, projection.state_type] if self.tracks else projection.state_type
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(state_type).decode
        self.index = Index()
        #: reads positions or stream versions: its rows differ between epochs that hold the same events
        self.epoch_bound = self.tracks or any(s.wants_info for r in self.binding.routes.values() for s in r.slots)
        self.applied = 0  # events applied by this process
        self._marked = False  # its run is recorded as followed past its rebuild

    @property
    def key(self) -> tuple[str, int]:
        return self.row.projection, self.row.segment

    # ------------------------------------------------------------ starting
    def prepare(self, store: EventStore, holder: str, lease_s: float) -> None:
        """Follow the projection's live tables: resume, or seed the states at their rebuild's checkpoint."""
        name = self.projection.name
        live = self.db.live_models().get(name)
        if live is None or live.version is None:
            raise self._stop(f"{name} has no tables built by eventmig rebuild: run `eventmig rebuild {name}` first",
                             holder, lease_s)
        if live.version != self.projection.version:
            raise self._stop(f"{name} is at version {self.projection.version} in the code, {live.version} in its live "
                             f"tables: a rebuild is required (`eventmig rebuild {name}`)", holder, lease_s)
        if self.row.run_id == live.run_id:
            self._load_index()
            if self.row.error is not None:  # the next try after a fix: the error is history
                with self.db.write() as c:
                    self.fdb.held(c, self.row, holder)
                    self.row.error = None
                    self.fdb.save(c, self.row, lease_s)
            return
        run = next((r for r in self.db.runs(name) if r.id == live.run_id), None)
        with self.db.read() as c:
            followed = self.fdb.was_followed(c, live.run_id)
        if run is None or followed:
            why = "its rebuild run is unknown" if run is None else "they were followed past their rebuild once"
            raise self._stop(f"{name}: the live tables cannot be followed ({why}): a rebuild is required "
                             f"(`eventmig rebuild {name}`)", holder, lease_s)
        self._seed(store.at_epoch(run.epoch), run.id, run.epoch, run.until, holder, lease_s)

    def _seed(self, source: EventStore, run_id: str, epoch: int, until: int | None, holder: str, lease_s: float) -> None:
        """The states of every key at the rebuild's checkpoint, folded once, sequentially, by the one fold."""
        folding = Replay([self.projection], self.compiled)
        if until is not None:
            for rows in source.read_all_rows(None, until=until, batch_size=10_000):
                fold.apply(fold.keyed_events(folding.binding, rows, folding.indexes), folding.states)
        states, index = folding.states[0], folding.indexes[0]
        with self.db.write(durable=False) as c:
            self.fdb.held(c, self.row, holder)
            self.fdb.reset_states(c, self.projection.name)
            items = sorted((encode_key(k), self._encode(v)) for k, v in states.items())
            items += [("#" + encode_key(k), msgspec.msgpack.encode(v)) for k, v in index._data.items()]
            for start in range(0, len(items), _SEED_WRITE):
                self.fdb.put_states(c, self.projection.name, items[start:start + _SEED_WRITE], empty=start == 0)
            row = self.row
            row.run_id, row.epoch, row.checkpoint, row.events, row.error = run_id, epoch, until, 0, None
            self.fdb.save(c, row, lease_s)
        index._dirty.clear()
        self.index = index

    def _load_index(self) -> None:
        """A global-order projection's Index, whole (it is small by contract), from the state table."""
        if not self.projection.global_order:
            return
        with self.db.read() as c:
            for batch in self.db.scan_states(c, self.fdb.state_table(self.projection.name)):
                for text, data in batch:
                    if text[0] == "#":
                        self.index._data[decode_key(text[1:])] = msgspec.msgpack.decode(bytes(data))

    # ------------------------------------------------------------ applying
    def apply(self, rows: Sequence[Sequence[Any]], gaps: Sequence[Gap], lag: tuple[int, float] | None,
              holder: str, lease_s: float) -> int:
        """Fold ``rows`` (after the checkpoint, in commit order) into the live tables; one transaction."""
        checkpoint = self.row.checkpoint
        rows = [r for r in rows if checkpoint is None or r[2] > checkpoint]
        if not rows and not gaps:
            return 0
        try:
            keyed = fold.keyed_events(self.binding, rows, [self.index])
        except Exception as exc:  # noqa: BLE001 - a projection's key function or an upcaster failed
            raise self._failed(rows, exc, holder, lease_s) from None
        row = msgspec.structs.replace(self.row)
        try:
            with self.db.write(durable=False) as c:
                self.fdb.held(c, row, holder)
                states = self._states(c, keyed)
                old = self.projection.rows_of_many(states[0].items())
                try:
                    fold.apply(keyed, states)
                except Exception as exc:  # noqa: BLE001 - a handler failed: the transaction is rolled back
                    raise _HandlerFailed(exc) from None
                self._write(c, states[0], old)
                if rows:
                    row.checkpoint = rows[-1][2]
                if gaps:
                    row.checkpoint = max(row.checkpoint or 0, gaps[-1].last)
                row.events += len(rows)
                if lag is not None:
                    row.lag_events, row.lag_seconds = lag
                if not self._marked:
                    self.fdb.mark_followed(c, row.run_id or "", self.projection.name)
                self.fdb.save(c, row, lease_s, gaps)
        except _HandlerFailed as failed:
            raise self._failed(rows, failed.error, holder, lease_s) from None
        self.row = row
        self._marked = True
        self.index._dirty.clear()
        self.applied += len(rows)
        return len(rows)

    def _states(self, c: Connection, keyed: list[fold.KeyedEvent]) -> list[dict[Any, Any]]:
        """The stored states of the keys a batch touches, loaded at once; keys without one start fresh."""
        keys = list(dict.fromkeys(k.key for k in keyed))
        stored = self.fdb.load_states(c, self.projection.name, [encode_key(k) for k in keys])
        states: dict[Any, Any] = {}
        for key in keys:
            data = stored.get(encode_key(key))
            if data is not None:
                value = self._decode(data)
                states[key] = list(value) if self.tracks else value
        return [states]

    def _write(self, c: Connection, states: dict[Any, Any], old: dict[str, list[tuple[Any, ...]]]) -> None:
        """The touched keys' rows replaced, and their states and the Index stored."""
        new = self.projection.rows_of_many(states.items())
        for table in self.projection.tables:
            self.fdb.replace_rows(c, table, old.get(table.name, []), new.get(table.name, []))
        items = [(encode_key(k), self._encode(v)) for k, v in states.items()]
        deleted: list[str] = []
        for k, v in self.index._dirty.items():
            if v is _DELETED:
                deleted.append("#" + encode_key(k))
            else:
                items.append(("#" + encode_key(k), msgspec.msgpack.encode(v)))
        self.fdb.put_states(c, self.projection.name, items, deleted)

    # ------------------------------------------------------------- epochs
    def move_epoch(self, to_epoch: int, position: int | None, holder: str, lease_s: float) -> None:
        """Carry the checkpoint over to the epoch made active: the same events, nothing replayed."""
        with self.db.write() as c:
            self.fdb.held(c, self.row, holder)
            self.row.epoch, self.row.checkpoint = to_epoch, position
            self.fdb.save(c, self.row, lease_s)

    # ------------------------------------------------------------- stopping
    def _failed(self, rows: Sequence[Sequence[Any]], exc: Exception, holder: str, lease_s: float) -> SegmentStopped:
        """Find the event the projection failed on (fold again, one at a time), record it, stop the segment."""
        culprit = self._culprit(rows)
        where = (f"event {culprit[4]} at position {culprit[2]} (stream {culprit[0]!r}, version {culprit[1]})"
                 if culprit is not None else "an event of the batch")
        return self._stop(f"{self.projection.name} failed on {where}: {type(exc).__name__}: {exc}", holder, lease_s)

    def _culprit(self, rows: Sequence[Sequence[Any]]) -> Sequence[Any] | None:
        probe = Replay([self.projection], self.compiled)
        probe.indexes = [Index()]
        probe.indexes[0]._data = dict(self.index._data)
        for row in rows:
            try:
                probe.feed(row)
            except Exception:  # noqa: BLE001 - the first event that fails alone is the one to name
                return row
        return None

    def _stop(self, reason: str, holder: str, lease_s: float) -> SegmentStopped:
        """Record why the segment stopped (the next follow tries again) and say so."""
        with self.db.write() as c:
            current = self.fdb.follower(c, self.row.projection, self.row.segment, lock=True)
            if current.holder == holder:
                current.error = reason
                self.fdb.save(c, current, lease_s)
                self.row = current
        return SegmentStopped(reason)


def epoch_move(store: EventStore, switches: list[Switch], left: int, active: int) -> tuple[int | None, int | None] | str:
    """Where the epoch ``left`` and the active one hold the same events: ``(position in left, in active)``.

    A switch copied all of ``left`` (frozen since) into ``active``: the end of
    ``left`` is the active epoch's head at the flip. A rollback back to
    ``active`` hides what ``left`` received after its own switch: the two
    agree at the heads of that switch. Anything else: a reason a rebuild is
    required.
    """
    flips = [s for s in switches if s.from_epoch == left and s.to_epoch == active]
    if not flips:
        return f"the active epoch went from {left} to {active} without one switch between them"
    flip = flips[-1]
    if flip.kind != "rollback":
        return store.at_epoch(left).head_position(), flip.to_head
    earlier = [s for s in switches if s.id < flip.id and s.from_epoch == active and s.to_epoch == left]
    if not earlier:
        return f"no switch from epoch {active} to {left} precedes the rollback"
    return earlier[-1].to_head, flip.to_head


def lag_of(source: EventStore, checkpoint: int | None) -> tuple[int, float]:
    """Events not applied yet, and how long ago the oldest of them was recorded (seconds)."""
    behind = source.count_events(after=checkpoint)
    if not behind:
        return 0, 0.0
    first = next(iter(source.read_all_rows(checkpoint, batch_size=1)), [])
    recorded = first[0][7] if first else None
    return behind, round(max(0.0, time.time() - recorded / 1e6), 3) if recorded else 0.0
