"""Baseline: the same shop history in the ``eventsourcing`` library, the way it does things.

* The events are domain event classes of ``Order`` and ``Customer``
  aggregates, stored as the library stores them (``StoredEvent``: originator
  UUID, version, topic, transcoded JSON state with its ISO timestamp) through
  its SQLite application recorder (``eventsourcing.sqlite``). Legacy payloads
  are written with the ``class_version`` the old code had (absent means 1),
  so reading them back goes through the library's own upcasting: the
  ``upcast_vX_vY`` static methods on the event classes, applied by its
  ``Mapper`` to the state before the event object is built. A renamed type
  (``ItemAdded`` -> ``LineItemAdded``) is an old topic registered to the new
  class (``register_topic``), the library's way of renaming. Its upcasting is
  one state in, one state out, so it cannot split ``OrderShipped`` v1 (the
  address becomes fields of ``OrderShipped`` v2) nor drop ``CartViewed`` (the
  projection ignores it): it does a little less work than eventmig here.
* The order summaries are a ``Projection`` into a materialised view (a
  ``SQLiteTrackingRecorder`` with an ``order_summary`` table, each event
  applied together with its tracking record in one transaction, as the
  library's projections do), run by its ``ProjectionRunner``. Both its
  databases use ``synchronous=NORMAL`` like eventmig's SQLite store (see
  :func:`same_durability_as_eventmig`), so the comparison is not one of fsyncs. The runner
  follows the application through a subscription, and the SQLite recorder
  has none (it raises ``NotImplementedError``), so the application recorder
  here adds a polling subscription built on the library's ``Subscription``
  and its own ``select_notifications``: the nearest equivalent of the
  LISTEN/NOTIFY subscription it has on PostgreSQL. The projection subscribes
  only to the topics it handles (the library's ``topics`` filter, in SQL).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification, StoredEvent, Subscription, Tracking
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteTrackingRecorder
from eventsourcing.utils import get_topic, register_topic

from . import readmodel

_decode = msgspec.json.decode
MODULE = __name__


# ------------------------------------------------------------------ the domain
class Order(Aggregate):
    class Placed(Aggregate.Event):
        customer_id: str
        total_cents: int
        placed_at: str
        channel: str
        currency: str

        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["total_cents"] = round(state.pop("total") * 100)

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("currency", "EUR")

    class LineItemAdded(Aggregate.Event):
        sku: str
        name: str
        quantity: int
        unit_price_cents: int

        class_version = 2  # v1 is the old ItemAdded, whose topic resolves to this class

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["quantity"] = state.pop("qty")
            state["unit_price_cents"] = round(state.pop("price") * 100)

    class CartViewed(Aggregate.Event):
        session_id: str
        page: str
        user_agent: str

    class PaymentCaptured(Aggregate.Event):
        amount_cents: int
        method: str
        captured_at: str

    class Shipped(Aggregate.Event):
        carrier: str
        shipped_at: str
        street: str
        city: str
        postcode: str

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["street"], state["city"], state["postcode"] = state.pop("address").split("|")

    class Cancelled(Aggregate.Event):
        reason: str
        cancelled_at: str


class Customer(Aggregate):
    class Registered(Aggregate.Event):
        full_name: str
        email: str
        marketing_opt_in: bool

        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["full_name"] = state.pop("name")
            state.setdefault("marketing_opt_in", False)


OLD_ITEM_ADDED_TOPIC = f"{MODULE}:Order.ItemAdded"
register_topic(OLD_ITEM_ADDED_TOPIC, Order.LineItemAdded)

#: shop event type -> (topic it was stored under, the id field that names the aggregate)
TOPICS = {
    "OrderPlaced": get_topic(Order.Placed),
    "ItemAdded": OLD_ITEM_ADDED_TOPIC,
    "CartViewed": get_topic(Order.CartViewed),
    "PaymentCaptured": get_topic(Order.PaymentCaptured),
    "OrderShipped": get_topic(Order.Shipped),
    "OrderCancelled": get_topic(Order.Cancelled),
    "CustomerRegistered": get_topic(Customer.Registered),
}
PROJECTED_TOPICS = tuple(TOPICS[t] for t in ("OrderPlaced", "ItemAdded", "PaymentCaptured", "OrderShipped", "OrderCancelled"))


# -------------------------------------------------------- the application side
class PollingSubscription(Subscription["PollingSQLiteApplicationRecorder"]):
    """Follows the recorder by polling ``select_notifications`` in pages."""

    page = 500

    def __init__(self, recorder: PollingSQLiteApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._buffer: deque[Notification] = deque()

    def __next__(self) -> Notification:
        while not self._buffer:
            if self._has_been_stopped:
                raise StopIteration
            notifications = self._recorder.select_notifications(
                start=self._last_notification_id, limit=self.page, topics=self._topics,
                inclusive_of_start=self._last_notification_id is None,
            )
            if notifications:
                self._buffer.extend(notifications)
                self._last_notification_id = notifications[-1].id
            else:
                time.sleep(0.01)
        return self._buffer.popleft()


def same_durability_as_eventmig(datastore: Any) -> None:
    """Open the datastore's SQLite connections with ``synchronous=NORMAL``, as eventmig's store does.

    The library leaves SQLite's default (FULL: an fsync per commit, and its
    projection commits once per event), which would make this baseline
    measure the disk rather than the library. In WAL mode, NORMAL keeps every
    commit atomic and the database consistent; the last commits may be lost
    on power failure, the same trade eventmig's SQLite store makes.
    """
    pool = datastore.pool
    create = pool._create_connection

    def create_connection() -> Any:
        connection = create()
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    pool._create_connection = create_connection


class PollingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: Any, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name)
        same_durability_as_eventmig(datastore)

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> PollingSubscription:
        return PollingSubscription(self, gt=gt, topics=topics)


class ShopApp(Application[UUID]):
    name = "Shop"


# ---------------------------------------------------------- the read model side
class OrderSummaryView(SQLiteTrackingRecorder):
    """The materialised view: order summaries, updated with a tracking record per event."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        same_durability_as_eventmig(datastore)

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), readmodel.SQLITE_DDL.replace(
            "CREATE TABLE {table}", "CREATE TABLE IF NOT EXISTS order_summary")]

    def _apply(self, sql: str, params: tuple[Any, ...], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(sql, params)
            self._insert_tracking(c, tracking)

    def order_placed(self, order_id: str, customer_id: str, total_cents: int, currency: str, tracking: Tracking) -> None:
        self._apply(
            "INSERT INTO order_summary VALUES (?, ?, 'placed', 0, ?, ?)",
            (order_id, customer_id, total_cents, currency), tracking,
        )

    def items_added(self, order_id: str, quantity: int, tracking: Tracking) -> None:
        self._apply("UPDATE order_summary SET item_count = item_count + ? WHERE order_id = ?", (quantity, order_id), tracking)

    def status_changed(self, order_id: str, status: str, tracking: Tracking) -> None:
        self._apply("UPDATE order_summary SET status = ? WHERE order_id = ?", (status, order_id), tracking)

    def count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT count(*) FROM order_summary")
            return c.fetchone()[0]


class OrderSummaryProjection(Projection[OrderSummaryView]):
    name = "OrderSummary"
    topics = PROJECTED_TOPICS

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, e: Order.Placed, tracking: Tracking) -> None:
        self.view.order_placed(str(e.originator_id), e.customer_id, e.total_cents, e.currency, tracking)

    @process_event.register
    def _(self, e: Order.LineItemAdded, tracking: Tracking) -> None:
        self.view.items_added(str(e.originator_id), e.quantity, tracking)

    @process_event.register
    def _(self, e: Order.PaymentCaptured, tracking: Tracking) -> None:
        self.view.status_changed(str(e.originator_id), "paid", tracking)

    @process_event.register
    def _(self, e: Order.Shipped, tracking: Tracking) -> None:
        self.view.status_changed(str(e.originator_id), "shipped", tracking)

    @process_event.register
    def _(self, e: Order.Cancelled, tracking: Tracking) -> None:
        self.view.status_changed(str(e.originator_id), "cancelled", tracking)


