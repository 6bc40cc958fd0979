"""The laws derived from schemas and declarations, and the schema gaps of strict checks."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec
import msgspec.inspect as mi
import pytest

from eventmig import Registry, RegistryError, emit
from eventmig.testing.checks import RegistryReport, check_upcasters
from eventmig.testing.laws import widens

EXAMPLES = 20


def failures(report: RegistryReport) -> dict[tuple[str, str], str]:
    """(node, property) -> message of every failure."""
    return {(n.name, f.property): f.message for n, f in report.failures}


def orders(step_body, **declared) -> Registry:
    """Order v1 {id, note, total: float, channel} -> v2 {id, note, cents: int, currency = "EUR"} by a typed step."""
    r = Registry()

    @r.schema("Order", 1)
    class OrderV1(msgspec.Struct):
        id: str
        note: str
        total: Annotated[float, msgspec.Meta(ge=0, le=1e9)]
        channel: str = "web"

    @r.schema("Order", 2)
    class Order(msgspec.Struct):
        id: str
        note: str
        cents: int
        currency: str = "EUR"

    @r.upcaster(name="orders.v2", **declared)
    def v2(e: OrderV1) -> Order:
        return step_body(e, Order)

    return r


DECLARED = {"rename": {"total": "cents"}, "convert": {"cents": lambda euros: round(euros * 100)}, "remove": ["channel"]}


def test_a_fully_declared_step_holds() -> None:
    report = check_upcasters(orders(lambda e, Order: Order(e.id, e.note, round(e.total * 100)), **DECLARED),
                             examples=EXAMPLES)
    assert report.ok, report.format()


@pytest.mark.parametrize(("body", "prop", "words"), [
    (lambda e, Order: Order(e.id, e.id, round(e.total * 100)), "unchanged",
     "orders.v2: Order v2.note is \" \", but Order v1.note was \"\" and no declaration says it changes"),
    (lambda e, Order: Order(e.id, e.note.strip(), round(e.total * 100)), "unchanged", "Order v2.note"),
    (lambda e, Order: Order(e.id, e.note, int(e.total * 100)), "rule",
     "Order v2.cents is 28, but its declared rule <lambda>(total=0.29) gives 29"),
    (lambda e, Order: Order(e.id, e.note, round(e.total * 100), "USD"), "default",
     "Order v2.currency is new and is \"USD\", but its schema's default is \"EUR\""),
])
def test_each_law_names_the_step_the_field_and_the_boundary_value_that_breaks_it(body, prop, words) -> None:
    report = check_upcasters(orders(body, **DECLARED), examples=EXAMPLES)
    found = failures(report)
    assert ("Order v1", prop) in found, report.format()
    assert words in found[("Order v1", prop)]
    failure = next(f for _, f in report.failures if f.property == prop)
    assert failure.example is not None and failure.example["type"] == "Order"  # the minimal event, in full


def test_undeclared_changes_are_named_without_running_an_event() -> None:
    report = check_upcasters(orders(lambda e, Order: Order(e.id, e.note, round(e.total * 100))), examples=EXAMPLES)
    messages = [f.message for n, f in report.failures if f.property == "declarations"]
    assert any("field total of Order v1 is in none of its outputs; declare remove=['total'], or rename=" in m
               for m in messages), messages
    assert any("field channel of Order v1 is in none of its outputs" in m for m in messages)
    assert any("Order v2.cents is new and required, and nothing declares where it comes from; declare "
               "rename={'old': 'cents'} if it is an old field under a new name" in m for m in messages), messages
    # renaming without a rule: float to int narrows
    narrowing = check_upcasters(orders(lambda e, Order: Order(e.id, e.note, round(e.total * 100)),
                                       rename={"total": "cents"}, remove=["channel"]), examples=EXAMPLES)
    # (the bound reads 1000000000 or 1000000000.0: typing caches equal Annotated types across modules)
    assert any("total -> Order v2.cents (float (ge=0, le=1000000000" in f.message
               and "to int) narrows and is not declared; declare it with its rule" in f.message
               for _, f in narrowing.failures), narrowing.format()
    # words are not a rule for a narrowing change
    words = check_upcasters(orders(lambda e, Order: Order(e.id, e.note, round(e.total * 100)),
                                   rename={"total": "cents"}, convert={"cents": "rounded cents"},
                                   remove=["channel"]), examples=EXAMPLES)
    assert any("narrows; its declaration needs the rule, a callable" in f.message for _, f in words.failures)


def test_declarations_that_name_nothing_are_reported() -> None:
    report = check_upcasters(orders(lambda e, Order: Order(e.id, e.note, round(e.total * 100)),
                                    rename={"totl": "cents"}, convert={"cent": str}, remove=["channel"],
                                    optional=[("Order", 3)]), examples=EXAMPLES)
    messages = " | ".join(f.message for _, f in report.failures if f.property == "declarations")
    assert "declares 'totl' renamed or removed, but Order v1 has no field totl" in messages
    assert "declares field 'cent', which none of its outputs has" in messages
    assert "declares Order v3 optional or repeated, but does not emit it" in messages


def test_unknown_keys_in_a_dict_step_fail() -> None:
    r = Registry()

    @r.schema("User", 1)
    class UserV1(msgspec.Struct):
        id: str
        name: str

    @r.schema("User", 2)
    class User(msgspec.Struct):
        id: str
        full_name: str

    @r.upcaster("User", 1, to=("User", 2), rename={"name": "full_name"})
    def keeps_name(d):
        return {**d, "full_name": d["name"]}

    found = failures(check_upcasters(r, examples=EXAMPLES))
    # a dict a step returns for a schema may hold that schema's fields only: the upcast itself refuses the
    # extra key (migrate quarantines such an event), so the property that fails is "reaches heads"
    assert "returned User v2 with field(s) 'name' that its schema does not declare" in found[("User v1", "reaches heads")]
    assert found.keys() == {("User v1", "reaches heads")}


def test_a_schema_default_that_changes_between_versions_is_a_changed_value() -> None:
    """Events stored without the key meant True; passed through as they are, they now mean False."""
    r = Registry()

    @r.schema("Prefs", 1)
    class PrefsV1(msgspec.Struct):
        id: str
        emails: bool = True

    @r.schema("Prefs", 2)
    class Prefs(msgspec.Struct):
        id: str
        emails: bool = False
        sms: bool = False

    r.fields("Prefs", 1)
    found = failures(check_upcasters(r, examples=EXAMPLES))
    assert "Prefs v2.emails is false, but Prefs v1.emails was true" in found[("Prefs v1", "unchanged")]


def splits(body, **declared) -> Registry:
    r = Registry()

    @r.schema("Shipped", 1)
    class ShippedV1(msgspec.Struct):
        order: str
        address: str
        parcels: int

    @r.schema("Addressed", 1)
    class Addressed(msgspec.Struct):
        order: str
        address: str

    @r.schema("Parcel", 1)
    class Parcel(msgspec.Struct):
        order: str

    @r.schema("Shipped", 2)
    class Shipped(msgspec.Struct):
        order: str

    def split(d):
        return body(d, emit)

    r.split("Shipped", 1, [("Addressed", 1), ("Parcel", 1), ("Shipped", 2)], split, name="shipment",
            remove=["parcels"], **declared)
    return r


def _three(d, emit, parcels=1):
    return [emit("Addressed", 1, {"order": d["order"], "address": d["address"]}),
            *[emit("Parcel", 1, {"order": d["order"]}) for _ in range(parcels)],
            emit("Shipped", 2, {"order": d["order"]})]


@pytest.mark.parametrize(("body", "declared", "message"), [
    (lambda d, emit: _three(d, emit), {}, None),
    (lambda d, emit: _three(d, emit)[1:], {},
     "shipment: emitted [Parcel v1, Shipped v2] but declares [Addressed v1, Parcel v1, Shipped v2], each once"),
    (lambda d, emit: _three(d, emit)[::-1], {}, "emitted [Shipped v2, Parcel v1, Addressed v1]"),
    (lambda d, emit: _three(d, emit, parcels=2), {}, "emitted [Addressed v1, Parcel v1, Parcel v1, Shipped v2]"),
    (lambda d, emit: _three(d, emit, parcels=d["parcels"] % 3), {"repeated": [("Parcel", 1)]},
     "declares [Addressed v1, Parcel v1 (repeated), Shipped v2]"),
    (lambda d, emit: _three(d, emit, parcels=d["parcels"] % 3), {"repeated": [("Parcel", 1)], "optional": [("Parcel", 1)]},
     None),
])
def test_a_split_emits_each_declared_target_once_in_order_unless_declared_otherwise(body, declared, message) -> None:
    report = check_upcasters(splits(body, **declared), examples=EXAMPLES)
    if message is None:
        assert report.ok, report.format()
    else:
        assert message in failures(report)[("Shipped v1", "targets")], report.format()


def test_a_typed_step_returning_none_may_emit_nothing() -> None:
    r = Registry()

    @r.schema("Ping", 1)
    class PingV1(msgspec.Struct):
        n: int

    @r.schema("Ping", 2)
    class Ping(msgspec.Struct):
        n: int

    @r.upcaster
    def only_positive(e: PingV1) -> Ping | None:
        return Ping(e.n) if e.n > 0 else None

    assert check_upcasters(r, examples=EXAMPLES).ok
    assert r.steps[("Ping", 1)].declared.optional == {("Ping", 2)}


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _t(tp) -> mi.Type:
    return mi.type_info(tp)


@pytest.mark.parametrize(("old", "new", "widening"), [
    (int, float, True),
    (float, int, False),
    (str, str | None, True),
    (str | None, str, False),
    (Literal["a", "b"], str, True),
    (str, Literal["a", "b"], False),
    (Colour, str, True),
    (str, Colour, False),
    (Annotated[int, msgspec.Meta(ge=0, le=10)], Annotated[int, msgspec.Meta(ge=0)], True),
    (Annotated[int, msgspec.Meta(ge=0)], Annotated[int, msgspec.Meta(ge=0, le=10)], False),
    (Annotated[str, msgspec.Meta(max_length=5)], str, True),
    (str, Annotated[str, msgspec.Meta(max_length=5)], False),
    (list[int], list[float], True),
    (list[str], set[str], False),
    (set[str], list[str], True),
    (dict[str, int], dict[str, float], True),
    (bool, int, False),
])
def test_which_type_changes_narrow(old, new, widening) -> None:
    assert widens(_t(old), _t(new)) is widening


def accounts(target: str, declare_schema: bool = True) -> Registry:
    r = Registry()

    @r.schema("Withdrawal", 1)
    class Withdrawal(msgspec.Struct):
        account_id: str
        amount_cents: int
        reference: str = ""

    if declare_schema:
        @r.schema("MoneyWithdrawn", 1)
        class MoneyWithdrawn(msgspec.Struct):
            account_id: str
            amount_cents: int
            reference: str = ""

    r.rename_type("Withdrawal", 1, target)
    return r


def test_a_typo_in_a_rename_target_fails_naming_the_meant_schema_and_what_to_write() -> None:
    report = check_upcasters(accounts("MoneyWithdrawl"), examples=EXAMPLES)
    assert not report.ok
    by_node = {(n.name, f.property): f for n, f in report.failures}
    typo = by_node[("MoneyWithdrawl v1", "schemas")]
    assert typo.message == (
        "rename Withdrawal v1 -> MoneyWithdrawl v1 emits MoneyWithdrawl v1, which has no schema: what it emits "
        "there is never validated; did you mean MoneyWithdrawn?"
    )
    assert typo.details[0] == (
        "MoneyWithdrawn v1 has a schema and no step produces it: if MoneyWithdrawl is a typo, correct it in "
        "rename Withdrawal v1 -> MoneyWithdrawl v1"
    )
    orphan = by_node[("MoneyWithdrawn v1", "schemas")]
    assert "MoneyWithdrawn v1 is a head schema that no step produces, while rename Withdrawal v1 -> " in orphan.message
    assert "a misspelt step?" in orphan.message
    assert not check_upcasters(accounts("MoneyWithdrawl"), examples=EXAMPLES, strict=False).failures


def test_a_rename_target_without_a_schema_says_which_schema_to_add_with_its_code() -> None:
    report = check_upcasters(accounts("MoneyWithdrawn", declare_schema=False), examples=EXAMPLES)
    gap = next(f for n, f in report.failures if n.name == "MoneyWithdrawn v1")
    assert gap.property == "schemas"
    assert "did you mean" not in gap.message
    assert gap.details == [
        "otherwise add a schema for the rename target:",
        '@registry.schema("MoneyWithdrawn", 1)',
        "class MoneyWithdrawn(msgspec.Struct):",
        "    account_id: str",
        "    amount_cents: int",
        "    reference: str = ''",
    ]
    lenient = check_upcasters(accounts("MoneyWithdrawn", declare_schema=False), examples=EXAMPLES, strict=False)
    assert lenient.ok
    note = next(n for n in lenient.not_generated if n.startswith("MoneyWithdrawn v1"))
    assert '@registry.schema("MoneyWithdrawn", 1)' in note and "amount_cents: int" in note


def test_a_head_above_v1_that_no_step_produces_is_named_with_the_step_that_went_elsewhere() -> None:
    r = Registry()

    @r.schema("Note", 1)
    class NoteV1(msgspec.Struct):
        text: str

    @r.schema("Note", 2)
    class NoteV2(msgspec.Struct):
        text: str

    @r.schema("Memo", 1)
    class Memo(msgspec.Struct):
        text: str

    r.rename_type("Note", 1, "Memo")
    found = failures(check_upcasters(r, examples=EXAMPLES))
    assert found[("Note v2", "schemas")] == (
        "Note v2 is a head schema that no step produces: rename Note v1 -> Memo v1 emits Memo v1 instead"
    )


def test_unknown_declarations_are_a_registry_error() -> None:
    r = Registry()
    with pytest.raises(RegistryError, match="unknown declaration: .*renames"):
        r.upcaster("A", 1, to=("A", 2), renames={"a": "b"})
    with pytest.raises(RegistryError, match=r"convert=\{'x': \.\.\.\} takes a rule"):
        r.upcaster("A", 1, to=("A", 2), convert={"x": 5})
    with pytest.raises(RegistryError, match="there is no upcaster from A v1"):
        r.declare("A", 1, remove=["x"])


def test_declare_adds_to_what_a_step_declared() -> None:
    r = Registry()
    r.fields("A", 1, rename={"a": "b"})
    r.declare("A", 1, remove=["c"], convert={"b": str})
    said = r.steps[("A", 1)].declared
    assert said.rename == {"a": "b"} and said.remove == {"c"} and said.convert["b"] is str
