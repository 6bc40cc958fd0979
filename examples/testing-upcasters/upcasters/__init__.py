"""Upcasters of the accounts service: one msgspec Struct per schema version, and the steps between them.

* ``AccountOpened`` v2 calls the ``owner`` the ``holder`` and adds a currency (EUR before).
* ``MoneyDeposited`` v1 had a float of euros; v2 counts integer cents.
* ``Withdrawal`` is now called ``MoneyWithdrawn`` (same payload).
* ``AccountClosed`` v1 carried the balance paid out on closing; v2 records the payout as an
  event of its own, ``BalancePaidOut``, before the closure.
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


def euros_to_cents(euros: float) -> int:
    """Whole cents, rounded to the nearest: 12.29 euros are 1229 cents, not 1228."""
    return round(euros * 100)


# ---------------------------------------------------------------- AccountOpened
@registry.schema("AccountOpened", 1)
class AccountOpenedV1(msgspec.Struct):
    account_id: str
    owner: str
    opened_at: str


@registry.schema("AccountOpened", 2)
class AccountOpened(msgspec.Struct):
    account_id: str
    holder: str
    opened_at: str
    currency: str = "EUR"


registry.fields("AccountOpened", 1, rename={"owner": "holder"}, defaults={"currency": "EUR"})
registry.example(
    AccountOpenedV1("acc-1", "Ada Lovelace", "2019-03-01"),
    becomes=AccountOpened("acc-1", "Ada Lovelace", "2019-03-01", currency="EUR"),
)


# --------------------------------------------------------------- MoneyDeposited
@registry.schema("MoneyDeposited", 1)
class MoneyDepositedV1(msgspec.Struct):
    account_id: str
    amount: Euros
    reference: str


@registry.schema("MoneyDeposited", 2)
class MoneyDeposited(msgspec.Struct):
    account_id: str
    amount_cents: Cents
    reference: str


# the euros live on as cents: declared, so the checks hold the step to the rule on every event
@registry.upcaster(rename={"amount": "amount_cents"}, convert={"amount_cents": euros_to_cents})
def amount_in_cents(e: MoneyDepositedV1) -> MoneyDeposited:
    return MoneyDeposited(e.account_id, euros_to_cents(e.amount), e.reference)


registry.example(MoneyDepositedV1("acc-1", 12.29, "salary"), becomes=MoneyDeposited("acc-1", 1229, "salary"))
registry.example(MoneyDepositedV1("acc-1", 0.29, "interest"), becomes=MoneyDeposited("acc-1", 29, "interest"))


# ------------------------------------------------------ Withdrawal -> MoneyWithdrawn
@registry.schema("Withdrawal", 1)
class Withdrawal(msgspec.Struct):
    account_id: str
    amount_cents: Cents
    reference: str


@registry.schema("MoneyWithdrawn", 1)
class MoneyWithdrawn(msgspec.Struct):
    account_id: str
    amount_cents: Cents
    reference: str


registry.rename_type("Withdrawal", 1, "MoneyWithdrawn")
registry.example(Withdrawal("acc-1", 250, "rent"), becomes=MoneyWithdrawn("acc-1", 250, "rent"))


# ---------------------------------------------------------------- AccountClosed
@registry.schema("AccountClosed", 1)
class AccountClosedV1(msgspec.Struct):
    account_id: str
    reason: str
    closed_at: str
    final_balance_cents: Cents


@registry.schema("BalancePaidOut", 1)
class BalancePaidOut(msgspec.Struct):
    account_id: str
    amount_cents: Cents


@registry.schema("AccountClosed", 2)
class AccountClosed(msgspec.Struct):
    account_id: str
    reason: str
    closed_at: str


# a split emits each of its targets once, in the order of its return annotation
@registry.upcaster(rename={"final_balance_cents": "amount_cents"})
def payout_before_closure(e: AccountClosedV1) -> list[BalancePaidOut | AccountClosed]:
    """The balance paid out becomes a fact of its own, recorded before the closure."""
    return [
        BalancePaidOut(e.account_id, e.final_balance_cents),
        AccountClosed(e.account_id, e.reason, e.closed_at),
    ]


registry.example(
    AccountClosedV1("acc-1", "moved abroad", "2024-05-01", final_balance_cents=0),
    becomes=[BalancePaidOut("acc-1", 0), AccountClosed("acc-1", "moved abroad", "2024-05-01")],
)


# ---------------------------------------------------------------------- dropped
# no schema: nothing to generate, and nothing reaches the new epoch
registry.drop("StatementViewed", 1)
registry.example(("StatementViewed", 1, {"account_id": "acc-1"}), becomes=[])