# --------------------------------------------------------------------- the runs
def env(app_db: str, view_db: str | None = None) -> dict[str, str]:
    out = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SHOP_SQLITE_DBNAME": app_db,
        "SHOP_APPLICATION_RECORDER_TOPIC": get_topic(PollingSQLiteApplicationRecorder),
    }
    if view_db is not None:
        out["ORDERSUMMARY_SQLITE_DBNAME"] = view_db
    return out


def load(source_rows: Any, app_db: str) -> dict[str, Any]:
    """Write the legacy events through the library's recorder, as the old code stored them."""
    app = ShopApp(env=env(app_db))
    transcoder = app.mapper.transcoder
    recorder = app.recorder
    started = time.perf_counter()
    loaded = 0
    utc = dt.timezone.utc
    for rows in source_rows:
        batch = []
        for stream, version, _event_id, type_, data, metadata, recorded_at in rows:
            state = _decode(data)
            schema_version = _decode(metadata).get("schema_version", 1)
            originator = UUID(stream.partition("-")[2])
            # the aggregate's id is the event's originator id, not a field of its state
            state.pop("customer_id" if type_ == "CustomerRegistered" else "order_id", None)
            state["timestamp"] = dt.datetime.fromtimestamp(recorded_at / 1e6, utc)
            if schema_version > 1:
                state["class_version"] = schema_version
            batch.append(StoredEvent(originator, version, TOPICS[type_], transcoder.encode(state)))
        recorder.insert_events(batch)
        loaded += len(batch)
    seconds = time.perf_counter() - started
    app.close()
    return {"events_read": loaded, "seconds": seconds}


