"""The projection API: declaring, binding to a registry, and the sequential reference fold."""

from __future__ import annotations

import uuid

import msgspec
import pytest
import sqlalchemy as sa

import projections as shop
from eventmig import Registry
from eventmig.config import Settings, load_projections
from eventmig.errors import ConfigError
from eventmig.projection.api import STREAM, EventInfo, Index, Projection, Snapshots
from eventmig.projection.binding import Binding
from eventmig.projection.fold import replay
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store
from eventmig.model.records import TargetEvent
from upcasters.orders import LineItemAdded, OrderPlaced, OrderPlacedV2

_encode = msgspec.json.Encoder().encode


def row(stream: str, version: int, position: int, type_: str, data: dict, schema_version: int = 1) -> tuple:
    meta = {"schema_version": schema_version} if schema_version > 1 else {}
    return (stream, version, position, str(uuid.uuid4()), type_, _encode(data), _encode(meta), 1_000 + position)


def table(name: str, *columns: sa.Column) -> sa.Table:
    return sa.Table(name, sa.MetaData(), sa.Column("key", sa.Text, primary_key=True), *columns)


def test_handlers_see_head_structs_even_for_legacy_events(shop_registry):
    seen = []
    counts = Projection("counts", version=1, tables=[table("counts", sa.Column("n", sa.Integer))], state=int,
                        initial=lambda: 0, key="order_id")

    @counts.on(OrderPlaced)
    def placed(n: int, e: OrderPlaced) -> int:
        seen.append(e)
        return n + 1

    @counts.on("LineItemAdded")
    def item(n: int, e: LineItemAdded, info: EventInfo) -> int:
        seen.append(info)
        return n + e.quantity

    counts.rows(lambda key, n: [(key, n)])
    rows = [
        row("order-a", 1, 1, "OrderPlaced", {"order_id": "a", "customer_id": "c", "total": 1.5, "placed_at": "t", "channel": "web"}),
        row("order-a", 2, 2, "ItemAdded", {"order_id": "a", "sku": "s", "name": "n", "qty": 2, "price": 1.0}),
        row("order-a", 3, 3, "CartViewed", {"order_id": "a", "session_id": "s", "page": "/", "user_agent": "u"}),
        row("order-b", 1, 4, "OrderPlaced", {"order_id": "b", "customer_id": "c", "total_cents": 7, "placed_at": "t",
                                             "channel": "web", "currency": "SEK"}, 3),
    ]
    assert replay([counts], shop_registry, rows) == {"counts": [("a", 3), ("b", 1)]}
    assert seen[0] == OrderPlaced("a", "c", 150, "t", "web", "EUR")  # v1 upcast: cents, default currency
    assert seen[1] == EventInfo("order-a", 2, 2, 1002)
    assert seen[2].currency == "SEK"


def test_types_without_a_schema_arrive_as_dicts(shop_registry):
    notes = Projection("notes", version=1, tables=[table("notes", sa.Column("text", sa.Text))], state=str,
                       initial=str, key="ticket")
    notes.on("TicketNoted")(lambda s, e: s + e["text"])
    notes.rows(lambda key, s: [(key, s)])
    rows = [row("t-1", 1, 1, "TicketNoted", {"ticket": "1", "text": "a"}), row("t-1", 2, 2, "TicketNoted", {"ticket": "1", "text": "b"})]
    assert replay([notes], shop_registry, rows) == {"notes": [("1", "ab")]}


def test_rows_as_dicts_or_per_table():
    t1 = table("t1", sa.Column("v", sa.Integer))
    t2 = table("t2", sa.Column("w", sa.Text))
    p = Projection("two", version=1, tables=[t1, t2], state=int, initial=int)
    p.rows(lambda key, s: {"t1": [{"v": s, "key": key}], "t2": [(key, "x")]})
    assert p.rows_of("k", 3) == {"t1": [("k", 3)], "t2": [("k", "x")]}
    p.rows(lambda key, s: [(key, s)])
    with pytest.raises(ConfigError, match="several tables"):
        p.rows_of("k", 3)
    one = Projection("one", version=1, tables=[t1], state=int, initial=int)
    one.rows(lambda key, s: [(key,)])
    with pytest.raises(ConfigError, match="1 values for 2 columns"):
        one.rows_of("k", 1)
    one.rows(lambda key, s: [{"key": key}])
    with pytest.raises(ConfigError, match="lacks column 'v'"):
        one.rows_of("k", 1)


def test_declaration_errors_are_caught_early(shop_registry):
    t = table("t", sa.Column("v", sa.Integer))
    with pytest.raises(ConfigError, match="identifier"):
        Projection("no good", version=1, tables=[t], state=int)
    with pytest.raises(ConfigError, match="version"):
        Projection("p", version=0, tables=[t], state=int)
    with pytest.raises(ConfigError, match="primary key"):
        Projection("p", version=1, tables=[sa.Table("nokey", sa.MetaData(), sa.Column("v", sa.Integer))], state=int)
    with pytest.raises(ConfigError, match="global_order"):
        Projection("p", version=1, tables=[t], state=int, key=lambda e, index: None)
    p = Projection("p", version=1, tables=[t], state=int)
    p.on(OrderPlaced)(lambda s, e: s)
    with pytest.raises(ConfigError, match="two handlers"):
        p.on(OrderPlaced)(lambda s, e: s)
    twice = Projection("twice", version=1, tables=[table("t2")], state=int)
    twice.on(OrderPlaced)(lambda s, e: s)
    twice.on("OrderPlaced")(lambda s, e: s)
    with pytest.raises(ConfigError, match="two handlers for OrderPlaced"):
        Binding([twice], shop_registry)
    old = Projection("old", version=1, tables=[t], state=int)
    old.on(OrderPlacedV2)(lambda s, e: s)
    with pytest.raises(ConfigError, match="not the head schema"):
        Binding([old], shop_registry)
    field = Projection("field", version=1, tables=[t], state=int, key="no_such_field")
    field.on(OrderPlaced)(lambda s, e: s)
    with pytest.raises(ConfigError, match="not a field"):
        Binding([field], shop_registry)
    with pytest.raises(ConfigError, match="handles no event type"):
        Binding([Projection("empty", version=1, tables=[t], state=int)], shop_registry)
    with pytest.raises(ConfigError, match="same table"):
        Binding([p, Projection("other", version=1, tables=[t], state=int)], shop_registry)


