"""Order read model and the Order aggregate's snapshots."""

from __future__ import annotations

import msgspec

from eventmig import STREAM, Projection, Snapshots
from upcasters.orders import (
    LineItemAdded,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
    PaymentCaptured,
    ShippingAddressRecorded,
)

from .tables import order_summary_table


# ----------------------------------------------------------------- order summary
class OrderSummary(msgspec.Struct):
    order_id: str = ""
    customer_id: str = ""
    status: str = "new"
    item_count: int = 0
    total_cents: int = 0
    currency: str = ""


# keyed by stream: a worker skips other workers' orders without decoding them
order_summary = Projection(
    "order_summary", version=1, tables=[order_summary_table], state=OrderSummary, key=STREAM,
)


@order_summary.on(OrderPlaced)
def _placed(s: OrderSummary, e: OrderPlaced) -> None:
    s.order_id = e.order_id
    s.customer_id = e.customer_id
    s.status = "placed"
    s.total_cents = e.total_cents
    s.currency = e.currency


@order_summary.on(LineItemAdded)
def _item_added(s: OrderSummary, e: LineItemAdded) -> None:
    s.item_count += e.quantity


@order_summary.on(PaymentCaptured)
def _paid(s: OrderSummary, e: PaymentCaptured) -> None:
    s.status = "paid"


@order_summary.on(OrderShipped)
def _shipped(s: OrderSummary, e: OrderShipped) -> None:
    s.status = "shipped"


@order_summary.on(OrderCancelled)
def _cancelled(s: OrderSummary, e: OrderCancelled) -> None:
    s.status = "cancelled"


@order_summary.rows
def _summary_rows(stream: str, s: OrderSummary) -> list[tuple]:
    if not s.order_id:  # events of an order that was never placed: no summary
        return []
    return [(s.order_id, s.customer_id, s.status, s.item_count, s.total_cents, s.currency)]


# --------------------------------------------------------------- Order snapshots
class Line(msgspec.Struct, array_like=True):
    sku: str
    quantity: int
    unit_price_cents: int


class Address(msgspec.Struct):
    street: str
    city: str
    postcode: str


class Order(msgspec.Struct):
    """The Order aggregate's state, as the shop's domain code rehydrates it."""

    order_id: str = ""
    customer_id: str = ""
    status: str = "new"
    currency: str = "EUR"
    total_cents: int = 0
    lines: list[Line] = []
    paid_cents: int = 0
    payment_method: str | None = None
    address: Address | None = None
    carrier: str | None = None
    cancel_reason: str | None = None


order_snapshots = Snapshots("order_snapshots", Order, version=1)


@order_snapshots.on(OrderPlaced)
def _order_placed(o: Order, e: OrderPlaced) -> None:
    o.order_id, o.customer_id, o.status = e.order_id, e.customer_id, "placed"
    o.total_cents, o.currency = e.total_cents, e.currency


@order_snapshots.on(LineItemAdded)
def _line_added(o: Order, e: LineItemAdded) -> None:
    o.lines.append(Line(e.sku, e.quantity, e.unit_price_cents))


@order_snapshots.on(PaymentCaptured)
def _payment(o: Order, e: PaymentCaptured) -> None:
    o.paid_cents += e.amount_cents
    o.payment_method = e.method
    o.status = "paid"


@order_snapshots.on(ShippingAddressRecorded)
def _address(o: Order, e: ShippingAddressRecorded) -> None:
    o.address = Address(e.street, e.city, e.postcode)


@order_snapshots.on(OrderShipped)
def _order_shipped(o: Order, e: OrderShipped) -> None:
    o.status, o.carrier = "shipped", e.carrier


@order_snapshots.on(OrderCancelled)
def _order_cancelled(o: Order, e: OrderCancelled) -> None:
    o.status, o.cancel_reason = "cancelled", e.reason
