"""Order events: schemas per version and the steps between them."""

from __future__ import annotations

from typing import Annotated

import msgspec

from . import registry

# What the old shop stored, stated so that `eventmig check` generates only such
# events: no price or total came near a billion euros (which also keeps their
# cents well inside a 64-bit integer), and a shipment's address was always
# "street|city|postcode".
Euros = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
PackedAddress = Annotated[str, msgspec.Meta(pattern=r"^[^|]*\|[^|]*\|[^|]*$")]


def euros_to_cents(euros: float) -> int:
    """Money in integer cents, rounded to the nearest: floats of euros do not add up exactly."""
    return round(euros * 100)


def unpack_address(address: str) -> tuple[str, str, str]:
    """``street|city|postcode``, as the old shop packed an address into one string."""
    street, city, postcode = address.split("|")
    return street, city, postcode


# ------------------------------------------------------------------ OrderPlaced
@registry.schema("OrderPlaced", 1)
class OrderPlacedV1(msgspec.Struct):
    order_id: str
    customer_id: str
    total: Euros  # as the first version of the shop stored money
    placed_at: str
    channel: str


@registry.schema("OrderPlaced", 2)
class OrderPlacedV2(msgspec.Struct):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: str
    channel: str


@registry.schema("OrderPlaced", 3)
class OrderPlaced(msgspec.Struct):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: str
    channel: str
    currency: str = "EUR"


# declared: `eventmig check` holds the step to the rule, and every other field to arriving unchanged
@registry.upcaster(rename={"total": "total_cents"}, convert={"total_cents": euros_to_cents})
def order_total_in_cents(e: OrderPlacedV1) -> OrderPlacedV2:
    """Money in integer cents: floats of euros do not add up exactly."""
    return OrderPlacedV2(e.order_id, e.customer_id, euros_to_cents(e.total), e.placed_at, e.channel)


# every order before multi-currency support was in euros
registry.fields("OrderPlaced", 2, defaults={"currency": "EUR"})

registry.example(
    OrderPlacedV1("o-1", "c-1", 12.29, "2019-03-01T10:00:00Z", "web"),
    becomes=OrderPlaced("o-1", "c-1", 1229, "2019-03-01T10:00:00Z", "web", currency="EUR"),
)


# ------------------------------------------------------- ItemAdded -> LineItemAdded
@registry.schema("ItemAdded", 1)
class ItemAddedV1(msgspec.Struct):
    order_id: str
    sku: str
    name: str
    qty: int
    price: Euros  # per unit


@registry.schema("LineItemAdded", 1)
class LineItemAdded(msgspec.Struct):
    order_id: str
    sku: str
    name: str
    quantity: int
    unit_price_cents: int


@registry.upcaster(rename={"qty": "quantity", "price": "unit_price_cents"}, convert={"unit_price_cents": euros_to_cents})
def item_added_is_a_line_item(e: ItemAddedV1) -> LineItemAdded:
    return LineItemAdded(e.order_id, e.sku, e.name, e.qty, euros_to_cents(e.price))


registry.example(
    ItemAddedV1("o-1", "sku-42", "Teapot", 2, 0.29),
    becomes=LineItemAdded("o-1", "sku-42", "Teapot", quantity=2, unit_price_cents=29),
)


# ------------------------------------------------------------------ OrderShipped
@registry.schema("OrderShipped", 1)
class OrderShippedV1(msgspec.Struct):
    order_id: str
    carrier: str
    address: PackedAddress
    shipped_at: str


@registry.schema("OrderShipped", 2)
class OrderShipped(msgspec.Struct):
    order_id: str
    carrier: str
    shipped_at: str


@registry.schema("ShippingAddressRecorded", 1)
class ShippingAddressRecorded(msgspec.Struct):
    order_id: str
    street: str
    city: str
    postcode: str


@registry.upcaster(
    remove=["address"],
    convert={
        "street": lambda e: unpack_address(e.address)[0],
        "city": lambda e: unpack_address(e.address)[1],
        "postcode": lambda e: unpack_address(e.address)[2],
    },
)
def address_out_of_shipment(e: OrderShippedV1) -> list[ShippingAddressRecorded | OrderShipped]:
    """The address becomes a fact of its own, recorded before the shipment."""
    street, city, postcode = unpack_address(e.address)
    return [
        ShippingAddressRecorded(e.order_id, street, city, postcode),
        OrderShipped(e.order_id, e.carrier, e.shipped_at),
    ]


registry.example(
    OrderShippedV1("o-1", "DHL", "1 Main St|Springfield|12345", "2019-03-02T08:00:00Z"),
    becomes=[
        ShippingAddressRecorded("o-1", "1 Main St", "Springfield", "12345"),
        OrderShipped("o-1", "DHL", "2019-03-02T08:00:00Z"),
    ],
)


# ------------------------------------------------------------- unchanged events
@registry.schema("OrderCancelled", 1)
class OrderCancelled(msgspec.Struct):
    order_id: str
    reason: str
    cancelled_at: str


@registry.schema("PaymentCaptured", 1)
class PaymentCaptured(msgspec.Struct):
    order_id: str
    amount_cents: int
    method: str
    captured_at: str


# --------------------------------------------------------------------- dropped
registry.drop("CartViewed", 1)
