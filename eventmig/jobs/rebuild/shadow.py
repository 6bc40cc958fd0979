"""A folded partition's states become rows in the shadow tables, digested on the way."""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from eventmig.errors import EventmigError, first_line
from eventmig.jobs.rebuild.reports import RebuildFailed
from eventmig.jobs.rebuild.units import Scan, Unit, UnitState, decode_key
from eventmig.ports_readmodels import ReadModelSink, RowDigest
from eventmig.projection.api import Projection

#: states turned into rows at once when a partition is finished
_ROWS_PER_WRITE = 10_000


class ShadowRows:
    """Turns a finished partition's states into rows in its run's shadow tables, with its "done" mark, and
    keeps the digests of the rows written (:attr:`written`) so verification need not read them back."""

    db: ReadModelSink
    states: dict[int, UnitState]
    written: dict[tuple[str, str], RowDigest]
    _projections: dict[str, Projection]
    _touched: dict[int, UnitState]
    #: ends the state tables' read transaction (:class:`~eventmig.jobs.rebuild.states.StateCache`)
    _release_read_conn: Callable[[], None]

    # ------------------------------------------------------------ finishing
    def finish(self, scan: Scan) -> None:
        """Every unit of a scan has folded its events: their rows go into the shadow tables, with "done"
        marks and checkpoints, in one transaction.

        The states come from memory, where the latest ones are, and from the
        state tables only for keys no longer in memory; the states folded
        since the last commit are never written to a state table. Killed
        before this commits, a resumed rebuild starts again from the last
        commit.
        """
        states = [s for s in scan.states if not s.unit.folded]
        self._release_read_conn()
        # the rows of the states in memory are made (and digested) before the write transaction: SQLite's
        # writers take turns, so a worker holding the turn should only be inserting
        prepared = {id(state): self._prepare(state) for state in states}
        finished: list[Unit] = []
        with self.db.write(durable=False) as conn:
            for state in states:
                unit = state.unit
                if self._status(conn, unit) == "done":
                    continue
                finished.append(unit)
                cache = state.cache
                if state.stored.count:  # some states are only in the state table (evicted, or stored before a resume)
                    decode, tracks = state.slots.decode, state.slots.tracks
                    for batch in self.db.scan_states(conn, unit.state_table):
                        stored = []
                        for text, data in batch:
                            if text[0] == "#":
                                continue
                            key = decode_key(text)
                            if key not in cache:
                                stored.append((key, list(decode(data)) if tracks else decode(data)))
                        self._insert(conn, state, self._rows(state, stored))
                for tables in prepared.pop(id(state)):
                    self._insert(conn, state, tables, digested=True)
                self.db.save_partition(conn, unit.run.id, unit.partition, status="done", progress=state.progress())
        for unit in finished:
            self._wrote_partition(unit)
        for state in states:
            state.unit.folded = state.unit.done = True
            self._touched.pop(id(state), None)
            state.cache.clear()
            state.dirty.clear()

    def finalize(self, unit: Unit) -> None:
        """Turn a folded partition's states (all in its state table) into rows in the shadow tables, with its
        "done" mark, atomically."""
        if unit.done:
            return
        state = self.states[id(unit)]
        decode, tracks = state.slots.decode, state.slots.tracks
        self._release_read_conn()
        with self.db.write(durable=False) as conn:
            if self._status(conn, unit) == "done":
                return
            for batch in self.db.scan_states(conn, unit.state_table):
                self._insert(conn, state, self._rows(state, [
                    (decode_key(text), list(decode(data)) if tracks else decode(data))
                    for text, data in batch if text[0] != "#"
                ]))
            self.db.save_partition(conn, unit.run.id, unit.partition, status="done")
        self._wrote_partition(unit)
        unit.done = True
        state.cache.clear()

    def _status(self, conn: Any, unit: Unit) -> str:
        return self.db.partition_status(conn, unit.run.id, unit.partition)

    @staticmethod
    def _rows(state: UnitState, items: list[tuple[Any, Any]]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of these (key, state) pairs, per table."""
        projection = state.slots.projection
        try:
            return projection.rows_of_many(items) if items else {}
        except EventmigError:
            raise
        except Exception as exc:  # the projection's rows function failed: find the key, one at a time
            for key, value in items:
                try:
                    projection.rows_of(key, value)
                except Exception as failed:  # noqa: BLE001 - reported in one line
                    exc = failed
                    break
            else:
                key = None
            of = f" on key {key!r}" if key is not None else ""
            raise RebuildFailed(
                f"projection {projection.name}: rows function failed{of}: {type(exc).__name__}: {first_line(exc)}"
            ) from None

    def _prepare(self, state: UnitState) -> list[dict[str, list[tuple[Any, ...]]]]:
        """The rows of a unit's states in memory, in chunks, their digests taken (:attr:`written`)."""
        items = list(state.cache.items())
        try:  # in key order: rows keyed like their states then go into the shadow table's B-tree page by page
            items.sort(key=_first)
        except TypeError:  # keys of mixed kinds (str and int): any order will do
            pass
        chunks = []
        for start in range(0, len(items), _ROWS_PER_WRITE):
            tables = self._rows(state, items[start:start + _ROWS_PER_WRITE])
            self._digest(state, tables)
            chunks.append(tables)
        return chunks

    def _digest(self, state: UnitState, tables: dict[str, list[tuple[Any, ...]]]) -> None:
        projection = state.slots.projection
        for name, rows in tables.items():
            self._written(state.unit.run.id, name).add(table_named(projection, name), rows)

    def _insert(
        self, conn: Any, state: UnitState, tables: dict[str, list[tuple[Any, ...]]], *, digested: bool = False,
    ) -> None:
        """Bulk-write rows into the unit's shadow tables (and digest them, unless that is done)."""
        projection = state.slots.projection
        shadow = state.unit.run.tables
        if not digested:
            self._digest(state, tables)
        for name, rows in tables.items():
            try:
                self.db.bulk_insert(conn, shadow[name], self._columns(projection, name), rows)
            except EventmigError:
                raise
            except Exception as exc:
                if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                    raise RebuildFailed(
                        f"projection {projection.name}: two keys produced rows with the same primary key in "
                        f"{name}: {str(exc).splitlines()[0]}"
                    ) from None
                # a NULL in a NOT NULL column, text in a number column...: whose rows, into which table
                raise RebuildFailed(
                    f"projection {projection.name}: writing its rows into {name} failed: "
                    f"{type(exc).__name__}: {first_line(exc)}"
                ) from None

    def _written(self, run_id: str, name: str) -> RowDigest:
        digest = self.written.get((run_id, name))
        if digest is None:
            digest = self.written[(run_id, name)] = self.db.new_digest()
        return digest

    def _wrote_partition(self, unit: Unit) -> None:
        """Every row of this partition is in the shadow tables, committed, and in :attr:`written`."""
        for table in self._projections[unit.run.projection].tables:
            self._written(unit.run.id, table.name).partitions.append(unit.partition)

    @staticmethod
    def _columns(projection: Projection, name: str) -> list[str]:
        return [c.name for c in table_named(projection, name).columns]


_first = itemgetter(0)


def table_named(projection: Projection, name: str) -> sa.Table:
    return next(t for t in projection.tables if t.name == name)
