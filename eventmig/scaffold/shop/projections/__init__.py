"""Projections of the reference "shop" service: read models and aggregate snapshots.

Service code, next to ``upcasters/``: eventmig finds the list below through
``pyproject.toml``::

    [tool.eventmig]
    projections = "projections:projections"

* ``order_summary``: one row per order (customer, status, units, total,
  currency), keyed by the order's stream;
* ``customer_totals``: lifetime figures per customer across all their
  orders; payments and cancellations name only the order, so it remembers
  which customer placed each open order, and declares ``global_order``;
* ``order_snapshots``: snapshots of the ``Order`` aggregate.

``eventmig rebuild`` replays the active epoch into them; events still at
older schema versions are upcast on the way, so the handlers only ever see
the head schemas of ``upcasters/``.
"""

from .customers import customer_totals
from .orders import order_snapshots, order_summary
from .tables import metadata

projections = [order_summary, customer_totals, order_snapshots]

__all__ = ["customer_totals", "metadata", "order_snapshots", "order_summary", "projections"]
