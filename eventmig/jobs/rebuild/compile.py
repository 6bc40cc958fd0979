"""The functions that fold one stored event of a (type, schema version) into the states of a set of units."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventmig.jobs.rebuild.failures import DECODE_ERRORS, failed, skip
from eventmig.jobs.rebuild.units import ProjectionSlots, TypeTable, UnitState, crc32
from eventmig.projection.binding import KEY_INDEXED, KEY_STREAM, Binding
from eventmig.projection.sentinels import _MISSING, SLOW
from eventmig.projection.fold import evolve


class Compiler:
    """Per (stored type, schema version) and set of units folding together: one function that decodes,
    upcasts and applies an event, the commonest cases fused into one call."""

    binding: Binding
    active: dict[str, list[tuple[Any, ProjectionSlots]]]
    _meta_key: bytes | None
    _general: dict[tuple[str, int], Callable[[Any], list[tuple[str, Any]]]]
    _plain: dict[int, tuple[UnitState, Any]]
    #: the state of a key not in memory (:class:`~eventmig.jobs.rebuild.states.StateCache`)
    _fresh: Callable[[UnitState, Any], Any]

    def _table(self, members: list[UnitState]) -> dict[str, Any]:
        """What to do with the events of each stored type, for units folding together."""
        binding = self.binding
        appliers = self._appliers(members)
        handled = set(appliers)
        by_metadata = self._meta_key is not None

        def make(stored_type: str) -> Any:
            entry = binding.entry(stored_type)
            if entry is None:
                return None
            type_name, fixed, _head = entry
            if not binding._reachable_types(type_name) & handled:
                return None
            if not by_metadata:
                return self._compile(appliers, type_name, fixed if fixed is not None else 1)
            if fixed is not None:  # a type the registry does not know: its events are what they are
                fold = self._compile(appliers, type_name, fixed)
                return TypeTable(lambda version: fold)
            return TypeTable(lambda version: self._compile(appliers, type_name, version))

        return TypeTable(make)

    def _compile(
        self, appliers: dict[str, tuple[Callable[[Any, Any], None], ...]], type_name: str, version: int
    ) -> Callable[[tuple[Any, ...]], None]:
        """The function folding one stored event of ``(type, version)`` into the units' states."""
        binding = self.binding
        general = self._general.get((type_name, version))
        if general is None:
            general = self._general[(type_name, version)] = binding.general_path(type_name, version)
        fast = binding.fast_path(type_name, version)
        out_type = fast[0] if fast is not None else None
        if fast is not None and out_type is not None and out_type not in appliers:
            return skip  # becomes a head event no unit here handles: nothing to decode
        fold_general = _fold_general(general, appliers)
        if fast is None:
            return fold_general
        _out, decode, then = fast
        if out_type is None:  # a split: a list of head events
            return _fold_split(decode, then, general, appliers)
        targets = appliers[out_type]
        plain = self._plain.get(id(targets[0])) if len(targets) == 1 else None
        if plain is not None:  # one stream-keyed projection: fused with the state update
            fused = self._fused(plain, binding, type_name, version, decode, then, fold_general)
            if fused is not None:
                return fused
        if then is None:  # a head event: decoded straight into its Struct
            return _fold_head(decode, targets)
        return _fold_chain(decode, then, general, appliers, targets)

    def _fused(
        self, plain: tuple[UnitState, Any], binding: Binding, type_name: str, version: int,
        decode: Callable[[bytes], Any], then: Callable[[Any], Any] | None, slow: Callable[[Any], None],
    ) -> Callable[[tuple[Any, ...]], None] | None:
        """The commonest cases in one function each (a call per event saved is a tenth of a microsecond):
        a head event, or one typed step to a head, for a stream-keyed projection's state."""
        state, handler = plain
        cache = state.cache
        get = cache.get
        dirty = state.dirty.add
        fresh = self._fresh
        if then is None:

            def fold_head(row: tuple[Any, ...]) -> None:
                try:
                    event = decode(row[5])
                except DECODE_ERRORS as exc:
                    raise failed(row, exc) from None
                key = row[0]
                current = get(key, _MISSING)
                if current is _MISSING:
                    current = fresh(state, key)
                new = handler(current, event)
                if new is not None:
                    cache[key] = new
                dirty(key)

            return fold_head
        single = binding.single_step(type_name, version)
        if single is None:
            return None
        decode_input, step, head, name = single

        def fold_step(row: tuple[Any, ...]) -> None:
            try:
                event = step(decode_input(row[5]))
            except DECODE_ERRORS as exc:
                raise failed(row, exc) from None
            except Exception as exc:  # as the registry's chains report a failing step
                raise failed(
                    row, f"upcaster {name} failed on {type_name} v{version}: {type(exc).__name__}: {exc}"
                ) from None
            if event.__class__ is not head:
                slow(row)  # a dict, a list, a drop...: what the registry's chains do
                return
            key = row[0]
            current = get(key, _MISSING)
            if current is _MISSING:
                current = fresh(state, key)
            new = handler(current, event)
            if new is not None:
                cache[key] = new
            dirty(key)

        return fold_step

    def _appliers(self, members: list[UnitState]) -> dict[str, tuple[Callable[[Any, Any], None], ...]]:
        """Per head type: one function per projection handling it, updating the members' states."""
        ids = {id(m) for m in members}
        out: dict[str, tuple[Callable[[Any, Any], None], ...]] = {}
        for type_name, pairs in self.active.items():
            fns = []
            for slot, ps in pairs:
                states = [s for s in ps.owned.values() if id(s) in ids]
                if states:
                    fns.append(self._applier(slot, ps, states))
            if fns:
                out[type_name] = tuple(fns)
        return out

    def _applier(self, slot: Any, ps: ProjectionSlots, states: list[UnitState]) -> Callable[[Any, Any], None]:
        """``apply(row, event)``: the slot's handler on the state of the event's key.

        A key missing from memory is new unless the Bloom filter of stored keys
        says it may have been stored: then its state is loaded (evicted keys
        rarely come back).
        """
        handler, wants_info, tracks = slot.handler, slot.wants_info, ps.tracks
        fresh = self._fresh
        if slot.key_kind == KEY_STREAM:
            # stream-keyed: the store handed this scan only the streams of this one state
            if len(states) != 1:
                raise AssertionError("a stream-keyed projection folds one partition per scan")
            (state,) = states
            cache = state.cache
            get = cache.get
            dirty = state.dirty.add
            if not tracks and not wants_info:

                def apply(row: tuple[Any, ...], event: Any) -> None:
                    key = row[0]
                    current = get(key, _MISSING)
                    if current is _MISSING:
                        current = fresh(state, key)
                    new = handler(current, event)
                    if new is not None:
                        cache[key] = new
                    dirty(key)

                self._plain[id(apply)] = (state, handler)  # what _fused inlines
                return apply
            if tracks and not wants_info:

                def apply_tracked(row: tuple[Any, ...], event: Any) -> None:
                    key = row[0]
                    current = get(key, _MISSING)
                    if current is _MISSING:
                        current = fresh(state, key)
                    new = handler(current[1], event)
                    if new is not None:
                        current[1] = new
                    current[0] = row[1]
                    dirty(key)

                return apply_tracked
            return self._apply_generic(slot, ps, {state.unit.partition: state}, stream=True)
        return self._apply_generic(slot, ps, {s.unit.partition: s for s in states}, stream=False)

    def _apply_generic(
        self, slot: Any, ps: ProjectionSlots, owned: dict[int, UnitState], *, stream: bool
    ) -> Callable[[Any, Any], None]:
        """Any key kind, partitioned or not, with or without an :class:`EventInfo`."""
        tracks = ps.tracks
        kind, keyfn, partitions = slot.key_kind, slot.key, ps.partitions
        single = next(iter(owned.values())) if stream or partitions == 1 else None
        fresh = self._fresh
        crc = crc32

        def apply(row: tuple[Any, ...], event: Any) -> None:
            if stream:
                key = row[0]
            elif kind == KEY_INDEXED:
                key = keyfn(event, single.index)  # type: ignore[union-attr]
            else:
                key = keyfn(event)
            if key is None:
                return
            state = single
            if state is None:
                state = owned.get(crc(key.encode() if key.__class__ is str else str(key).encode()) % partitions)
                if state is None:
                    return  # another worker's key
            cache = state.cache
            current = cache.get(key, _MISSING)
            if current is _MISSING:
                current = fresh(state, key)
            new = evolve(slot, tracks, current, row, event)
            if new is not current:
                cache[key] = new
            state.dirty.add(key)

        return apply


