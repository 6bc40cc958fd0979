"""Customer events."""

from __future__ import annotations

import msgspec

from . import registry


@registry.schema("CustomerRegistered", 1)
class CustomerRegisteredV1(msgspec.Struct):
    customer_id: str
    name: str
    email: str


@registry.schema("CustomerRegistered", 2)
class CustomerRegistered(msgspec.Struct):
    customer_id: str
    full_name: str
    email: str
    marketing_opt_in: bool = False


registry.fields("CustomerRegistered", 1, rename={"name": "full_name"}, defaults={"marketing_opt_in": False})
registry.example(
    CustomerRegisteredV1("c-1", "Ada Lovelace", "ada@example.com"),
    becomes=CustomerRegistered("c-1", "Ada Lovelace", "ada@example.com", marketing_opt_in=False),
)
