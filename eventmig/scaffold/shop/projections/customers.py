"""Lifetime figures per customer, across all their orders."""

from __future__ import annotations

import msgspec

from eventmig import Index, Projection
from upcasters.customers import CustomerRegistered
from upcasters.orders import OrderCancelled, OrderPlaced, OrderShipped, PaymentCaptured

from .tables import customer_totals_table


class CustomerTotals(msgspec.Struct):
    customer_id: str = ""
    name: str = ""
    email: str = ""
    orders: int = 0
    shipped: int = 0
    cancelled: int = 0
    ordered_cents: int = 0
    paid_cents: int = 0
    last_order_at: str = ""


def customer_of(e: object, open_orders: Index) -> str | None:
    """The customer an event is about. Payments, shipments and cancellations name only the
    order, so the customer of every open order is remembered until the order closes."""
    if type(e) is OrderPlaced:
        open_orders[e.order_id] = e.customer_id
        return e.customer_id
    if type(e) is CustomerRegistered:
        return e.customer_id
    order_id = e.order_id  # type: ignore[attr-defined]
    if type(e) is PaymentCaptured:
        return open_orders.get(order_id)
    return open_orders.pop(order_id)  # shipped or cancelled: the order is closed


# one global order: an order's customer must be known before its payment is counted
customer_totals = Projection(
    "customer_totals", version=1, tables=[customer_totals_table], state=CustomerTotals, key=customer_of,
    global_order=True,
)


@customer_totals.on(CustomerRegistered)
def _registered(c: CustomerTotals, e: CustomerRegistered) -> None:
    c.customer_id, c.name, c.email = e.customer_id, e.full_name, e.email


@customer_totals.on(OrderPlaced)
def _ordered(c: CustomerTotals, e: OrderPlaced) -> None:
    c.customer_id = e.customer_id
    c.orders += 1
    c.ordered_cents += e.total_cents
    c.last_order_at = max(c.last_order_at, e.placed_at)


@customer_totals.on(PaymentCaptured)
def _paid(c: CustomerTotals, e: PaymentCaptured) -> None:
    c.paid_cents += e.amount_cents


@customer_totals.on(OrderShipped)
def _shipped(c: CustomerTotals, e: OrderShipped) -> None:
    c.shipped += 1


@customer_totals.on(OrderCancelled)
def _cancelled(c: CustomerTotals, e: OrderCancelled) -> None:
    c.cancelled += 1


@customer_totals.rows
def _customer_rows(customer_id: str, c: CustomerTotals) -> list[tuple]:
    return [(customer_id, c.name, c.email, c.orders, c.shipped, c.cancelled, c.ordered_cents, c.paid_cents, c.last_order_at)]
