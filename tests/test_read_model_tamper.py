"""A hand-edited row of a live read model is caught however many events are appended meanwhile.

A rebuild of unchanged code may swap in rows that differ from the live ones
only where the events appended since the live tables were built explain the
difference: the rows those events' keys had then must be the live rows.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa

import projections as shop
from eventmig.jobs.seed import seed
from eventmig.projection.api import Projection
from eventmig.jobs.rebuild import rebuild
from eventmig.ports import EventStore
from eventmig.model.records import TargetEvent
from upcasters.orders import OrderPlaced

_encode = msgspec.json.Encoder().encode

_LATE_ORDER = {"order_id": "late", "customer_id": "c", "total_cents": 5, "placed_at": "t", "channel": "web",
               "currency": "EUR"}


def _append_late_order(store: EventStore) -> None:
    store.write_batch([TargetEvent("order-late", 1, "late-order", "OrderPlaced", _encode(_LATE_ORDER),
                                   _encode({"schema_version": 3}), 1_700_000_000_000_000)])


def _append_item(store: EventStore, order_id: str) -> None:
    """One more line item on an order: its row in order_summary changes."""
    stream = f"order-{order_id}"
    item = {"order_id": order_id, "sku": "SKU-1", "name": "late item", "quantity": 2, "unit_price_cents": 100}
    store.write_batch([TargetEvent(stream, store.stream_version(stream) + 1, "late-item",  # type: ignore[operator]
                                   "LineItemAdded", _encode(item), b"{}", 1_700_000_000_000_000)])


def _execute(store: EventStore, sql: str, *params: object) -> None:
    with store.engine.begin() as c:  # type: ignore[attr-defined]
        c.exec_driver_sql(store._q(sql), params)  # type: ignore[attr-defined]


def _first(store: EventStore, sql: str) -> str:
    with store.engine.connect() as c:  # type: ignore[attr-defined]
        return c.exec_driver_sql(sql).scalar()


def _tamper_order_summary(store: EventStore, order_id: str) -> None:
    _execute(store, "UPDATE order_summary SET status = 'lost' WHERE order_id = ?", order_id)


def _some_order(store: EventStore) -> str:
    return _first(store, "SELECT order_id FROM order_summary ORDER BY order_id LIMIT 1")


def _spend_per_customer() -> Projection:
    """Keyed by a field of the event, not its stream, and with a decimal column: PostgreSQL rounds the floats
    written into it and gives back Decimals, so rows made in memory digest differently from the stored ones."""
    table = sa.Table("customer_spend", sa.MetaData(), sa.Column("customer_id", sa.Text, primary_key=True),
                     sa.Column("euros", sa.Numeric(14, 4), nullable=False),
                     sa.Column("orders", sa.BigInteger, nullable=False))

    class Spend(msgspec.Struct):
        euros: float = 0.0
        orders: int = 0

    spend = Projection("customer_spend", version=1, tables=[table], state=Spend, key="customer_id")

    @spend.on(OrderPlaced)
    def placed(s: Spend, e: OrderPlaced) -> None:
        s.euros += e.total_cents / 3  # thirds: more decimals than the column keeps
        s.orders += 1

    @spend.rows
    def rows(customer_id: str, s: Spend) -> list[tuple]:
        return [(customer_id, s.euros, s.orders)]

    return spend


def test_a_hand_edited_read_model_row_is_caught_after_an_unrelated_append(store: EventStore, store_url, shop_registry):
    seed(store, 800)
    assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2).swapped
    _tamper_order_summary(store, _some_order(store))
    _append_late_order(store)  # another stream: it explains the new row, not the edited one
    report = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2,
                     swap=False)
    assert not report.ok and not report.swapped
    assert "appended" in report.problems[0] and "explain" in report.problems[0], report.problems
    swapped = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2)
    assert not swapped.ok and not swapped.swapped


@pytest.mark.parametrize("one_by_one", [True, False], ids=["touched streams read one by one", "the epoch scanned"])
def test_an_append_to_the_edited_rows_own_stream_does_not_excuse_it(store: EventStore, store_url, shop_registry,
                                                                    monkeypatch, one_by_one):
    import eventmig.jobs.appended

    if not one_by_one:
        monkeypatch.setattr(eventmig.jobs.appended, "STREAMS_READ_ONE_BY_ONE", 0)
    seed(store, 800)
    assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2).swapped
    order_id = _some_order(store)
    _tamper_order_summary(store, order_id)
    _append_item(store, order_id)  # explains a change of that row, but not the edit
    report = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2,
                     swap=False)
    assert not report.ok and "explain" in report.problems[0], report.problems



@pytest.mark.parametrize("one_by_one", [True, False], ids=["touched streams read one by one", "the epoch scanned"])
def test_an_append_to_an_orders_own_stream_is_explained_and_swapped_in(store: EventStore, store_url, shop_registry,
                                                                      monkeypatch, one_by_one):
    import eventmig.jobs.appended

    if not one_by_one:
        monkeypatch.setattr(eventmig.jobs.appended, "STREAMS_READ_ONE_BY_ONE", 0)
    seed(store, 800)
    assert rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2).swapped
    order_id = _some_order(store)
    _append_item(store, order_id)
    _append_late_order(store)
    report = rebuild(store, [shop.order_summary], registry=shop_registry, read_models=store_url, workers=2)
    assert report.ok and report.swapped, report.problems
    (t,) = report.projections[0].tables
    assert (t.added, t.removed, t.changed) == (1, 0, 1)
    assert any("from events appended after position 800" in n for n in report.notes)


@pytest.mark.parametrize("projection", ["customer_totals", "customer_spend"], ids=["global order", "field key"])
def test_keys_that_are_not_streams_are_held_to_the_appended_events_too(store: EventStore, store_url, shop_registry,
                                                                      projection):
    chosen = shop.customer_totals if projection == "customer_totals" else _spend_per_customer()
    seed(store, 800)
    assert rebuild(store, [chosen], registry=shop_registry, read_models=store_url, workers=2).swapped
    customer = _first(store, f"SELECT customer_id FROM {projection} ORDER BY customer_id LIMIT 1")
    _append_late_order(store)  # customer "c": a new row
    explained = rebuild(store, [chosen], registry=shop_registry, read_models=store_url, workers=2)
    assert explained.ok and explained.swapped, explained.problems

    _execute(store, f"UPDATE {projection} SET orders = orders + 1 WHERE customer_id = ?", customer)
    late = dict(_LATE_ORDER, order_id="later")
    store.write_batch([TargetEvent("order-later", 1, "later-order", "OrderPlaced", _encode(late),
                                   _encode({"schema_version": 3}), 1_700_000_000_000_000)])  # customer "c" again
    refused = rebuild(store, [chosen], registry=shop_registry, read_models=store_url, workers=2)
    assert not refused.ok and not refused.swapped and "explain" in refused.problems[0], refused.problems
