"""The floors: hand-written loops on the bare drivers, with no eventmig machinery.

* ``copy``: read the legacy events in keyset pages, decode with msgspec,
  upcast by calling the reference service's step functions (imported from
  ``upcasters/``) by hand, renumber stream versions, encode, and write a new
  table (``executemany`` on SQLite; ``COPY`` on PostgreSQL, psycopg's bulk
  path and the one eventmig uses there), one transaction per page, indexes
  built at the end. It writes the same rows a migration writes, lineage
  metadata included, so it is the floor for ``migrate``.
* ``read``: read every event and decode its payload and metadata: the floor
  for ``verify``, which must at least do that to both sides.
* ``fold``: read, decode, upcast by hand and fold into the order-summary read
  model in memory, then bulk-write the rows: the floor for ``rebuild``.

Two more cases bound what any implementation could do on this machine:

* ``write``: only the store's side of ``copy``: the same target rows, computed
  before the clock starts, written with the same bulk path and indexed. No
  reading, no decoding, no upcasting: the serial part of a copy-transform
  into one SQLite file (one writer at a time) or one PostgreSQL table (its
  server does the inserting), so no copy-transform can beat it.
* ``fold2``: ``fold`` in two processes, each reading and folding the orders
  of its half of the streams (the database leaves the other half out, as a
  rebuild's workers do: on SQLite by name, below or above the median of
  sampled names; on PostgreSQL by ``hashtext``), then writing its rows: the
  floor for a rebuild with two workers.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from . import readmodel

BATCH = 5000
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
_to_builtins = msgspec.to_builtins


# --------------------------------------------------------------- hand upcasting
def hand_upcasters() -> dict[tuple[str, int], Callable[[bytes], list[tuple[str, int, Any, tuple[str, ...]]]]]:
    """(type, version) -> function(payload bytes) -> [(head type, head version, head payload, chain)].

    The step functions are the reference service's own; only the plumbing
    between them (decode, call, convert, re-encode) is written out here.
    """
    import upcasters
    from upcasters.customers import CustomerRegistered
    from upcasters.orders import (
        ItemAddedV1,
        OrderCancelled,
        OrderPlaced,
        OrderPlacedV1,
        OrderShippedV1,
        PaymentCaptured,
        address_out_of_shipment,
        item_added_is_a_line_item,
        order_total_in_cents,
    )

    steps = upcasters.registry.steps
    placed_v2_to_v3 = steps[("OrderPlaced", 2)].fn  # the `fields` helper: currency defaults to EUR
    customer_v1_to_v2 = steps[("CustomerRegistered", 1)].fn  # `fields`: name -> full_name, opt-in default
    placed_v1 = msgspec.json.Decoder(OrderPlacedV1).decode
    item_v1 = msgspec.json.Decoder(ItemAddedV1).decode
    shipped_v1 = msgspec.json.Decoder(OrderShippedV1).decode
    heads = {
        ("OrderPlaced", 3): msgspec.json.Decoder(OrderPlaced).decode,
        ("CustomerRegistered", 2): msgspec.json.Decoder(CustomerRegistered).decode,
        ("OrderCancelled", 1): msgspec.json.Decoder(OrderCancelled).decode,
        ("PaymentCaptured", 1): msgspec.json.Decoder(PaymentCaptured).decode,
    }
    n_total, n_fields3 = "upcasters.orders.order_total_in_cents", "fields OrderPlaced v2 -> v3"
    n_item, n_ship = "upcasters.orders.item_added_is_a_line_item", "upcasters.orders.address_out_of_shipment"
    n_cust, n_drop = "fields CustomerRegistered v1 -> v2", "drop CartViewed v1"

    def placed_1(data: bytes) -> list:
        return [("OrderPlaced", 3, placed_v2_to_v3(_to_builtins(order_total_in_cents(placed_v1(data)))), (n_total, n_fields3))]

    def placed_2(data: bytes) -> list:
        return [("OrderPlaced", 3, placed_v2_to_v3(_decode(data)), (n_fields3,))]

    def item_1(data: bytes) -> list:
        return [("LineItemAdded", 1, item_added_is_a_line_item(item_v1(data)), (n_item,))]

    def shipped_1(data: bytes) -> list:
        address, shipped = address_out_of_shipment(shipped_v1(data))
        return [("ShippingAddressRecorded", 1, address, (n_ship,)), ("OrderShipped", 2, shipped, (n_ship,))]

    def customer_1(data: bytes) -> list:
        return [("CustomerRegistered", 2, customer_v1_to_v2(_decode(data)), (n_cust,))]

    def dropped(data: bytes) -> list:
        return []

    def head(node: tuple[str, int]) -> Callable[[bytes], list]:
        decode = heads[node]
        return lambda data: [(node[0], node[1], decode(data), ())]

    table: dict[tuple[str, int], Callable[[bytes], list]] = {
        ("OrderPlaced", 1): placed_1,
        ("OrderPlaced", 2): placed_2,
        ("ItemAdded", 1): item_1,
        ("OrderShipped", 1): shipped_1,
        ("CustomerRegistered", 1): customer_1,
        ("CartViewed", 1): dropped,
    }
    for node in heads:
        table[node] = head(node)
    del n_drop
    return table


def _split_id(event_id: str, index: int) -> str:
    h = hashlib.blake2b(f"{event_id}/{index}".encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


# ----------------------------------------------------------------- the drivers
class _Driver:
    """Just enough of each DB-API driver: keyset-paged reads, one transaction per write."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(target, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.ph = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
            self.ph = "%s"

    def pages(self, columns: str, batch: int = BATCH, where: str = "") -> Iterator[list[tuple[Any, ...]]]:
        sql = (
            f"SELECT global_position, {columns} FROM events WHERE global_position > {self.ph} {where} "
            f"ORDER BY global_position LIMIT {self.ph}"
        )
        position = -1
        while True:
            rows = self.conn.execute(sql, (position, batch)).fetchall()
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            position = rows[-1][0]

    def write(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], types: list[str] | None = None
    ) -> None:
        """One transaction of rows; on PostgreSQL a binary COPY when the column types are given (as eventmig's)."""
        if self.kind == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows
            )
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction(), self.conn.cursor() as cur:
                binary = " (FORMAT BINARY)" if types else ""
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{binary}") as copy:
                    if types:
                        copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    def close(self) -> None:
        self.conn.close()