#: what folds one stored row: it decodes the row's payload and applies the head events it becomes
Fold = Callable[[tuple[Any, ...]], None]
Appliers = dict[str, tuple[Callable[[Any, Any], None], ...]]


def _fold_general(general: Callable[[Any], Any], appliers: Appliers) -> Fold:
    """Through the registry's general chains: whatever they handle, at their pace."""
    no_appliers: tuple[Callable[[Any, Any], None], ...] = ()

    def fold_general(row: tuple[Any, ...]) -> None:
        try:
            events = general(row)
        except DECODE_ERRORS as exc:
            raise failed(row, exc) from None
        for t, event in events:
            for apply in appliers.get(t, no_appliers):
                apply(row, event)

    return fold_general


def _fold_split(decode: Callable[[bytes], Any], then: Callable[[Any], Any], general: Callable[[Any], Any],
                appliers: Appliers) -> Fold:
    """A chain that splits an event: a list of head events, or the general path when a step is less plain."""
    no_appliers: tuple[Callable[[Any, Any], None], ...] = ()

    def fold_split(row: tuple[Any, ...]) -> None:
        try:
            events = then(decode(row[5]))
            if events is SLOW:
                events = general(row)
        except DECODE_ERRORS as exc:
            raise failed(row, exc) from None
        for t, event in events:
            for apply in appliers.get(t, no_appliers):
                apply(row, event)

    return fold_split


