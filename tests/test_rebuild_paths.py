"""Every way an event reaches a handler in a rebuild gives what the sequential reference fold gives.

A rebuild settles the work per (stored type, schema version) once: head
events decoded straight into their Struct, plain upcaster chains run
directly, anything less plain through the registry's chains. This runs each
kind of step (typed, dict, context-taking, split, drop, a step returning a
dict for a Struct) and each kind of key (stream, field with an EventInfo,
function, global order, snapshots), with the schema version in metadata and
in the type name, in one process and in worker processes, against
:func:`eventmig.projection.fold.replay`.
"""

from __future__ import annotations

import uuid

import msgspec
import pytest
import sqlalchemy as sa

import eventmig.jobs.rebuild.workers as rebuild_workers
from eventmig import EventContext, Registry, emit
from eventmig.projection.api import STREAM, EventInfo, Index, Projection, Snapshots
from eventmig.projection.fold import replay
from eventmig.backends.sql.rowdigests import digest_table_rows
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store
from eventmig.model.records import TargetEvent

_encode = msgspec.json.Encoder().encode


def make_registry(location: str) -> Registry:
    r = Registry(version_location=location)

    @r.schema("Placed", 1)
    class PlacedV1(msgspec.Struct):
        order_id: str
        total: float

    @r.schema("Placed", 2)
    class Placed(msgspec.Struct):
        order_id: str
        cents: int
        note: str = ""

    @r.upcaster
    def cents(e: PlacedV1) -> Placed:
        return Placed(e.order_id, round(e.total * 100))

    @r.schema("Line", 2)
    class Line(msgspec.Struct):
        order_id: str
        quantity: int
        sku: str = "?"

    r.fields("Line", 1, rename={"qty": "quantity"})  # a dict step

    @r.schema("Note", 1)
    class NoteV1(msgspec.Struct):
        order_id: str
        text: str

    @r.schema("Note", 2)
    class Note(msgspec.Struct):
        order_id: str
        text: str
        stream: str

    @r.upcaster
    def where(e: NoteV1, context: EventContext) -> Note:  # takes the event's context
        return Note(e.order_id, e.text, context.stream)

    r.split("Combo", 1, into=[("Placed", 2), ("Line", 2)], fn=lambda d: [
        emit("Placed", 2, {"order_id": d["order_id"], "cents": d["cents"], "note": "combo"}),
        emit("Line", 2, {"order_id": d["order_id"], "quantity": d["qty"], "sku": "C"}),
    ])

    @r.schema("Odd", 1)
    class OddV1(msgspec.Struct):
        order_id: str
        n: int

    @r.schema("Odd", 2)
    class Odd(msgspec.Struct):
        order_id: str
        n: int

    @r.upcaster
    def odd(e: OddV1) -> Odd:
        return {"order_id": e.order_id, "n": e.n * 2}  # type: ignore[return-value]  # a dict for a Struct

    r.drop("Noise", 1)
    return r


def make_projections() -> list[Projection]:
    out = []

    def table(name: str, key: str, *columns: sa.Column) -> sa.Table:
        return sa.Table(name, sa.MetaData(), sa.Column(key, sa.Text, primary_key=True), *columns)

    class Order(msgspec.Struct):
        cents: int = 0
        items: int = 0
        notes: str = ""
        odd: int = 0

    by_stream = Projection("by_stream", version=1, state=Order, key=STREAM, tables=[table(
        "by_stream", "stream", sa.Column("cents", sa.BigInteger), sa.Column("items", sa.BigInteger),
        sa.Column("notes", sa.Text), sa.Column("odd", sa.BigInteger))])
    by_stream.on("Placed")(lambda s, e: setattr(s, "cents", s.cents + e.cents))
    by_stream.on("Line")(lambda s, e: setattr(s, "items", s.items + e.quantity))

    @by_stream.on("Note")
    def note(s: Order, e: object, info: EventInfo) -> None:
        s.notes += f"{e.text}@{info.stream}:{info.version};"  # type: ignore[attr-defined]

    by_stream.on("Odd")(lambda s, e: setattr(s, "odd", s.odd + e.n))
    by_stream.rows(lambda k, s: [(k, s.cents, s.items, s.notes, s.odd)])
    out.append(by_stream)

    by_order = Projection("by_order", version=1, state=Order, key="order_id", tables=[table(
        "by_order", "order_id", sa.Column("cents", sa.BigInteger), sa.Column("notes", sa.Text))])

    @by_order.on("Placed")
    def placed(s: Order, e: object, info: EventInfo) -> Order:
        return Order(s.cents + e.cents, s.items, s.notes + f"{info.position > 0}", s.odd)  # type: ignore[attr-defined]

    by_order.on("Line")(lambda s, e: None)
    by_order.rows(lambda k, s: [(k, s.cents, s.notes)])
    out.append(by_order)

    by_letter = Projection("by_letter", version=1, state=int, initial=lambda: 0, key=lambda e: e.order_id[-1],
                           tables=[table("by_letter", "letter", sa.Column("n", sa.BigInteger))])
    by_letter.on("Line", "Odd")(lambda n, e: n + 1)
    by_letter.rows(lambda k, n: [(k, n)])
    out.append(by_letter)

    def customer(e: object, index: Index) -> str | None:
        if type(e).__name__ == "Placed":
            index[e.order_id] = e.order_id[0]  # type: ignore[attr-defined]
        return index.get(e.order_id)  # type: ignore[attr-defined]

    ordered = Projection("ordered", version=1, state=int, initial=lambda: 0, key=customer, global_order=True,
                         tables=[table("ordered", "who", sa.Column("n", sa.BigInteger))])
    ordered.on("Placed", "Line", "Note")(lambda n, e: n + 1)
    ordered.rows(lambda k, n: [(k, n)])
    out.append(ordered)

    class Snap(msgspec.Struct):
        cents: int = 0
        lines: list[int] = []

    snaps = Snapshots("snaps", Snap, version=1)

    @snaps.on("Placed")
    def snap_placed(s: Snap, e: object) -> None:
        s.cents += e.cents  # type: ignore[attr-defined]

    @snaps.on("Line")
    def snap_line(s: Snap, e: object) -> None:
        s.lines.append(e.quantity)  # type: ignore[attr-defined]

    out.append(snaps)
    return out


