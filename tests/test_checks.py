"""Property checks of whole registries: sound upcasters pass, broken ones are caught and shrunk."""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Annotated

import msgspec
import pytest

from eventmig import Registry
from eventmig.model.events import canonical_json
from eventmig.model.chains import CompiledRegistry, Outcome
from eventmig.testing.checks import CheckFailed, RegistryReport, assert_upcasters, check_upcasters
from registries import raw_hooks, tagged_sets

EXAMPLES = 60


def failure_of(report: RegistryReport, name: str, prop: str | None = None):
    failures = [f for n, f in report.failures if n.name == name and prop in (None, f.property)]
    assert failures, report.format()
    return failures[0]


def products(body) -> Registry:
    """Product v1 -> v2 through a typed step returning ``body(event, Product)``."""
    r = Registry()

    @r.schema("Product", 1)
    class ProductV1(msgspec.Struct):
        sku: str
        name: str
        qty: int

    @r.schema("Product", 2)
    class Product(msgspec.Struct):
        sku: str
        name: str
        initial: str
        cents_per_item: int

    @r.upcaster(name="products.v2", remove=["qty"],
                convert={"initial": "the name's first letter", "cents_per_item": "a price list's, by qty"})
    def v2(e: ProductV1) -> Product:
        return body(e, Product)

    return r


def test_the_reference_registry_holds(shop_registry) -> None:
    report = check_upcasters(shop_registry, examples=EXAMPLES)
    assert report.ok, report.format()
    by_name = {n.name: n for n in report.nodes}
    assert by_name["OrderPlaced v1"].examples > 0
    assert by_name["OrderPlaced v1"].chain == [
        (
            "OrderPlaced v1 -> OrderPlaced v2 -> OrderPlaced v3 via upcasters.orders.order_total_in_cents, "
            "fields OrderPlaced v2 -> v3"
        )
    ]
    assert by_name["OrderPlaced v3"].role == "head"
    assert msgspec.json.decode(msgspec.json.encode(report), type=RegistryReport) == report


def test_a_step_that_crashes_on_an_empty_string_is_caught_with_the_minimal_example() -> None:
    report = check_upcasters(products(lambda e, Product: Product(e.sku, e.name, e.name[0].upper(), 100)), examples=EXAMPLES)
    assert not report.ok
    failure = failure_of(report, "Product v1")
    assert failure.property == "upcasts"
    assert "IndexError" in failure.message
    assert failure.example["data"]["name"] == ""  # shrunk: the one value that breaks it
    assert failure.example["data"] == {"sku": "", "name": "", "qty": 0}
    text = report.format()
    assert "Product v1 -> Product v2 via products.v2" in text
    assert '"name":""' in text


