"""The order-summary read model every rebuild case produces: one row per order.

Columns: order id, customer id, status, item count (units over all line
items), total in cents, currency. The eventmig projection, the raw fold and
the ``eventsourcing`` projection all compute these same rows from the same
events; only the machinery around the fold differs.
"""

from __future__ import annotations

#: status after each event that changes it
STATUS = {
    "OrderPlaced": "placed",
    "PaymentCaptured": "paid",
    "OrderShipped": "shipped",
    "OrderCancelled": "cancelled",
}

COLUMNS = ("order_id", "customer_id", "status", "item_count", "total_cents", "currency")

SQLITE_DDL = (
    "CREATE TABLE {table} (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL, "
    "item_count INTEGER NOT NULL, total_cents INTEGER NOT NULL, currency TEXT NOT NULL)"
)
POSTGRES_DDL = (
    "CREATE TABLE {table} (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, status TEXT NOT NULL, "
    "item_count BIGINT NOT NULL, total_cents BIGINT NOT NULL, currency TEXT NOT NULL)"
)