_EVENT_COLUMNS = ("stream", "version", "event_id", "type", "data", "metadata", "recorded_at")
_EVENT_TYPES = ["text", "int8", "text", "text", "bytea", "bytea", "int8"]


def _create_copy_table(db: _Driver, kind: str) -> None:
    big, blob = ("BIGINT", "BYTEA") if kind == "postgres" else ("INTEGER", "BLOB")
    serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if kind == "postgres" else "INTEGER PRIMARY KEY"
    db.execute("DROP TABLE IF EXISTS events_raw")
    db.execute(
        f"CREATE TABLE events_raw (global_position {serial}, stream TEXT NOT NULL, version {big} NOT NULL, "
        f"event_id TEXT NOT NULL, type TEXT NOT NULL, data {blob} NOT NULL, metadata {blob} NOT NULL, "
        f"recorded_at {big} NOT NULL)"
    )


def _index_copy_table(db: _Driver) -> None:
    db.execute("CREATE UNIQUE INDEX events_raw_stream_version ON events_raw (stream, version)")
    db.execute("CREATE UNIQUE INDEX events_raw_event_id ON events_raw (event_id)")


def copy(kind: str, target: str) -> dict[str, Any]:
    """Copy-transform the events table into ``events_raw``; the floor for migrate."""
    db = _Driver(kind, target)
    _create_copy_table(db, kind)
    started = time.perf_counter()
    read = written = 0
    for page_read, out in _transformed_pages(db):
        read += page_read
        written += len(out)
        db.write("events_raw", _EVENT_COLUMNS, out, _EVENT_TYPES)
    _index_copy_table(db)
    seconds = time.perf_counter() - started
    db.close()
    return {"events_read": read, "seconds": seconds, "events_written": written}


def write(kind: str, target: str) -> dict[str, Any]:
    """Only the writing of ``copy``: its rows made before the clock starts; the ceiling of migrate."""
    db = _Driver(kind, target)
    _create_copy_table(db, kind)
    pages = list(_transformed_pages(db))
    started = time.perf_counter()
    for _read, out in pages:
        db.write("events_raw", _EVENT_COLUMNS, out, _EVENT_TYPES)
    _index_copy_table(db)
    seconds = time.perf_counter() - started
    db.close()
    return {"events_read": sum(r for r, _ in pages), "seconds": seconds, "events_written": sum(len(o) for _, o in pages)}


def _transformed_pages(db: _Driver) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """(source events read, target rows) per page of the source, upcast by hand and renumbered."""
    table = hand_upcasters()
    last_versions: dict[str, int] = {}
    for rows in db.pages(", ".join(("stream", "version", "event_id", "type", "data", "metadata", "recorded_at"))):
        out = []
        append = out.append
        for position, stream, version, event_id, type_, data, metadata, recorded_at in rows:
            meta = _decode(metadata)
            schema_version = meta.pop("schema_version", 1)
            fn = table.get((type_, schema_version))
            outputs = fn(data) if fn is not None else [(type_, schema_version, _decode(data), ())]
            if not outputs:
                continue
            n = last_versions.get(stream, 0)
            count = len(outputs)
            for index, (t, v, payload, chain) in enumerate(outputs):
                n += 1
                m = dict(meta)
                m["schema_version"] = v
                m["eventmig"] = {
                    "source": {"epoch": 1, "stream": stream, "version": version, "position": position, "event_id": event_id},
                    "chain": list(chain),
                }
                append((stream, n, event_id if count == 1 else _split_id(event_id, index), t, _encode(payload), _encode(m), recorded_at))
            last_versions[stream] = n
        yield len(rows), out