def test_global_order_index_remembers_across_keys(shop_registry):
    placed = {"customer_id": "c1", "total_cents": 100, "placed_at": "2024-01-01", "channel": "web", "currency": "EUR"}
    rows = [
        row("customer-c1", 1, 1, "CustomerRegistered", {"customer_id": "c1", "full_name": "Ada", "email": "a@x"}, 2),
        row("order-a", 1, 2, "OrderPlaced", {"order_id": "a", **placed}, 3),
        row("order-b", 1, 3, "OrderPlaced", {"order_id": "b", **placed, "total_cents": 50}, 3),
        row("order-a", 2, 4, "PaymentCaptured", {"order_id": "a", "amount_cents": 90, "method": "card", "captured_at": "t"}),
        row("order-b", 2, 5, "OrderCancelled", {"order_id": "b", "reason": "r", "cancelled_at": "t"}),
        row("order-a", 3, 6, "OrderShipped", {"order_id": "a", "carrier": "UPS", "shipped_at": "t"}, 2),
        row("order-b", 3, 7, "PaymentCaptured", {"order_id": "b", "amount_cents": 1, "method": "card", "captured_at": "t"}),
    ]
    (customer,) = replay([shop.customer_totals], shop_registry, rows)["customer_totals"]
    # the late payment of a closed order reaches nobody: its link was forgotten
    assert customer == ("c1", "Ada", "a@x", 2, 1, 1, 150, 90, "2024-01-01")


def test_index_mapping():
    from eventmig.projection.sentinels import _MISSING

    loaded = {"x": 1}
    index = Index(lambda k: loaded.get(k, _MISSING))
    assert index.get("x") == 1 and "x" in index and index["x"] == 1
    index["y"] = 2
    assert index.pop("y") == 2 and index.get("y") is None and "y" not in index
    with pytest.raises(KeyError):
        index["nothing"]


def test_snapshot_state_round_trip(shop_registry, sqlite_url):
    from projections.orders import Line, Order

    rows = [
        row("order-a", 1, 1, "OrderPlaced", {"order_id": "a", "customer_id": "c", "total_cents": 5, "placed_at": "t",
                                             "channel": "web", "currency": "GBP"}, 3),
        row("order-a", 2, 2, "LineItemAdded", {"order_id": "a", "sku": "s", "name": "n", "quantity": 2, "unit_price_cents": 3}),
    ]
    (snapshot,) = replay([shop.order_snapshots], shop_registry, rows)["order_snapshots"]
    aggregate_id, version, state, projection_version = snapshot
    assert (aggregate_id, version, projection_version) == ("order-a", 2, 1)
    assert shop.order_snapshots.decode_state(state) == Order("a", "c", "placed", "GBP", 5, [Line("s", 2, 3)])


def test_load_projections_from_settings(tmp_path):
    settings = Settings(projections="projections:projections")
    assert [p.name for p in load_projections(settings)] == ["order_summary", "customer_totals", "order_snapshots"]
    with pytest.raises(ConfigError, match="no projections configured"):
        load_projections(Settings(projections=None))
    with pytest.raises(ConfigError, match="not a list"):
        load_projections(Settings(projections="projections:order_summary"))
    with pytest.raises(ConfigError, match="not projections"):
        load_projections(Settings(projections="eventmig.projection.api:__all__"))


def test_keys_may_be_ints_and_state_dicts(sqlite_url):
    registry = Registry()
    counter = Projection("per_bucket", version=1, tables=[sa.Table("per_bucket", sa.MetaData(),
                         sa.Column("bucket", sa.Integer, primary_key=True), sa.Column("seen", sa.Text))],
                         initial=dict, state_type=dict[str, int], key=lambda e: e["n"] % 5)

    @counter.on("Tick")
    def tick(s: dict, e: dict) -> dict:
        s[e["who"]] = s.get(e["who"], 0) + 1
        return s

    counter.rows(lambda bucket, s: [(bucket, ",".join(f"{k}={v}" for k, v in sorted(s.items())))])
    events = [TargetEvent(f"t-{i % 7}", i // 7 + 1, str(uuid.uuid4()), "Tick", _encode({"n": i, "who": "ab"[i % 2]}), b"{}", 0)
              for i in range(200)]
    with open_store(sqlite_url) as store:
        store.write_batch(events)
        compiled = registry.compile()
        expected = replay([counter], compiled, [r for b in store.read_all_rows() for r in b])["per_bucket"]
        report = rebuild(store, [counter], registry=registry, read_models=sqlite_url, workers=2, batch_size=30)
        assert report.ok and report.projections[0].tables[0].rows == len(expected) == 5
    with ReadModelDB(sqlite_url) as db, db.read() as conn:
        got = sorted(tuple(r) for r in conn.exec_driver_sql("SELECT bucket, seen FROM per_bucket"))
    assert got == sorted(expected)


def test_stream_key_and_snapshots_are_partitionable():
    assert shop.order_summary.key is STREAM and not shop.order_summary.global_order
    assert isinstance(shop.order_snapshots, Snapshots) and shop.order_snapshots.key is STREAM
    assert shop.customer_totals.global_order