def read(app_db: str) -> dict[str, Any]:
    """Read every event back as a domain event object, upcast by the library's mapper."""
    app = ShopApp(env=env(app_db))
    recorder, to_domain_event = app.recorder, app.mapper.to_domain_event
    started = time.perf_counter()
    read = 0
    start: int | None = None
    while True:
        notifications = recorder.select_notifications(start=start, limit=5000, inclusive_of_start=start is None)
        if not notifications:
            break
        for n in notifications:
            to_domain_event(n)
        read += len(notifications)
        start = notifications[-1].id
    seconds = time.perf_counter() - started
    app.close()
    return {"events_read": read, "seconds": seconds}


def project(app_db: str, view_db: str, total_events: int) -> dict[str, Any]:
    """Run the order-summary projection over the whole history with the library's runner."""
    import sqlite3

    with sqlite3.connect(app_db) as conn:
        last = conn.execute(
            f"SELECT max(rowid) FROM stored_events WHERE topic IN ({', '.join('?' * len(PROJECTED_TOPICS))})",
            PROJECTED_TOPICS,
        ).fetchone()[0]
    conn.close()
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=ShopApp,
        projection_class=OrderSummaryProjection,
        view_class=OrderSummaryView,
        env=env(app_db, view_db),
    ) as runner:
        # the runner's own wait() backs off to 0.8 s between polls; poll every 10 ms instead,
        # so the time measured is the projection's, not the waiting's
        while not runner.view.has_tracking_id(ShopApp.name, last):
            runner.run_forever(timeout=0.01)  # re-raises an error of the processing thread
            if runner.is_interrupted.is_set() and not runner.view.has_tracking_id(ShopApp.name, last):
                raise RuntimeError("the projection runner stopped before the end of the history")
        seconds = time.perf_counter() - started
        rows = runner.view.count()
    # every event of the history is read from the source: the projection's topic filter
    # skips the ones it does not handle inside the database query
    return {"events_read": total_events, "seconds": seconds, "rows": rows}
