"""A folder's states: loaded from and committed to the partitions' state tables, evicted from memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from eventmig.jobs.rebuild.units import UnitState, decode_key, encode_key
from eventmig.ports_readmodels import ReadModelSink, StateReader
from eventmig.projection.sentinels import _DELETED, _MISSING

#: states a worker holds that are not stored yet: past this many (or past a partition's cache size in one
#: partition) it commits before its batch is over, which bounds its memory whatever the batch size and however
#: many projections it folds
MAX_DIRTY_STATES = 100_000


class StateCache:
    """The states of a folder's units: in memory, least recently touched dropped past a partition's cache
    size, the others in the partitions' state tables (committed with their checkpoints)."""

    db: ReadModelSink
    states: dict[int, UnitState]
    _touched: dict[int, UnitState]
    _reader: StateReader

    def _fresh(self, state: UnitState, key: Any) -> Any:
        """The state of a key not in memory: stored earlier (evicted, or before a resume), or a new one."""
        if key in state.stored:  # maybe stored (or a rare false positive): ask the state table
            current = self._load_state(state, key)
            if current is not _MISSING:
                return current
        slots = state.slots
        current = [0, slots.initial()] if slots.tracks else slots.initial()
        state.cache[key] = current
        state.new_keys += 1
        return current

    def _load_state(self, state: UnitState, key: Any) -> Any:
        """The stored state of a key that is not in memory, or _MISSING if it has none (a new key)."""
        data = self._reader.get(state.unit.state_table, encode_key(key))
        if data is None:
            return _MISSING
        value = state.slots.decode(data)
        if state.slots.tracks:
            value = list(value)
        state.cache[key] = value
        return value

    def _remember_stored(self, state: UnitState) -> None:
        """After a resume: which keys (and index entries) the state table already holds."""
        stored = state.stored
        for text in self._reader.keys(state.unit.state_table):
            stored.add(("#", decode_key(text[1:])) if text[0] == "#" else decode_key(text))

    def _index_loader(self, state: UnitState) -> Callable[[Any], Any]:
        decode = msgspec.msgpack.decode

        def load(key: Any) -> Any:
            if ("#", key) not in state.stored:
                return _MISSING
            data = self._reader.get(state.unit.state_table, "#" + encode_key(key))
            return decode(data) if data is not None else _MISSING

        return load

    def _release_read_conn(self) -> None:
        self._reader.close()

    # ------------------------------------------------------------ committing
    def over_bound(self) -> bool:
        """Too many states not stored yet: in all (:data:`MAX_DIRTY_STATES`), or in one partition (more than
        its cache keeps: a projection with big states sets a small ``cache_size``)."""
        total = 0
        for state in self._touched.values():
            held = len(state.dirty)
            if held > state.slots.cap:
                return True
            total += held
        return total >= MAX_DIRTY_STATES

    def commit(self) -> None:
        """Store the states touched since the last commit with their partitions' checkpoints, atomically."""
        touched = list(self._touched.values())
        if not touched:
            return
        self._release_read_conn()  # SQLite: an open read transaction would block our own write
        encode_index = msgspec.msgpack.encode
        with self.db.write(durable=False) as conn:
            for state in touched:  # one partition's encoded states in memory at a time
                unit = state.unit
                encode = state.slots.encode
                cache = state.cache
                # in key order: the state table's B-tree takes them page after page
                items = sorted((encode_key(k), encode(cache[k])) for k in state.dirty)
                deleted: list[str] = []
                if state.index is not None and state.index._dirty:
                    for k, v in state.index._dirty.items():
                        if v is _DELETED:
                            deleted.append("#" + encode_key(k))
                        else:
                            items.append(("#" + encode_key(k), encode_index(v)))
                # no checkpoint yet: nothing was ever committed to the state table
                self.db.put_states(conn, unit.state_table, items, deleted, empty=unit.checkpoint is None)
                del items
                self.db.save_partition(conn, unit.run.id, unit.partition, progress=state.progress())
        for state in touched:
            unit = state.unit
            unit.checkpoint = state.pending_checkpoint
            unit.events += state.pending_events
            unit.keys += state.new_keys
            state.pending_events = state.new_keys = 0
            if state.index is not None:
                state.index._dirty.clear()
                data = state.index._data
                if len(data) > state.slots.cap:
                    for key in list(data)[: len(data) - (state.slots.cap * 3) // 4]:
                        del data[key]
                        state.stored.add(("#", key))
            self._evict(state)
        self._touched.clear()

    def _evict(self, state: UnitState) -> None:
        cache = state.cache
        for key in state.dirty:  # least recently touched first: move this batch's keys to the end
            cache[key] = cache.pop(key)
        state.dirty.clear()
        cap = state.slots.cap
        if len(cache) > cap:
            drop = len(cache) - (cap * 3) // 4
            victims = []
            for key in cache:
                victims.append(key)
                if len(victims) == drop:
                    break
            stored = state.stored
            for key in victims:
                del cache[key]
                stored.add(key)

    def mark_folded(self) -> None:
        if all(state.unit.folded for state in self.states.values()):
            return
        with self.db.write(durable=False) as conn:
            for state in self.states.values():
                unit = state.unit
                if unit.folded:
                    continue
                unit.folded = True
                self.db.save_partition(conn, unit.run.id, unit.partition, status="folded")
