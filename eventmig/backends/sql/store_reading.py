"""Reading the SQL event store: a stream, the whole log in commit order, and its partitions.

Readers follow commit order from an opaque checkpoint; the migrate and
rebuild jobs cut the log into stream ranges of about equal size so workers
can read in parallel. Batches are fetched with keyset pagination.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import msgspec

from eventmig.model.events import RecordedEvent
from eventmig.backends.sql.engine import is_driver_error, store_error
from eventmig.model.records import StreamPartitions

#: stream names :meth:`SQLEventStore.stream_bounds` samples to cut name ranges of about equal events
BOUND_SAMPLES = 4096



class _RowFilter(msgspec.Struct, frozen=True):
    """The WHERE clause of a read of the log: its conditions, the values they bind, and whether it leaves rows out."""

    conditions: list[str]
    params: tuple[Any, ...]
    filtered: bool  # anything beyond the position range: PostgreSQL then gets planner hints

class StoreReading:
    """The read side of :class:`~eventmig.backends.sql.store.SQLEventStore`, which mixes this in."""

    def read_stream(self, stream: str, from_version: int | None = None, limit: int | None = None) -> list[RecordedEvent]:
        t = self._sql
        sql = f"SELECT {t.read} FROM {self._sql_table} WHERE {t.stream_is} AND {t.version} >= ? ORDER BY {t.version}"
        params: tuple[Any, ...] = (stream, from_version or 0)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._read() as c:
            return [RecordedEvent(*row) for row in self._decoded(c.exec_driver_sql(self._q(sql), params).fetchall())]

    def read_all(
        self, after: int | None = None, *, until: int | None = None, batch_size: int = 1000
    ) -> Iterator[list[RecordedEvent]]:
        for rows in self.read_all_rows(after, until=until, batch_size=batch_size):
            yield [RecordedEvent(*row) for row in rows]

    def read_all_rows(
        self,
        after: int | None = None,
        *,
        until: int | None = None,
        batch_size: int = 1000,
        streams: StreamPartitions | None = None,
        types: Collection[str] | None = None,
        lean: bool = False,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Like :meth:`read_all`, as raw tuples in :class:`RecordedEvent` field order (the fast path).

        ``streams`` and ``types`` are evaluated by the database, so rows left
        out are never fetched: on SQLite a stream's partition is the CRC-32 of
        its name (``eventmig_crc32``, a C function every connection knows), on
        PostgreSQL its ``hashtext``.
        """
        t = self._sql
        where = self._row_filter(until, types, streams)
        if where is None:
            return
        sql = self._q(
            f"SELECT {t.lean if lean else t.read} FROM {self._sql_table} WHERE {' AND '.join(where.conditions)} "
            f"ORDER BY {t.position} LIMIT ?"
        )
        # PostgreSQL guesses a filter on an expression keeps 0.5% of the rows, concludes that walking the
        # primary key until a page is full costs more than sorting the whole remaining range, and does
        # that for every page: make it walk the index, which is right whatever the filter keeps, in one
        # process (parallel workers merging their parts cost more than they save on a page)
        hints = (
            "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
            "set_config('max_parallel_workers_per_gather', '0', true)"
            if where.filtered and self.dialect == "postgresql" else None
        )
        position = after if after is not None else -1
        while True:
            params = (position,) + ((until,) if until is not None else ()) + where.params + (batch_size,)
            rows = self._fetch_page(sql, params, hints)
            if not rows:
                return
            yield self._decoded(rows)
            if len(rows) < batch_size:
                return
            position = rows[-1][2]

    def _row_filter(
        self, until: int | None, types: Collection[str] | None, streams: StreamPartitions | None
    ) -> _RowFilter | None:
        """The WHERE clause of a read of the log from a position; None when ``types`` names no type at all."""
        t = self._sql
        conditions = [f"{t.position} > ?"]
        extra: tuple[Any, ...] = ()
        if until is not None:
            conditions.append(f"{t.position} <= ?")
        if types is not None:
            names = sorted(set(types))
            if not names:
                return None
            if self.dialect == "postgresql":
                conditions.append(f"{t.type} = ANY(?)")
                extra += (names,)
            else:
                conditions.append(f"{t.type} IN ({', '.join('?' * len(names))})")
                extra += tuple(names)
        filtered = types is not None
        if streams is not None and len(streams.indexes) < streams.count:
            condition, values = self._streams_condition(streams)
            conditions.append(condition)
            extra += values
            filtered = True
        return _RowFilter(conditions, extra, filtered)

    def _streams_condition(self, streams: StreamPartitions) -> tuple[str, tuple[Any, ...]]:
        """The condition that keeps the rows of some stream partitions, and the values it binds."""
        t = self._sql
        if not streams.bounds:
            indexes = sorted(streams.indexes)
            wanted = f"= {indexes[0]}" if len(indexes) == 1 else f"IN ({', '.join(map(str, indexes))})"
            return f"{self._partition_sql(t.stream_text, streams.count)} {wanted}", ()
        # name ranges: compared where the rows are, with no call per row back into Python
        name = f'{t.stream_text} COLLATE "C"' if self.dialect == "postgresql" else t.stream_text
        ranges = []
        values: tuple[Any, ...] = ()
        for low, high in streams.ranges():
            parts = ([f"{name} >= ?"] if low is not None else []) + ([f"{name} < ?"] if high is not None else [])
            values += tuple(b for b in (low, high) if b is not None)
            ranges.append(" AND ".join(parts) or "1 = 1")
        return (ranges[0] if len(ranges) == 1 else "(" + " OR ".join(f"({r})" for r in ranges) + ")"), values

    def _fetch_page(self, sql: str, params: tuple[Any, ...], hints: str | None) -> list[tuple[Any, ...]]:
        """One page of rows, on a connection of its own, through the driver (binary results on PostgreSQL)."""
        try:
            with self.engine.connect() as c:
                driver = c.connection.driver_connection
                # PostgreSQL: binary results, so payloads arrive as bytes with no hex decoding
                cursor = driver.cursor(binary=True) if self.dialect == "postgresql" else driver.cursor()
                if hints is not None:
                    cursor.execute(hints)
                cursor.execute(sql, params)
                rows = cursor.fetchall()
                cursor.close()
                if self.dialect == "postgresql":
                    c.connection.driver_connection.rollback()
                return rows
        except Exception as exc:  # SQLAlchemy's errors, and raw driver errors outside its wrapping
            if is_driver_error(exc):
                raise store_error(exc, self.url) from None
            raise

    def _partition_sql(self, column: str, count: int) -> str:
        """The SQL expression of :meth:`stream_partition` (``count`` is an int, never user text).

        For a statement with parameters: psycopg reads a lone ``%`` as one.
        """
        if self.dialect == "postgresql":
            return f"((hashtext({column}) & 2147483647) %% {int(count)})"
        return f"(eventmig_crc32(CAST({column} AS BLOB)) % {int(count)})"

    def stream_partition(self, stream: str, count: int) -> int:
        if self.dialect != "postgresql":
            return super().stream_partition(stream, count)  # the CRC-32 eventmig_crc32 computes
        with self._read() as c:
            return int(c.exec_driver_sql(f"SELECT {self._partition_sql('%s', count)}", (stream,)).scalar())

    @property
    def stream_partitioning(self) -> str:
        return "postgresql-hashtext" if self.dialect == "postgresql" else "crc32"

    def stream_bounds(self, count: int) -> tuple[str, ...]:
        """SQLite: the names of streams at evenly spaced positions (:data:`BOUND_SAMPLES` of them, each
        found through the primary key), cut into ``count`` equal runs once sorted: each range then holds
        about as many events, give or take a percent or two. Its hash partitions call ``eventmig_crc32``
        back in Python for every event a rebuild's worker reads, which costs about a quarter of the read;
        a name range costs two string comparisons. PostgreSQL hashes names natively: ``()``."""
        if self.dialect == "postgresql" or count < 2:
            return ()
        table, position = self._sql_table, self._sql.position
        with self._read() as c:
            # two subqueries: SQLite answers a lone min() or max() from the primary key, both at once by a scan
            low, high = c.exec_driver_sql(
                f"SELECT (SELECT min({position}) FROM {table}), (SELECT max({position}) FROM {table})"
            ).fetchone()
            if low is None:
                return ()
            step = max(1, (high - low + 1) // BOUND_SAMPLES)
            names = sorted(c.exec_driver_sql(
                "WITH RECURSIVE at(position) AS (SELECT ? UNION ALL SELECT position + ? FROM at WHERE position + ? <= ?) "
                f"SELECT e.{self._sql.stream} FROM at CROSS JOIN {table} AS e ON e.{position} = at.position",
                (low, step, step, high),
            ).scalars())
        if len(names) < count:
            return ()
        return tuple(names[len(names) * i // count] for i in range(1, count))

    def position_after(self, after: int | None, count: int, *, until: int | None = None) -> int | None:
        p = self._sql.position
        bound = f" AND {p} <= ?" if until is not None else ""
        params: tuple[Any, ...] = (after if after is not None else -1,) + ((until,) if until is not None else ())
        table = self._sql_table
        with self._read() as c:
            position = c.exec_driver_sql(
                self._q(f"SELECT {p} FROM {table} WHERE {p} > ?{bound} ORDER BY {p} LIMIT 1 OFFSET ?"),
                params + (count - 1,),
            ).scalar()
            if position is None:
                position = c.exec_driver_sql(
                    self._q(f"SELECT max({p}) FROM {table} WHERE {p} > ?{bound}"), params
                ).scalar()
        return position

    def list_streams(self) -> Iterator[str]:
        with self._read() as c:
            name = self._sql.stream_text
            rows = c.exec_driver_sql(f"SELECT DISTINCT {name} FROM {self._sql_table} ORDER BY {name}").fetchall()
        return iter([r[0] for r in rows])

    def stream_version(self, stream: str) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(
                self._q(f"SELECT max({self._sql.version}) FROM {self._sql_table} WHERE {self._sql.stream_is}"), (stream,)
            ).scalar()

    def stream_versions(self) -> dict[str, int]:
        with self._read() as c:
            t = self._sql
            return dict(c.exec_driver_sql(
                f"SELECT {t.stream_text}, max({t.version}) FROM {self._sql_table} GROUP BY {t.stream_text}").fetchall())

    def head_position(self) -> int | None:
        with self._read() as c:
            return c.exec_driver_sql(f"SELECT max({self._sql.position}) FROM {self._sql_table}").scalar()

    def count_events(self, after: int | None = None, until: int | None = None) -> int:
        table = self._sql_table
        if after is None and self.dialect == "sqlite":
            # a bare count(*) walks the smallest index; a position range walks the whole table,
            # so count the tail after ``until`` (new events: usually few) and take it away
            with self._read() as c:
                total = c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                tail = 0 if until is None else c.exec_driver_sql(
                    f"SELECT count(*) FROM {table} WHERE {self._sql.position} > ?", (until,)
                ).scalar()
            return int(total or 0) - int(tail or 0)
        sql = f"SELECT count(*) FROM {table} WHERE {self._sql.position} > ?"
        params: tuple[Any, ...] = (after if after is not None else -1,)
        if until is not None:
            sql += f" AND {self._sql.position} <= ?"
            params += (until,)
        with self._read() as c:
            return int(c.exec_driver_sql(self._q(sql), params).scalar() or 0)