def _fold_head(decode: Callable[[bytes], Any], targets: tuple[Callable[[Any, Any], None], ...]) -> Fold:
    """A head event: decoded straight into its Struct and applied (one applier gets a function of its own)."""
    if len(targets) == 1:
        (apply,) = targets

        def fold_head(row: tuple[Any, ...]) -> None:
            try:
                event = decode(row[5])
            except DECODE_ERRORS as exc:
                raise failed(row, exc) from None
            apply(row, event)

        return fold_head

    def fold_head_many(row: tuple[Any, ...]) -> None:
        try:
            event = decode(row[5])
        except DECODE_ERRORS as exc:
            raise failed(row, exc) from None
        for apply in targets:
            apply(row, event)

    return fold_head_many


def _fold_chain(decode: Callable[[bytes], Any], then: Callable[[Any], Any], general: Callable[[Any], Any],
                appliers: Appliers, targets: tuple[Callable[[Any, Any], None], ...]) -> Fold:
    """A chain to one head type, compiled; the general path for the events a step returns less plainly."""
    no_appliers: tuple[Callable[[Any, Any], None], ...] = ()

    def fold_chain(row: tuple[Any, ...]) -> None:
        try:
            event = then(decode(row[5]))
            if event is SLOW:
                events = general(row)
        except DECODE_ERRORS as exc:
            raise failed(row, exc) from None
        if event is SLOW:
            for t, e in events:
                for apply in appliers.get(t, no_appliers):
                    apply(row, e)
            return
        for apply in targets:
            apply(row, event)

    return fold_chain
