"""Upcasters of the accounts service: one msgspec Struct per schema version, and the steps between them.

* ``AccountOpened`` v2 calls the ``owner`` the ``holder`` and adds a currency (EUR before).
* ``MoneyDeposited`` v1 had a float of euros; v2 counts integer cents.
* ``Withdrawal`` is now called ``MoneyWithdrawn`` (same payload).
* ``StatementViewed`` was analytics noise: dropped.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from eventmig import Registry

registry = Registry(version_location="metadata:schema_version")

# State what was really stored: the property checks generate events from these
# types, and an amount out of these bounds is quarantined with a clear reason
# instead of crashing a step.
Euros = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
Cents = Annotated[int, msgspec.Meta(ge=0)]


@registry.schema("AccountOpened", 1)
class AccountOpenedV1(msgspec.Struct):
    account_id: str
    owner: str


@registry.schema("AccountOpened", 2)
class AccountOpened(msgspec.Struct):
    account_id: str
    holder: str
    currency: str = "EUR"


registry.fields("AccountOpened", 1, rename={"owner": "holder"}, defaults={"currency": "EUR"})


@registry.schema("MoneyDeposited", 1)
class MoneyDepositedV1(msgspec.Struct):
    account_id: str
    amount: Euros


@registry.schema("MoneyDeposited", 2)
class MoneyDeposited(msgspec.Struct):
    account_id: str
    amount_cents: Cents


@registry.upcaster
def amount_in_cents(e: MoneyDepositedV1) -> MoneyDeposited:
    return MoneyDeposited(e.account_id, round(e.amount * 100))


@registry.schema("Withdrawal", 1)
class Withdrawal(msgspec.Struct):
    account_id: str
    amount_cents: Cents


@registry.schema("MoneyWithdrawn", 1)
class MoneyWithdrawn(msgspec.Struct):
    account_id: str
    amount_cents: Cents


registry.rename_type("Withdrawal", 1, "MoneyWithdrawn")

# no schema: the property checks report it as not generated
registry.drop("StatementViewed", 1)