def test_a_step_that_crashes_on_zero_is_caught_with_the_minimal_example() -> None:
    failure = failure_of(check_upcasters(products(lambda e, Product: Product(e.sku, e.name, "x", 1000 // e.qty)), examples=EXAMPLES), "Product v1")
    assert "ZeroDivisionError" in failure.message
    assert failure.example["data"] == {"sku": "", "name": "", "qty": 0}


def test_a_step_that_drops_a_required_field_is_caught() -> None:
    r = Registry()

    @r.schema("Line", 1)
    class LineV1(msgspec.Struct):
        sku: str
        qty: int

    @r.schema("Line", 2)
    class Line(msgspec.Struct):
        sku: str
        quantity: int

    r.fields("Line", 1, rename={"qty": "quantity"}, remove=["sku"])  # oops: sku is required in v2
    failure = failure_of(check_upcasters(r, examples=EXAMPLES), "Line v1", "reaches heads")
    assert "missing required field `sku`" in failure.message
    assert failure.example["data"] == {"sku": "", "qty": 0}


def test_a_dict_step_that_assumes_a_defaulted_field_is_present_is_caught() -> None:
    """v1 events stored before ``nickname`` existed have no such key: the rename gives no ``alias``."""
    r = Registry()

    @r.schema("User", 1)
    class UserV1(msgspec.Struct):
        id: str
        nickname: str = ""

    @r.schema("User", 2)
    class User(msgspec.Struct):
        id: str
        alias: str

    r.fields("User", 1, rename={"nickname": "alias"})
    failure = failure_of(check_upcasters(r, examples=EXAMPLES), "User v1")
    assert failure.property == "reaches heads"
    assert "missing required field `alias`" in failure.message
    assert failure.example["data"] == {"id": ""}  # shrunk to the one absent field


def test_nondeterministic_steps_are_caught() -> None:
    def with_uuid(e, Product):
        return Product(e.sku, e.name, str(uuid.uuid4()), 1)

    def with_random(e, Product):
        return Product(e.sku, e.name, "x", random.randint(0, 10**9))

    for body in (with_uuid, with_random):
        report = check_upcasters(products(body), examples=EXAMPLES)
        failure = failure_of(report, "Product v1")
        assert failure.property == "deterministic", report.format()
        assert "different outputs" in failure.message
        assert failure.example["data"] == {"sku": "", "name": "", "qty": 0}


def test_a_chain_that_differs_from_its_steps_applied_one_by_one_is_caught() -> None:
    """The chain hands Structs from step to step; a store holds JSON. An int in a float
    field survives the first and not the second, so str() of it differs."""
    r = Registry()

    @r.schema("Reading", 1)
    class ReadingV1(msgspec.Struct):
        celsius: int

    @r.schema("Reading", 2)
    class ReadingV2(msgspec.Struct):
        celsius: float

    @r.schema("Reading", 3)
    class Reading(msgspec.Struct):
        label: str

    @r.upcaster
    def as_float(e: ReadingV1) -> ReadingV2:
        return ReadingV2(e.celsius)  # still an int at run time

    @r.upcaster(remove=["celsius"], convert={"label": "the reading, as text"})
    def labelled(e: ReadingV2) -> Reading:
        return Reading(f"{e.celsius} C")

    report = check_upcasters(r, examples=EXAMPLES)
    failure = failure_of(report, "Reading v1")
    assert failure.property == "stepwise"
    assert '"0 C"' in failure.message and '"0.0 C"' in failure.message
    assert failure.example["data"] == {"celsius": 0}
    assert not [f for n, f in report.failures if n.name == "Reading v2"]


class SchemaNormalisingRegistry(CompiledRegistry):
    """An engine that re-encodes events at their head through the head schema.

    Plausible as an optimisation, and wrong: an event stored before a field
    with a default existed gains that field, so it is no longer the event stored.
    """

    def upcast(self, type, version, data, context=None, *, canonical=True) -> Outcome:
        outcome = super().upcast(type, version, data, context, canonical=canonical)
        schema = self.registry.schemas.get((type, version))
        if outcome.kind != "head" or schema is None:
            return outcome
        return Outcome("head", [(type, version, canonical_json(msgspec.json.decode(data, type=schema)), ())])


def test_an_event_at_its_head_that_comes_out_changed_is_caught() -> None:
    r = Registry()

    @r.schema("Refund", 1)
    class Refund(msgspec.Struct):
        order_id: str
        reason: str = "unknown"

    report = check_upcasters(SchemaNormalisingRegistry(r), examples=EXAMPLES)
    failure = failure_of(report, "Refund v1")
    assert failure.property == "head unchanged"
    assert failure.example["data"] == {"order_id": ""}
    assert '"reason":"unknown"' in failure.message
    assert check_upcasters(r, examples=EXAMPLES).ok


class HashOrderWritingRegistry(CompiledRegistry):
    """An engine that writes head sets in their hash order, as a plain fast encoder does."""

    def upcast(self, type, version, data, context=None, *, canonical=True) -> Outcome:
        outcome = super().upcast(type, version, data, context, canonical=canonical)
        if canonical:
            return outcome
        events = []
        for t, v, out, path in outcome.events:
            schema = self.registry.schemas[(t, v)]
            events.append((t, v, msgspec.json.encode(msgspec.json.decode(out, type=schema)), path))
        return Outcome(outcome.kind, events)


def test_outputs_migrate_would_write_differently_from_what_verify_expects_are_caught() -> None:
    r = tagged_sets()
    assert check_upcasters(r, examples=EXAMPLES).ok
    report = check_upcasters(HashOrderWritingRegistry(r), examples=EXAMPLES)
    failure = failure_of(report, "Tagged v1")
    assert failure.property == "verifies", report.format()
    assert "migrate writes what reads back as" in failure.message and "verify expects" in failure.message
    tags = failure.example["data"]["tags"]
    members = set(tags)
    assert list(members) != sorted(members)  # what the fast encoder writes is not the canonical order
    # Shrunk to a handful of members; how few depends on this process's string hashes.
    assert 2 <= len(members) <= 3, tags


def test_nodes_without_a_schema_fail_strict_checks_with_what_to_add_and_are_notes_otherwise() -> None:
    r = Registry()

    @r.schema("Member", 1)
    class Member(msgspec.Struct):
        name: str

    r.rename_type("User", 1, "Member")  # User v1 has no schema: its events cannot be generated
    r.drop("Ping", 1)  # no schema either, but nothing reaches the new epoch: a note, not a gap
    strict = check_upcasters(r, examples=10)
    assert not strict.ok
    user = failure_of(strict, "User v1", "schemas")
    assert "User v1 has no schema, so its events are never generated" in user.message
    assert user.details == ['@registry.schema("User", 1)', "class User(msgspec.Struct):",
                            "    ...  # the fields of its payload"]
    assert [n.split(":")[0] for n in strict.not_generated] == ["Ping v1"]

    lenient = check_upcasters(r, examples=10, strict=False)
    assert lenient.ok
    assert [n.split(":")[0] for n in lenient.not_generated] == ["Ping v1", "User v1"]
    user_node = next(n for n in lenient.nodes if n.name == "User v1")
    assert not user_node.generated and user_node.examples == 0
    assert "User v1 has no schema" in user_node.note and '@registry.schema("User", 1)' in user_node.note
    assert "not generated: User v1" in lenient.format()


def test_schemas_with_unparsed_raw_fields_are_generated_and_hold() -> None:
    r = raw_hooks()
    report = check_upcasters(r, examples=EXAMPLES)
    assert report.ok, report.format()
    assert all(n.generated and n.examples > 0 for n in report.nodes)


class Cents:
    """A type msgspec knows only through hooks: no strategy is derived for it."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_a_schema_that_cannot_be_generated_fails_its_node_and_the_others_are_still_checked() -> None:
    r = Registry()

    @r.schema("Refund", 1)
    class Refund(msgspec.Struct):
        amount: Cents

    @r.schema("Coupon", 1)
    class Coupon(msgspec.Struct):
        code: Annotated[str, msgspec.Meta(min_length=8, max_length=4)]  # no string fits

    @r.schema("Note", 1)
    class Note(msgspec.Struct):
        text: str

    report = check_upcasters(r, examples=10)
    assert not report.ok
    refund = failure_of(report, "Refund v1")
    assert refund.property == "generation" and "register_strategy" in refund.message
    coupon = failure_of(report, "Coupon v1")
    assert coupon.property == "generation" and "min_size=8" in coupon.message
    note = next(n for n in report.nodes if n.name == "Note v1")
    assert note.generated and note.examples > 0 and not note.failures
    assert report.not_generated == []
    assert "Refund v1: property 'generation' failed" in report.format()


def test_assert_upcasters_raises_an_assertion_error_with_the_report() -> None:
    with pytest.raises(AssertionError) as caught:
        assert_upcasters(products(lambda e, Product: Product(e.sku, e.name, e.name[0], 1)), examples=EXAMPLES)
    assert isinstance(caught.value, CheckFailed)
    assert "Product v1: property 'upcasts' failed" in str(caught.value)
    assert "minimal example" in str(caught.value)


def test_checks_are_reproducible_and_seedable() -> None:
    registry = products(lambda e, Product: Product(e.sku, e.name, "x", 1000 // e.qty))
    first = check_upcasters(registry, examples=EXAMPLES)
    assert check_upcasters(registry, examples=EXAMPLES) == first
    seeded = check_upcasters(registry, examples=EXAMPLES, seed=7)
    assert seeded.failures[0][1].example == first.failures[0][1].example  # shrinking reaches the same minimum


def test_a_failure_that_does_not_reproduce_is_reported_as_flaky() -> None:
    r = Registry()

    @r.schema("Note", 1)
    class NoteV1(msgspec.Struct):
        text: str

    @r.schema("Note", 2)
    class Note(msgspec.Struct):
        text: str

    calls = itertools.count()

    @r.upcaster
    def once(e: NoteV1) -> Note:
        if next(calls) == 150:  # past the boundary values: a generated event
            raise RuntimeError("only the 151st call fails")
        return Note(e.text)

    report = check_upcasters(r, examples=EXAMPLES)
    failure = failure_of(report, "Note v1")
    assert failure.flaky
    assert "only the 151st call fails" in failure.message
    assert "(flaky)" in report.format()
