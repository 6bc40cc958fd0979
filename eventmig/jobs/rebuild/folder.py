"""Folds pages of stored events into a worker's units' states (see the mixins it is made of)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import msgspec

from eventmig.errors import EventmigError, first_line
from eventmig.jobs.rebuild.compile import Compiler
from eventmig.jobs.rebuild.failures import event_label, failed
from eventmig.jobs.rebuild.plan import Job
from eventmig.jobs.rebuild.reports import RebuildFailed
from eventmig.jobs.rebuild.shadow import ShadowRows
from eventmig.jobs.rebuild.states import StateCache
from eventmig.jobs.rebuild.units import ProjectionSlots, Scan, Unit, UnitState, scan_keys
from eventmig.model.events import MetadataKey
from eventmig.model.nesting import deepest
from eventmig.ports_readmodels import ReadModelSink, RowDigest
from eventmig.projection.api import Index
from eventmig.projection.binding import Binding


class Folder(Compiler, StateCache, ShadowRows):
    """Folds pages of stored events into the states of a worker's units, and stores them.

    The work per event is settled once per (stored type, schema version) and
    set of units: a function that decodes the payload straight into the
    Struct the chain starts from (the head Struct for a head event), runs the
    upcasters, and hands the head event to one small function per projection
    that updates the key's state. Types no unit handles are skipped before
    anything is decoded; on a store that filters them, they are not even read.
    """

    def __init__(self, db: ReadModelSink, binding: Binding, job: Job, units: list[Unit]) -> None:
        self.db = db
        self.binding = binding
        self.units = units
        #: (run id, table name) -> the digest of the rows this folder wrote into that shadow table
        self.written: dict[tuple[str, str], RowDigest] = {}
        self._projections = job.projections
        self._reader = db.state_reader()
        self.states: dict[int, UnitState] = {}
        by_projection: dict[str, ProjectionSlots] = {}
        for unit in units:
            projection = job.projections[unit.run.projection]
            slots = by_projection.get(projection.name)
            if slots is None:
                slots = by_projection[projection.name] = ProjectionSlots(projection, unit.run.partitions)
            state = UnitState(unit, slots)
            slots.owned[unit.partition] = state
            if unit.run.partitions == 1:
                slots.single = state
            self.states[id(unit)] = state
            if projection.global_order:
                state.index = Index(self._index_loader(state))
        for state in self.states.values():
            if state.unit.checkpoint is not None and not state.unit.folded:
                self._remember_stored(state)
        self._release_read_conn()
        self.slots = [by_projection.get(p.name) for p in binding.projections]
        # per head type: the (route slot, projection slots) pairs this worker folds
        self.active: dict[str, list[tuple[Any, ProjectionSlots]]] = {}
        for type_name, route in binding.routes.items():
            pairs = [(s, self.slots[s.index]) for s in route.slots if self.slots[s.index] is not None]
            if pairs:
                self.active[type_name] = pairs  # type: ignore[assignment]
        self._touched: dict[int, UnitState] = {}
        self._general: dict[tuple[str, int], Callable[[Any], list[tuple[str, Any]]]] = {}
        self._plain: dict[int, tuple[UnitState, Any]] = {}  # id(applier) -> (state, handler), kept with the applier
        location = binding.compiled.version_location
        self._meta_key = binding.version_key_bytes if isinstance(location, MetadataKey) else None
        self._version_decoder = binding._version_decoder
        #: no handler takes an EventInfo and no upcaster a context: event ids and record times go unread
        self.lean = not binding.compiled.needs_context and not any(
            slot.wants_info for pairs in self.active.values() for slot, _ps in pairs
        )
        self.scans = [
            Scan(streams, self._types_for(members), [self.states[id(u)] for u in members])
            for streams, members in scan_keys(units).items()
        ]

    def _types_for(self, units: list[Unit]) -> frozenset[str] | None:
        """The stored type names whose events these units can use; None: the store cannot tell by name.

        Only with the schema version in metadata is a stored type name the
        event type itself; types of no schema the registry knows are there when
        a projection handles them by name.
        """
        if self._meta_key is None:
            return None
        mine = {id(self.states[id(u)].slots) for u in units}
        handled = {t for t, pairs in self.active.items() if any(id(ps) in mine for _slot, ps in pairs)}
        registry = self.binding.compiled.registry
        names = {t for t, _v in registry.schemas} | {t for t, _v in registry.steps} | set(self.binding.routes)
        return frozenset(t for t in names if self.binding._reachable_types(t) & handled)

    # -------------------------------------------------------------- folding
    def fold(self, scan: Scan, rows: list[tuple[Any, ...]]) -> None:
        """Fold one page of a scan (in commit order); :meth:`commit` stores the result."""
        first, last, n = rows[0][2], rows[-1][2], len(rows)
        positions = None
        groups: dict[tuple[int, int], list[UnitState]] = {}
        for state in scan.states:
            unit = state.unit
            if unit.folded or unit.until is None:
                continue
            checkpoint = unit.checkpoint
            if (checkpoint is None or checkpoint < first) and last <= unit.until:
                lo, hi = 0, n
            else:
                if positions is None:
                    positions = [r[2] for r in rows]
                lo = 0 if checkpoint is None else bisect_right(positions, checkpoint)
                hi = n if last <= unit.until else bisect_right(positions, unit.until)
            if lo < hi:
                groups.setdefault((lo, hi), []).append(state)
                state.pending_events += hi - lo
                state.pending_checkpoint = rows[hi - 1][2]
                self._touched[id(state)] = state
        for (lo, hi), members in groups.items():
            key = frozenset(id(m) for m in members)
            table = scan.tables.get(key)
            if table is None:
                table = scan.tables[key] = self._table(members)
            part = rows if hi - lo == n else rows[lo:hi]
            try:
                if self._meta_key is not None:
                    self._fold_by_metadata(part, table)
                else:
                    self._fold_by_name(part, table)
            except EventmigError:
                raise
            except Exception as exc:  # a projection's code failed: say which, on which event
                raise code_failed(self.binding, exc) from None

    def _fold_by_metadata(self, rows: list[tuple[Any, ...]], table: dict[str, Any]) -> None:
        """The hot loop, schema versions in metadata: one lookup by stored type, one by version."""
        key = self._meta_key
        version_of = self._version_decoder
        for row in rows:
            versions = table[row[4]]
            if versions is None:
                continue  # no unit here uses events of this type
            metadata = row[6]
            try:  # decoding the one field costs less than looking for its name first
                version = version_of(metadata).v
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if metadata.find(key) >= 0:
                    raise failed(row, f"metadata: {exc}") from None
                version = 1  # no version in it: version 1, whatever else the metadata holds
            versions[version](row)

    def _fold_by_name(self, rows: list[tuple[Any, ...]], table: dict[str, Any]) -> None:
        """The hot loop, schema versions in the stored type name: one lookup."""
        for row in rows:
            fold = table[row[4]]
            if fold is not None:
                fold(row)


def code_failed(binding: Binding, exc: Exception) -> RebuildFailed:
    """One line for an exception out of the fold loop: whose code (a handler, a key function), which event.

    The loop itself pays nothing for this: the event is the ``row`` of the
    loop's frame on the traceback, the projection is found by its code.
    """
    row = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in _LOOPS:
            row = tb.tb_frame.f_locals.get("row")
        tb = tb.tb_next
    who = binding.culprit(exc)
    event = isinstance(row, tuple) and len(row) >= 7
    if who is None and event and isinstance(exc, RecursionError):  # decoding a payload or metadata nested too deeply
        return failed(row, deepest(row, exc))  # type: ignore[arg-type]
    on = f" on {event_label(row)}" if event else ""
    return RebuildFailed(f"{who or 'rebuild'} failed{on}: {type(exc).__name__}: {first_line(exc)}")


_LOOPS = frozenset((Folder._fold_by_metadata.__code__, Folder._fold_by_name.__code__))
