"""A deterministic history of the reference "shop" service, as its old versions wrote it.

``eventmig demo`` seeds a store with it and runs the pipeline on it; the
benchmarks and tests use the same generator, so every figure is measured on
the same kind of data: orders interleaved in time as on a live system, most
events at old schema versions, payloads of 150 to 300 bytes, about ten
events per stream.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from eventmig.ports import EventStore
from eventmig.model.records import TargetEvent

BASE_TIME_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
_encode = msgspec.json.Encoder().encode

_PRODUCTS = [
    ("SKU-10001", "Espresso beans, 1 kg, dark roast"), ("SKU-10002", "Ceramic pour-over dripper"),
    ("SKU-10003", "Paper filters, pack of 100"), ("SKU-10004", "Burr grinder with 40 settings"),
    ("SKU-10005", "Gooseneck kettle, 1 litre"), ("SKU-10006", "Milk frothing pitcher"),
    ("SKU-10007", "Travel mug, insulated"), ("SKU-10008", "Cold brew bottle"),
    ("SKU-10009", "Decaf beans, 500 g"), ("SKU-10010", "Cleaning tablets for machines"),
]
_CITIES = [("Lyon", "69001"), ("Gent", "9000"), ("Porto", "4000-001"), ("Graz", "8010"), ("Turku", "20100")]
_STREETS = ["Rue de la République", "Veldstraat", "Rua de Santa Catarina", "Herrengasse", "Aurakatu"]
_NAMES = ["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson", "Frances Allen"]
_CHANNELS = ["web", "mobile-app", "in-store"]
_CARRIERS = ["PostNL", "DHL Express", "Colissimo", "UPS Standard"]
_PAGES = ["/cart", "/checkout", "/product/espresso", "/product/grinder"]


@dataclass
class _Order:
    stream: str
    order_id: str
    customer_id: str
    plan: list[str]  # the kinds of event this order will produce, in order
    step: int = 0


class ShopHistory:
    """Generates ``total`` legacy shop events, deterministically from ``seed``."""

    def __init__(self, total: int, seed: int = 42, concurrency: int = 64) -> None:
        self.total = total
        self.rng = random.Random(seed)
        self.concurrency = concurrency
        self.versions: dict[str, int] = {}
        self.customers: list[str] = []

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def events(self) -> Iterator[TargetEvent]:
        rng, produced = self.rng, 0
        open_orders: list[_Order] = []
        while produced < self.total:
            if len(open_orders) < self.concurrency:
                customer_event = None
                if not self.customers or rng.random() < 0.1:
                    customer_id = self._uuid()
                    self.customers.append(customer_id)
                    customer_event = self._customer_registered(customer_id, produced)
                else:
                    customer_id = rng.choice(self.customers)
                order_id = self._uuid()
                middle = ["item"] * rng.randint(1, 9) + ["view"] * rng.randint(0, 5)
                rng.shuffle(middle)
                ending = "cancelled" if rng.random() < 0.12 else "shipped"
                plan = ["placed", *middle, "payment", ending]
                open_orders.append(_Order(f"order-{order_id}", order_id, customer_id, plan))
                if customer_event is not None:
                    yield customer_event
                    produced += 1
                    continue
            order = open_orders[rng.randrange(len(open_orders))]
            event, finished = self._next_order_event(order, produced)
            if finished:
                open_orders.remove(order)
            yield event
            produced += 1

    # ------------------------------------------------------------ one event
    def _event(self, stream: str, type_: str, data: dict, schema_version: int, at: int) -> TargetEvent:
        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        metadata = {"source": "shop-api", "correlation_id": self._uuid()}
        if schema_version > 1:
            metadata["schema_version"] = schema_version
        return TargetEvent(stream, version, self._uuid(), type_, _encode(data), _encode(metadata), BASE_TIME_US + at * 1_000_000)

    def _customer_registered(self, customer_id: str, at: int) -> TargetEvent:
        name = self.rng.choice(_NAMES)
        email = f"{name.split()[0].lower()}.{customer_id[:8]}@example.org"
        if self.rng.random() < 0.8:
            return self._event(f"customer-{customer_id}", "CustomerRegistered",
                               {"customer_id": customer_id, "name": name, "email": email}, 1, at)
        return self._event(f"customer-{customer_id}", "CustomerRegistered",
                           {"customer_id": customer_id, "full_name": name, "email": email,
                            "marketing_opt_in": self.rng.random() < 0.4}, 2, at)

    def _next_order_event(self, order: _Order, at: int) -> tuple[TargetEvent, bool]:
        rng, o = self.rng, order
        kind = o.plan[o.step]
        o.step += 1
        finished = o.step == len(o.plan)
        when = f"2024-{1 + at % 12:02d}-{1 + at % 28:02d}T{at % 24:02d}:{at % 60:02d}:00Z"
        if kind == "placed":
            total = round(rng.uniform(5, 400), 2)
            data = {"order_id": o.order_id, "customer_id": o.customer_id, "placed_at": when,
                    "channel": rng.choice(_CHANNELS)}
            roll = rng.random()
            if roll < 0.6:
                return self._event(o.stream, "OrderPlaced", {**data, "total": total}, 1, at), finished
            data["total_cents"] = round(total * 100)
            if roll < 0.8:
                return self._event(o.stream, "OrderPlaced", data, 2, at), finished
            data["currency"] = rng.choice(["EUR", "EUR", "GBP", "SEK"])
            return self._event(o.stream, "OrderPlaced", data, 3, at), finished
        if kind == "item":
            sku, name = rng.choice(_PRODUCTS)
            return self._event(o.stream, "ItemAdded", {"order_id": o.order_id, "sku": sku, "name": name,
                               "qty": rng.randint(1, 4), "price": round(rng.uniform(2, 120), 2)}, 1, at), finished
        if kind == "view":
            return self._event(o.stream, "CartViewed", {"order_id": o.order_id, "session_id": self._uuid(),
                               "page": rng.choice(_PAGES), "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}, 1, at), finished
        if kind == "payment":
            return self._event(o.stream, "PaymentCaptured", {"order_id": o.order_id, "amount_cents": rng.randint(500, 40000),
                               "method": rng.choice(["card", "paypal", "ideal"]), "captured_at": when}, 1, at), finished
        if kind == "cancelled":
            return self._event(o.stream, "OrderCancelled", {"order_id": o.order_id,
                               "reason": rng.choice(["customer request", "payment failed", "out of stock"]),
                               "cancelled_at": when}, 1, at), finished
        street = f"{rng.randint(1, 200)} {rng.choice(_STREETS)}"
        city, postcode = rng.choice(_CITIES)
        return self._event(o.stream, "OrderShipped", {"order_id": o.order_id, "carrier": rng.choice(_CARRIERS),
                           "address": f"{street}|{city}|{postcode}", "shipped_at": when}, 1, at), finished


def seed(store: EventStore, events: int = 100_000, *, seed: int = 42, batch_size: int = 10_000) -> int:
    """Write ``events`` legacy shop events into the store's active epoch; return how many."""
    if events < 0:
        raise ValueError("events must be >= 0")
    batch: list[TargetEvent] = []
    written = 0
    for event in ShopHistory(events, seed).events():
        batch.append(event)
        if len(batch) >= batch_size:
            store.write_batch(batch)
            written += len(batch)
            batch = []
    if batch:
        store.write_batch(batch)
        written += len(batch)
    return written
