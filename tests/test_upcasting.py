"""The registry: registration errors, chain validation, and every kind of step."""

from __future__ import annotations

import msgspec
import pytest

from eventmig import EventContext, Registry, RegistryError, TypeSuffix, UpcastError, emit
from eventmig.model.events import MetadataKey, version_location
from registries import raw_hooks, tagged_sets


def encode(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def outputs(outcome) -> list[tuple[str, int, dict]]:
    return [(t, v, msgspec.json.decode(data)) for t, v, data, _ in outcome.events]


# ------------------------------------------------------------ validation errors
def test_two_steps_from_the_same_version_fail_at_registration():
    r = Registry()
    r.fields("A", 1, rename={"x": "y"})
    with pytest.raises(RegistryError, match=r"two upcasters from A v1: fields A v1 -> v2 and"):
        r.fields("A", 1, defaults={"z": 0})


def test_cycle_is_reported_with_its_path():
    r = Registry()
    r.rename_type("A", 1, to="B", to_version=1)
    r.rename_type("B", 1, to="A", to_version=1)
    with pytest.raises(RegistryError) as err:
        r.compile()
    assert "cycle: A v1 -> B v1 -> A v1" in str(err.value)


def test_version_gap_is_reported():
    r = Registry()
    r.fields("A", 1, to_version=3, defaults={"x": 1})

    @r.schema("A", 3)
    class A3(msgspec.Struct):
        x: int

    with pytest.raises(RegistryError, match=r"version gap in A: v2 missing below v3"):
        r.compile()


def test_type_that_does_not_start_at_version_one_is_a_gap():
    r = Registry()

    @r.schema("A", 2)
    class A2(msgspec.Struct):
        x: int

    with pytest.raises(RegistryError, match=r"version gap in A: v1 missing"):
        r.compile()


def test_output_with_no_path_to_a_head():
    r = Registry()
    r.fields("A", 1)  # -> A v2
    r.fields("A", 3)  # -> A v4, so A v2 is a dead end below the head
    with pytest.raises(RegistryError, match=r"A v2 has no upcaster and is not the head \(v4\)"):
        r.compile()


def test_step_going_back_to_an_older_version_is_refused():
    r = Registry()
    r.upcaster("A", 2, to=("A", 1))(lambda d: d)
    with pytest.raises(RegistryError, match=r"goes from A v2 back to A v1"):
        r.compile()


def test_all_problems_are_reported_at_once():
    r = Registry()
    r.rename_type("A", 1, to="B", to_version=1)
    r.rename_type("B", 1, to="A", to_version=1)
    r.fields("C", 1, to_version=3)
    with pytest.raises(RegistryError) as err:
        r.compile()
    assert "cycle" in str(err.value) and "version gap in C" in str(err.value)


def test_typed_step_needs_registered_schemas():
    r = Registry()

    class Loose(msgspec.Struct):
        x: int

    with pytest.raises(RegistryError, match="registered schema"):

        @r.upcaster
        def step(e: Loose) -> Loose:
            return e


def test_bad_version_numbers_are_refused():
    r = Registry()
    with pytest.raises(RegistryError, match="int >= 1"):
        r.fields("A", 0)


# ------------------------------------------------------------------------ steps
class V1(msgspec.Struct):
    name: str
    price: float


class V2(msgspec.Struct):
    name: str
    price_cents: int


class V3(msgspec.Struct):
    name: str
    price_cents: int
    currency: str = "EUR"


def typed_registry() -> Registry:
    r = Registry()
    r.schema("Priced", 1)(V1)
    r.schema("Priced", 2)(V2)
    r.schema("Priced", 3)(V3)

    @r.upcaster
    def cents(e: V1) -> V2:
        return V2(e.name, round(e.price * 100))

    r.fields("Priced", 2, defaults={"currency": "EUR"})
    return r


def test_typed_then_dict_chain_reaches_the_head():
    c = typed_registry().compile()
    out = c.upcast("Priced", 1, encode({"name": "tea", "price": 2.5}))
    assert out.kind == "upcast"
    assert outputs(out) == [("Priced", 3, {"name": "tea", "price_cents": 250, "currency": "EUR"})]
    chain = out.events[0][3]
    assert chain[0].endswith("typed_registry.<locals>.cents") and chain[1] == "fields Priced v2 -> v3"


def test_compiled_chain_equals_stepwise_application():
    c = typed_registry().compile()
    payload = encode({"name": "tea", "price": 2.5})
    step1 = c.upcast("Priced", 1, payload)
    via_v2 = c.upcast("Priced", 2, encode(msgspec.to_builtins(V2("tea", 250))))
    assert outputs(step1) == outputs(via_v2)


def test_event_at_head_is_unchanged_and_unknown_types_pass_through():
    c = typed_registry().compile()
    head = c.upcast("Priced", 3, b'{"name":"x","price_cents":1,"currency":"SEK"}')
    assert head.kind == "head"
    assert outputs(head) == [("Priced", 3, {"name": "x", "price_cents": 1, "currency": "SEK"})]
    unknown = c.upcast("Mystery", 7, b'{"b": 1, "a": [1, 2]}')
    assert unknown.kind == "unknown"
    assert unknown.events[0][2] == b'{"a":[1,2],"b":1}'  # canonical bytes, same content


def test_rename_type_keeps_the_payload():
    r = Registry()
    r.rename_type("ItemAdded", 1, to="LineItemAdded", to_version=1)
    out = r.compile().upcast("ItemAdded", 1, b'{"sku":"a"}')
    assert outputs(out) == [("LineItemAdded", 1, {"sku": "a"})]


def test_fields_helper_renames_converts_defaults_and_removes():
    r = Registry()
    r.fields("A", 1, rename={"qty": "quantity"}, convert={"quantity": int, "price": lambda p: round(p * 100)},
             defaults={"currency": "EUR", "quantity": 1}, remove=["legacy"])
    out = r.compile().upcast("A", 1, encode({"qty": "3", "price": 1.5, "legacy": True}))
    assert outputs(out) == [("A", 2, {"quantity": 3, "price": 150, "currency": "EUR"})]
    defaulted = r.compile().upcast("A", 1, encode({"price": 1.0}))
    assert outputs(defaulted)[0][2]["quantity"] == 1


def test_split_into_several_events_of_other_types():
    r = Registry()

    def split(data):
        return [emit("AddressRecorded", 1, {"address": data["address"]}), emit("Shipped", 2, {"id": data["id"]})]

    r.split("Shipped", 1, into=[("AddressRecorded", 1), ("Shipped", 2)], fn=split)
    out = r.compile().upcast("Shipped", 1, encode({"id": 7, "address": "here"}))
    assert outputs(out) == [("AddressRecorded", 1, {"address": "here"}), ("Shipped", 2, {"id": 7})]


def test_split_outputs_continue_through_their_own_chains():
    r = Registry()
    r.split("Old", 1, into=[("New", 1)], fn=lambda d: [emit("New", 1, {"n": i}) for i in range(d["count"])])
    r.fields("New", 1, defaults={"flag": True})
    out = r.compile().upcast("Old", 1, encode({"count": 3}))
    assert outputs(out) == [("New", 2, {"n": i, "flag": True}) for i in range(3)]


def test_drop_produces_nothing():
    r = Registry()
    r.drop("Noise", 1)
    out = r.compile().upcast("Noise", 1, b"{}")
    assert out.kind == "dropped" and out.events == []


def test_typed_split_from_return_annotation():
    r = Registry()

    @r.schema("Shipped", 1)
    class ShippedV1(msgspec.Struct):
        id: int
        address: str

    @r.schema("Shipped", 2)
    class ShippedV2(msgspec.Struct):
        id: int

    @r.schema("AddressRecorded", 1)
    class Address(msgspec.Struct):
        id: int
        address: str

    def split(e: ShippedV1) -> list[Address | ShippedV2]:
        return [Address(e.id, e.address), ShippedV2(e.id)]

    r.upcaster(split)
    assert r.steps[("Shipped", 1)].targets == (("AddressRecorded", 1), ("Shipped", 2))
    out = r.compile().upcast("Shipped", 1, encode({"id": 1, "address": "x"}))
    assert [(t, v) for t, v, _ in outputs(out)] == [("AddressRecorded", 1), ("Shipped", 2)]


def test_step_may_read_the_event_context():
    r = Registry()

    def stamp(data, context: EventContext):
        return {**data, "stream": context.stream, "by": context.metadata.get("user")}

    r.upcaster("A", 1, to=("A", 2))(stamp)
    c = r.compile()
    assert c.needs_context
    ctx = EventContext("s-1", "A", 1, {"user": "ada"})
    assert outputs(c.upcast("A", 1, b"{}", ctx)) == [("A", 2, {"stream": "s-1", "by": "ada"})]


# ------------------------------------------------------------------- failures
def test_malformed_payloads_raise_readable_upcast_errors():
    c = typed_registry().compile()
    with pytest.raises(UpcastError, match="Priced v1 payload is not valid JSON"):
        c.upcast("Priced", 1, b'{"name": ')
    with pytest.raises(UpcastError, match=r"does not match V1: Expected `float`, got `str` - at `\$.price`"):
        c.upcast("Priced", 1, b'{"name": "x", "price": "cheap"}')


def test_step_that_raises_is_reported_with_its_name():
    r = Registry()
    r.upcaster("A", 1, to=("A", 2), name="explode")(lambda d: 1 / 0)
    with pytest.raises(UpcastError, match=r"upcaster explode failed on A v1: ZeroDivisionError"):
        r.compile().upcast("A", 1, b"{}")


def test_output_not_matching_the_head_schema_is_an_error():
    r = typed_registry()
    r._steps.pop(("Priced", 2))
    r.fields("Priced", 2, remove=["price_cents"])  # drops a required field of the head
    with pytest.raises(UpcastError, match=r"Priced v3 payload does not match its head schema .*price_cents"):
        r.compile().upcast("Priced", 2, b'{"name":"x","price_cents":1}')


def test_undeclared_output_is_an_error():
    r = Registry()
    r.upcaster("A", 1, to=("A", 2), name="liar")(lambda d: emit("B", 1, d))
    with pytest.raises(UpcastError, match=r"liar produced B v1, which it does not declare"):
        r.compile().upcast("A", 1, b"{}")


def test_version_newer_than_head_and_missing_step_are_explained():
    c = typed_registry().compile()
    with pytest.raises(UpcastError, match="Priced v9 is newer than the head schema Priced v3"):
        c.upcast("Priced", 9, b"{}")


# ------------------------------------------------------------ version locations
def test_metadata_key_location():
    loc = MetadataKey("v")
    assert loc.read("A", {}) == ("A", 1)
    assert loc.read("A", {"v": 3}) == ("A", 3)
    meta: dict = {}
    assert loc.write("A", 2, meta) == "A" and meta == {"v": 2}
    with pytest.raises(ValueError):
        loc.read("A", {"v": "two"})


def test_type_suffix_location():
    loc = TypeSuffix(".v")
    assert loc.read("OrderPlaced", {}) == ("OrderPlaced", 1)
    assert loc.read("OrderPlaced.v3", {}) == ("OrderPlaced", 3)
    assert loc.write("OrderPlaced", 1, {}) == "OrderPlaced"
    assert loc.write("OrderPlaced", 2, {}) == "OrderPlaced.v2"
    assert version_location("type-suffix:_v") == TypeSuffix("_v")
    assert version_location("metadata:schema") == MetadataKey("schema")
    with pytest.raises(ValueError):
        version_location("header:x")


def test_fingerprint_changes_with_the_code_of_a_step():
    a, b = Registry(), Registry()
    a.upcaster("A", 1, to=("A", 2), name="s")(lambda d: {**d, "x": 1})
    b.upcaster("A", 1, to=("A", 2), name="s")(lambda d: {**d, "x": 2})
    assert a.fingerprint() != b.fingerprint()


def test_reference_shop_registry_compiles(shop_registry):
    assert shop_registry.heads["OrderPlaced"] == 3
    assert shop_registry.heads["LineItemAdded"] == 1
    assert "CartViewed" not in shop_registry.heads


def test_canonical_output_sorts_keys_inside_raw_fields_too():
    out = raw_hooks().compile().upcast("Hook", 1, b'{"url":"u","body":{"b":1,"a":[{"d":2,"c":3}]}}')
    assert out.events[0][2] == b'{"body":{"a":[{"c":3,"d":2}],"b":1},"target":"u"}'


def test_sets_in_head_outputs_are_written_sorted_as_verify_reads_them():
    """A set's fast encoding follows its hash order, which differs between processes and from
    the sorted order of canonical bytes; once stored as a JSON array no reader can undo it."""
    r = tagged_sets(frozen=True)
    tags = [f"tag-{i}" for i in range(20, 0, -1)]
    data = msgspec.json.encode({"tags": tags})
    compiled = r.compile()
    written = compiled.upcast("Tagged", 1, data, canonical=False).events[0][2]
    assert msgspec.json.decode(written) == {"tags": sorted(tags)}
    assert written == compiled.upcast("Tagged", 1, data).events[0][2]
