"""The one sequential fold: stored events in commit order, routed to projections, applied to keys' states.

Pure: no I/O. :class:`Replay` (below: the reference a rebuild must
equal), ``follow`` and the rebuilder's general applier all
evolve a key's state with :func:`evolve`; ``follow`` and ``Replay`` also
split a batch into keyed events with :func:`keyed_events` and apply them
with :func:`apply`. What a caller brings is where states live: ``Replay``
keeps every state in memory, ``follow`` loads the states of the keys a batch
touches, in bulk, between the two steps, and writes them back with the rows
and its checkpoint in one transaction.

State layout: a projection that tracks stream versions (:class:`Snapshots`)
holds ``[stream version, state]`` per key, every other projection the state
itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from eventmig.model.chains import CompiledRegistry
from eventmig.projection.api import EventInfo, Index, Projection
from eventmig.projection.binding import KEY_INDEXED, KEY_STREAM, Binding, Slot, events_of

#: ``keep(projection index, key, row)``: whether an event is folded into that key's state
Keep = Callable[[int, Any, Sequence[Any]], bool]


class KeyedEvent(NamedTuple):
    """One event as one projection sees it: its key and its head-schema value."""

    slot: Slot
    key: Any
    row: Sequence[Any]  # the stored event, in RecordedEvent field order
    event: Any


def tracks_version(projection: Any) -> bool:
    return bool(getattr(projection, "tracks_version", False))


def key_of(slot: Slot, row: Sequence[Any], event: Any, index: Index) -> Any:
    """The key an event reaches in one projection (None: the projection skips it)."""
    kind = slot.key_kind
    if kind == KEY_STREAM:
        return row[0]
    if kind == KEY_INDEXED:
        return slot.key(event, index)  # type: ignore[misc]
    return slot.key(event)  # type: ignore[misc]


def keyed_events(
    binding: Binding, rows: Iterable[Sequence[Any]], indexes: Sequence[Index], keep: Keep | None = None
) -> list[KeyedEvent]:
    """Decode, upcast and key a batch, in commit order; key functions see every event (an Index must)."""
    out: list[KeyedEvent] = []
    append = out.append
    for row in rows:
        for route, event in events_of(binding, row):
            for slot in route.slots:
                key = key_of(slot, row, event, indexes[slot.index])
                if key is None or (keep is not None and not keep(slot.index, key, row)):
                    continue
                append(KeyedEvent(slot, key, row, event))
    return out


def initial_state(projection: Any) -> Any:
    """The state a key starts from."""
    return [0, projection.initial()] if tracks_version(projection) else projection.initial()


def evolve(slot: Slot, tracks: bool, current: Any, row: Sequence[Any], event: Any) -> Any:
    """One event applied to one key's state; returns the new state (a tracked state is updated in place)."""
    handler = slot.handler
    if tracks:
        info = EventInfo(row[0], row[1], row[2], row[7]) if slot.wants_info else None
        new = handler(current[1], event, info) if slot.wants_info else handler(current[1], event)
        if new is not None:
            current[1] = new
        current[0] = row[1]
        return current
    if slot.wants_info:
        new = handler(current, event, EventInfo(row[0], row[1], row[2], row[7]))
    else:
        new = handler(current, event)
    return current if new is None else new


def apply(keyed: Iterable[KeyedEvent], states: Sequence[dict[Any, Any]]) -> None:
    """Fold keyed events into ``states`` (one dict per bound projection, by key); a missing key starts fresh."""
    for slot, key, row, event in keyed:
        table = states[slot.index]
        projection = slot.projection
        tracks = tracks_version(projection)
        current = table.get(key)
        if current is None and key not in table:
            current = initial_state(projection)
        table[key] = evolve(slot, tracks, current, row, event)


# ====================================================================== replay
def replay(
    projections: Sequence[Projection], compiled: CompiledRegistry, rows: Iterable[Sequence[Any]]
) -> dict[str, list[tuple[Any, ...]]]:
    """Fold events into rows, sequentially and all in memory: the reference a rebuild must equal.

    ``rows`` are stored events as tuples in :class:`~eventmig.RecordedEvent`
    field order (what ``EventStore.read_all_rows`` yields), in commit order.
    Returns the rows of every table, keyed by table name. Meant for tests of
    projections and of the rebuilder, not for large stores.
    """
    folding = Replay(projections, compiled)
    for row in rows:
        folding.feed(row)
    return folding.rows()


class Replay:
    """The sequential fold behind :func:`replay`, fed one event at a time, its rows read at any point.

    ``keep(projection index, key, row)``, when given, says whether the
    event is folded into that key's state: the key function still runs on
    every event (a ``global_order`` projection's ``Index`` must see them
    all), but only kept keys hold a state, so a fold of a few keys over a
    whole epoch holds only theirs.
    """

    def __init__(self, projections: Sequence[Projection], compiled: CompiledRegistry, keep: Keep | None = None) -> None:
        self.binding = Binding(projections, compiled)
        self.states: list[dict[Any, Any]] = [{} for _ in self.binding.projections]
        self.indexes = [Index() for _ in self.binding.projections]
        self.keep = keep

    def feed(self, row: Sequence[Any]) -> None:
        apply(keyed_events(self.binding, (row,), self.indexes, self.keep), self.states)

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of every table as the states are now, keyed by table name."""
        out: dict[str, list[tuple[Any, ...]]] = {t.name: [] for p in self.binding.projections for t in p.tables}
        for projection, table in zip(self.binding.projections, self.states):
            for key, state in table.items():
                for name, produced in projection.rows_of(key, state).items():
                    out[name].extend(produced)
        return out
