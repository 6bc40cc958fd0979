"""Strategies for whole stored events and stream histories of a registry."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import upcasters as shop  # the reference service, on sys.path through conftest
from eventmig import Registry, TypeSuffix
from eventmig.model.events import RecordedEvent
from eventmig.testing.events import generatable_nodes, stored_events, stream_histories, to_new_events

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.data())
def test_stored_events_of_every_shop_schema_decode_as_that_schema(shop_registry, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(generatable_nodes(shop_registry)))
    event = data.draw(stored_events(shop_registry, *node))
    assert isinstance(event, RecordedEvent)
    meta = msgspec.json.decode(event.metadata)
    assert shop_registry.version_location.read(event.type, meta) == node
    schema = shop_registry.registry.schemas[node]
    msgspec.json.decode(event.data, type=schema)  # valid against its own schema
    assert event.event_id and event.stream and event.version >= 1


def test_every_node_with_a_schema_is_generatable_and_others_are_not(shop_registry) -> None:
    nodes = generatable_nodes(shop_registry)
    assert ("OrderPlaced", 1) in nodes and ("LineItemAdded", 1) in nodes
    assert ("CartViewed", 1) not in nodes  # dropped by a dict step, no schema
    with pytest.raises(ValueError, match="CartViewed v1: it has no schema"):
        stored_events(shop_registry, "CartViewed", 1)


def test_version_one_events_come_with_and_without_the_version_key(shop_registry) -> None:
    events = stored_events(shop_registry, "OrderPlaced", 1)
    without = find(events, lambda e: b"schema_version" not in e.metadata)
    with_key = find(events, lambda e: b"schema_version" in e.metadata)
    assert shop_registry.version_location.read(without.type, msgspec.json.decode(without.metadata)) == ("OrderPlaced", 1)
    assert msgspec.json.decode(with_key.metadata)["schema_version"] == 1
    later = find(stored_events(shop_registry, "OrderPlaced", 2), lambda e: True)
    assert msgspec.json.decode(later.metadata)["schema_version"] == 2


def test_fields_with_a_default_are_sometimes_absent_as_in_events_stored_before_they_existed() -> None:
    r = Registry()

    @r.schema("Signup", 1)
    class Signup(msgspec.Struct, rename="camel"):
        user_id: str
        referral_code: str | None = None
        tags: list[str] = msgspec.field(default_factory=list)

    def fields(e: RecordedEvent) -> set[str]:
        return set(msgspec.json.decode(e.data))

    events = stored_events(r, "Signup", 1)
    bare = find(events, lambda e: fields(e) == {"userId"})
    assert msgspec.json.decode(bare.data, type=Signup).tags == []  # msgspec fills the default
    find(events, lambda e: fields(e) == {"userId", "referralCode", "tags"})
    find(events, lambda e: fields(e) == {"userId", "tags"})


@FAST
@given(st.data())
def test_the_version_goes_where_the_registry_keeps_it(data: st.DataObject) -> None:
    r = Registry(version_location=TypeSuffix())

    @r.schema("Paid", 1)
    class PaidV1(msgspec.Struct):
        amount: int

    @r.schema("Paid", 2)
    class Paid(msgspec.Struct):
        cents: int

    r.fields("Paid", 1, rename={"amount": "cents"})
    assert data.draw(stored_events(r, "Paid", 2)).type == "Paid.v2"
    assert data.draw(stored_events(r, "Paid", 1)).type == "Paid"


@FAST
@given(st.data())
def test_stored_events_take_fixed_or_drawn_stream_and_metadata(shop_registry, data: st.DataObject) -> None:
    event = data.draw(stored_events(shop_registry, "OrderPlaced", 3, stream="order-1", stream_version=4,
                                    metadata={"tenant": "acme"}))
    assert (event.stream, event.version) == ("order-1", 4)
    assert msgspec.json.decode(event.metadata) == {"tenant": "acme", "schema_version": 3}


@FAST
@given(history=stream_histories(shop.registry, max_size=8))
def test_histories_are_consecutive_streams_of_mixed_types_and_versions(history: list[RecordedEvent]) -> None:
    assert 1 <= len(history) <= 8
    assert len({e.stream for e in history}) == 1
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    positions = [e.position for e in history]
    assert positions == sorted(set(positions))
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    assert len({e.event_id for e in history}) == len(history)


def test_histories_mix_types_and_versions(shop_registry) -> None:
    mixed = find(
        stream_histories(shop_registry, max_size=12),
        lambda h: len({e.type for e in h}) >= 3 and b'"schema_version":2' in b"".join(e.metadata for e in h),
        settings=settings(database=None, max_examples=500, phases=[Phase.generate]),
    )
    assert len(mixed) >= 3


@FAST
@given(history=st.data())
def test_histories_of_heads_only_and_of_chosen_nodes(shop_registry, history: st.DataObject) -> None:
    heads = history.draw(stream_histories(shop_registry, heads_only=True))
    assert all(shop_registry.version_location.read(e.type, msgspec.json.decode(e.metadata)) in
               {(t, v) for t, v in shop_registry.heads.items()} for e in heads)
    only = history.draw(stream_histories(shop_registry, nodes=[("OrderPlaced", 1)], stream="order-9", first_version=5))
    assert {e.type for e in only} == {"OrderPlaced"}
    assert only[0].version == 5 and only[0].stream == "order-9"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_history_appends_to_a_store_and_reads_back(eventmig_make_sqlite_store, shop_registry, data) -> None:
    history = data.draw(stream_histories(shop_registry, max_size=6))
    store = eventmig_make_sqlite_store()
    store.append(history[0].stream, to_new_events(history))
    back = store.read_stream(history[0].stream)
    assert [(e.event_id, e.type, e.data, e.metadata, e.recorded_at) for e in back] == [
        (e.event_id, e.type, e.data, e.metadata, e.recorded_at) for e in history
    ]