def read(kind: str, target: str) -> dict[str, Any]:
    """Read and decode every event (payload and metadata); the floor for verify."""
    db = _Driver(kind, target)
    started = time.perf_counter()
    read = 0
    for rows in db.pages("data, metadata"):
        for _position, data, metadata in rows:
            _decode(data)
            _decode(metadata)
        read += len(rows)
    seconds = time.perf_counter() - started
    db.close()
    return {"events_read": read, "seconds": seconds}


#: the event types the order summary reads
_RELEVANT = ("OrderPlaced", "ItemAdded", "LineItemAdded", "PaymentCaptured", "OrderShipped", "OrderCancelled")


def fold(kind: str, target: str) -> dict[str, Any]:
    """Fold the events into the order summaries in memory, then bulk-write them; the floor for rebuild."""
    db = _Driver(kind, target)
    _create_summary_table(db, kind)
    started = time.perf_counter()
    read, rows = _fold(db, db.pages("type, data, metadata"))
    seconds = time.perf_counter() - started
    db.close()
    return {"events_read": read, "seconds": seconds, "rows": rows}


def fold2(kind: str, target: str) -> dict[str, Any]:
    """``fold`` in two processes, each over half of the streams; the floor for a rebuild with two workers."""
    db = _Driver(kind, target)
    _create_summary_table(db, kind)
    total = db.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    started = time.perf_counter()
    middle = _middle_stream(db) if kind == "sqlite" else None
    db.close()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        rows = pool.starmap(_fold_half, [(kind, target, 0, middle), (kind, target, 1, middle)])
    seconds = time.perf_counter() - started
    return {"events_read": total, "seconds": seconds, "rows": sum(rows)}


def _middle_stream(db: _Driver) -> str:
    """SQLite: the median of the stream names at 4,096 evenly spaced positions, where the halves' names meet
    (SQLite compares names itself; a hash would call back into Python for every row)."""
    low = db.conn.execute("SELECT min(global_position) FROM events").fetchone()[0]
    high = db.conn.execute("SELECT max(global_position) FROM events").fetchone()[0]
    step = max(1, (high - low + 1) // 4096)
    names = sorted(name for (name,) in db.conn.execute(
        "WITH RECURSIVE at(p) AS (SELECT ? UNION ALL SELECT p + ? FROM at WHERE p + ? <= ?) "
        "SELECT e.stream FROM at CROSS JOIN events AS e ON e.global_position = at.p", (low, step, step, high),
    ))
    return names[len(names) // 2]


def _fold_half(kind: str, target: str, half: int, middle: str | None) -> int:
    db = _Driver(kind, target)
    types = ", ".join(f"'{t}'" for t in _RELEVANT)
    if kind == "sqlite":
        quoted = "'" + (middle or "").replace("'", "''") + "'"
        where = f"AND type IN ({types}) AND stream {'<' if half == 0 else '>='} {quoted}"
    else:
        where = f"AND type IN ({types}) AND (hashtext(stream) & 2147483647) %% 2 = {half}"
        # the planner takes the filter for a rare one and would sort what is left of the table for every page
        # rather than walk the primary key: make it walk, in one process (autocommit: settings for the session)
        db.execute("SET enable_seqscan = off")
        db.execute("SET enable_bitmapscan = off")
        db.execute("SET max_parallel_workers_per_gather = 0")
    _read, rows = _fold(db, db.pages("type, data, metadata", where=where))
    db.close()
    return rows


def _create_summary_table(db: _Driver, kind: str) -> None:
    db.execute("DROP TABLE IF EXISTS order_summary_raw")
    db.execute((readmodel.POSTGRES_DDL if kind == "postgres" else readmodel.SQLITE_DDL).format(table="order_summary_raw"))


def _fold(db: _Driver, pages: Iterator[list[tuple[Any, ...]]]) -> tuple[int, int]:
    """Fold pages of (position, type, data, metadata) into order summaries and write them: (read, rows)."""
    table = hand_upcasters()
    relevant = set(_RELEVANT)
    status = readmodel.STATUS
    read = 0
    orders: dict[str, list[Any]] = {}
    for rows in pages:
        read += len(rows)
        for _position, type_, data, metadata in rows:
            if type_ not in relevant:
                continue  # the read model ignores it: no need to decode it
            schema_version = _decode(metadata).get("schema_version", 1)
            fn = table.get((type_, schema_version))
            if fn is None:
                continue
            for t, _v, e, _chain in fn(data):
                if t == "OrderPlaced":
                    if type(e) is dict:
                        orders[e["order_id"]] = [e["customer_id"], "placed", 0, e["total_cents"], e["currency"]]
                    else:
                        orders[e.order_id] = [e.customer_id, "placed", 0, e.total_cents, e.currency]
                elif t == "LineItemAdded":
                    orders[e.order_id][2] += e.quantity
                elif t in status:
                    orders[e.order_id][1] = status[t]
    rows_out = [(order_id, *row) for order_id, row in orders.items()]
    for start in range(0, len(rows_out), 50_000):
        db.write("order_summary_raw", readmodel.COLUMNS, rows_out[start:start + 50_000])
    return read, len(rows_out)