def history(location: str) -> list[TargetEvent]:
    events = []
    versions: dict[str, int] = {}

    def add(stream: str, type_: str, version: int, data: dict) -> None:
        versions[stream] = versions.get(stream, 0) + 1
        if location.startswith("type-suffix"):
            stored, metadata = (type_ if version == 1 else f"{type_}.v{version}"), {"trace": stream}
        else:
            stored, metadata = type_, ({"schema_version": version} if version > 1 else {"trace": stream})
        events.append(TargetEvent(stream, versions[stream], str(uuid.uuid4()), stored, _encode(data),
                                  _encode(metadata), 1_700_000_000_000_000 + len(events)))

    for i in range(240):
        order = f"o{i % 23}{'abc'[i % 3]}"
        stream = f"order-{order}"
        kind = i % 9
        if kind == 0:
            add(stream, "Placed", 1, {"order_id": order, "total": i / 7})
        elif kind == 1:
            add(stream, "Placed", 2, {"order_id": order, "cents": i})
        elif kind == 2:
            add(stream, "Line", 1, {"order_id": order, "qty": i % 4})
        elif kind == 3:
            add(stream, "Line", 2, {"order_id": order, "quantity": 2, "sku": "s"})
        elif kind == 4:
            add(stream, "Note", 1, {"order_id": order, "text": f"n{i}"})
        elif kind == 5:
            add(stream, "Combo", 1, {"order_id": order, "cents": 3, "qty": 1})
        elif kind == 6:
            add(stream, "Odd", 1, {"order_id": order, "n": i})
        elif kind == 7:
            add(stream, "Noise", 1, {"x": i})
        else:
            add(stream, "Untyped", 1, {"order_id": order})  # no schema, no handler: skipped
    return events


@pytest.mark.parametrize("location", ["metadata:schema_version", "type-suffix:.v"])
def test_rebuilt_tables_equal_the_reference_fold_on_every_path(store_url, location, monkeypatch, tmp_path):
    registry = make_registry(location)
    compiled = registry.compile()
    projections = make_projections()
    tables = {t.name: t for p in projections for t in p.tables}
    with open_store(store_url) as store:
        store.write_batch(history(location))
        rows = [r for b in store.read_all_rows() for r in b]
        expected = {name: digest_table_rows(tables[name], produced)
                    for name, produced in replay(projections, compiled, rows).items()}
        assert all(replay(projections, compiled, rows).values())  # every projection produced rows
        for workers, fork in ((1, False), (3, False), (2, True)):
            monkeypatch.setattr(rebuild_workers, "FORK_MIN_EVENTS", 0 if fork else 10**9)
            report = rebuild(store, projections, registry=registry, read_models=f"sqlite:///{tmp_path}/rm-{workers}.db",
                             workers=workers, batch_size=37)
            assert report.ok, report.problems
            assert report.processes == (workers if fork else 0)
            assert {t.table: t.digest for p in report.projections for t in p.tables} == expected, (workers, fork)
