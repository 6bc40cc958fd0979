"""Rename, split and drop events, then migrate, verify, switch and roll back.

An old checkout service wrote events that today's code no longer wants:

* ``BasketCreated`` is now called ``OrderStarted`` (a type rename);
* ``ItemAdded`` v1 had ``qty`` and a ``price`` in euros; v2 has ``quantity``
  and ``price_cents`` (a field rename and a unit conversion);
* ``OrderCheckedOut`` recorded a payment and a shipment at once; they are two
  facts, ``PaymentCaptured`` and ``OrderShipped`` (a split);
* ``CartViewed`` was analytics noise that never belonged in the event store
  (a drop).

The script registers those four upcasters, writes a few legacy events to a
throwaway SQLite store, copies them through the upcasters into a new epoch
(the legacy epoch is never modified), verifies the copy by digest, makes it
the active epoch, and rolls that back.

Run it from the repository root::

    .venv/bin/python examples/rename_split_drop.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import msgspec

from eventmig import EventStore, Registry, new_event, open_store
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.migrate import migrate
from eventmig.jobs.verify import verify

# ------------------------------------------------------------------ upcasters
# Service code: one msgspec Struct per schema version, and the steps between them.
# The schema version lives in each event's metadata ("schema_version"; absent means 1).
registry = Registry(version_location="metadata:schema_version")


@registry.schema("OrderStarted", 1)
class OrderStarted(msgspec.Struct):
    order_id: str
    customer: str


# 1. A type rename: same payload, new name.
registry.rename_type("BasketCreated", 1, to="OrderStarted")


@registry.schema("ItemAdded", 1)
class ItemAddedV1(msgspec.Struct):
    sku: str
    qty: int
    price: float  # euros per unit, as the first version stored money


@registry.schema("ItemAdded", 2)
class ItemAdded(msgspec.Struct):
    sku: str
    quantity: int
    price_cents: int


# 2. A field rename and a unit conversion (converters see the new names).
registry.fields(
    "ItemAdded", 1,
    rename={"qty": "quantity", "price": "price_cents"},
    convert={"price_cents": lambda euros: round(euros * 100)},
)


@registry.schema("OrderCheckedOut", 1)
class OrderCheckedOut(msgspec.Struct):
    order_id: str
    paid_cents: int
    method: str
    carrier: str


@registry.schema("PaymentCaptured", 1)
class PaymentCaptured(msgspec.Struct):
    order_id: str
    amount_cents: int
    method: str


@registry.schema("OrderShipped", 1)
class OrderShipped(msgspec.Struct):
    order_id: str
    carrier: str


# 3. A split: one event becomes two, of other types. The annotations say which.
@registry.upcaster
def checkout_was_two_facts(e: OrderCheckedOut) -> list[PaymentCaptured | OrderShipped]:
    """Payment and shipment happen at different times in today's checkout, so they are separate events."""
    return [PaymentCaptured(e.order_id, e.paid_cents, e.method), OrderShipped(e.order_id, e.carrier)]


# 4. A drop: these events are not carried into the new epoch.
registry.drop("CartViewed", 1)


# ------------------------------------------------------------ legacy history
def write_legacy_history(store: EventStore) -> None:
    """What the old service appended, including one event newer code already wrote at v2."""
    store.append("order-1", [
        new_event("BasketCreated", {"order_id": "1", "customer": "ada"}),
        new_event("ItemAdded", {"sku": "beans-1kg", "qty": 2, "price": 14.9}),
        new_event("CartViewed", {"page": "/cart"}),
        new_event("ItemAdded", {"sku": "filters", "qty": 1, "price": 3.5}),
        new_event("OrderCheckedOut", {"order_id": "1", "paid_cents": 3330, "method": "card", "carrier": "DHL"}),
    ])
    store.append("order-2", [
        new_event("BasketCreated", {"order_id": "2", "customer": "grace"}),
        new_event("CartViewed", {"page": "/product/grinder"}),
        new_event("ItemAdded", {"sku": "grinder", "quantity": 1, "price_cents": 8900}, {"schema_version": 2}),
    ])


# -------------------------------------------------------------------- output
def show_stream(store: EventStore, stream: str, title: str) -> None:
    """One stream, event by event; migrated events carry their lineage in metadata["eventmig"]."""
    print(f"\n{title}")
    for e in store.read_stream(stream):
        meta = e.decoded_metadata()
        name = f"{e.type} v{meta.get('schema_version', 1)}"
        print(f"  {e.version}. {name:<20} {e.data.decode()}")
        lineage = meta.get("eventmig")
        if lineage:
            source = lineage["source"]
            chain = " then ".join(lineage["chain"]) or "unchanged (already at its head)"
            print(f"     {'':<20} from epoch {source['epoch']} {source['stream']} #{source['version']} via {chain}")


def show_counts(before: dict[str, int], after: dict[str, int]) -> None:
    """Events per (type, schema version) on both sides of the migration, side by side."""
    print(f"\n  {'before (epoch 1)':<26}{'after (epoch 2)'}")
    rows = max(len(before), len(after))
    left = [f"{k:<20}{n:>3}" for k, n in before.items()] + [""] * rows
    right = [f"{k:<20}{n:>3}" for k, n in after.items()] + [""] * rows
    for i in range(rows):
        print(f"  {left[i]:<26}{right[i]}")


# ---------------------------------------------------------------------- flow
def main() -> None:
    compiled = registry.compile()  # validates the chains: every stored version must reach a head
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'checkout.db'}"
        # the handle an application would hold: it follows the active epoch
        with open_store(url) as store:
            write_legacy_history(store)
            show_stream(store, "order-1", "order-1 as the old service wrote it (epoch 1):")

            # a handful of events: no worker processes needed
            report = migrate(store, compiled, workers=1)
            print(
                f"\nmigrate epoch {report.source_epoch} -> {report.target_epoch}: read {report.events_read}, "
                f"wrote {report.events_written}, dropped {report.dropped}, quarantined {report.quarantined}"
            )
            show_counts(report.before, report.after)
            new_epoch = store.at_epoch(report.target_epoch)
            show_stream(new_epoch, "order-1", f"order-1 in the new epoch {report.target_epoch}:")
            shipped = new_epoch.read_stream("order-1")[-1]
            print(f"\n  metadata of #{shipped.version}: {shipped.metadata.decode()}")

            checked = verify(store, compiled, workers=1)
            verdict = "digests match" if checked.ok else "DIFFERENT: " + "; ".join(checked.problems)
            print(
                f"\nverify: {verdict} ({checked.streams_compared} streams, {checked.target_events} events, "
                f"store digest {checked.target_digest[:16]})"
            )

            flipped = switch(store, compiled, workers=1)  # verifies again, and refuses on any difference
            print(f"switch: epoch {flipped.from_epoch} -> {flipped.to_epoch} is active")
            print(f"  the application's handle now reads: {[e.type for e in store.read_stream('order-1')]}")

            back = rollback(store)
            print(f"rollback: epoch {back.from_epoch} -> {back.to_epoch} is active again "
                  f"(epoch {back.from_epoch} is kept)")
            print(f"  the application's handle reads again: {[e.type for e in store.read_stream('order-1')]}")
            print(f"  epochs: {json.dumps({e.epoch: e.status for e in store.epochs()})}")


if __name__ == "__main__":
    main()
