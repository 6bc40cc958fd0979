"""What a dict step (or an ``emit``) may return for a schema: that schema's fields and no others.

A field the schema does not declare used to be written into the payload
unvalidated (a Struct decoder ignores fields it does not know): an
``emit(..., {"stream": ...})`` meant to move an event kept ``stream`` in its
payload. Such an event is quarantined now, the reason naming the step and
the fields; types without a schema take any payload.
"""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa

from eventmig import Registry, new_event
from eventmig.jobs.migrate import migrate
from eventmig.projection.api import STREAM, Projection
from eventmig.jobs.rebuild import RebuildFailed, rebuild
from eventmig.ports import EventStore
from eventmig.testing.checks import check_upcasters
from eventmig.model.registry import emit


class ShippedV1(msgspec.Struct):
    order_id: str


class Shipped(msgspec.Struct, rename="camel"):
    order_id: str
    carrier: str


class ShippedFrom(msgspec.Struct, rename="camel"):
    order_id: str
    carrier: str
    stream: str = ""  # a payload field that happens to share a name with the envelope's


def _registry(extra: dict, head: type = Shipped) -> Registry:
    registry = Registry()
    registry.schema("Shipped", 1)(ShippedV1)
    registry.schema("Shipped", 2)(head)

    @registry.upcaster("Shipped", 1, to=[("Shipped", 2), ("Noted", 1)], name="add_carrier")
    def add_carrier(d: dict) -> list:
        return [emit("Shipped", 2, {"orderId": d["order_id"], "carrier": "dhl", **extra}),
                emit("Noted", 1, {"stream": "anything", "metadata": 1})]  # Noted has no schema: any payload

    return registry


def _migrated(store: EventStore, registry: Registry) -> tuple[list[str], list[bytes]]:
    store.append("order-1", [new_event("Shipped", {"order_id": "1"})])
    report = migrate(store, registry.compile(), workers=1)
    target = store.at_epoch(report.target_epoch).read_stream("order-1")
    return [q.reason for q in store.quarantine(report.run_id)], [e.data for e in target]


def test_an_emitted_stream_field_the_schema_does_not_declare_is_quarantined(store: EventStore):
    reasons, written = _migrated(store, _registry({"stream": "shipments-1"}))
    assert written == []
    assert reasons == [
        "upcaster add_carrier returned Shipped v2 with field(s) 'stream' that its schema does not declare; a step "
        "returns only the payload: an event keeps its stream (renamed only by --stream-map), its id and its metadata"
    ]


@pytest.mark.parametrize(
    ("extra", "head", "quarantined"),
    [
        ({"weight": 3}, Shipped, "with field(s) 'weight' that its schema does not declare"),
        ({"order_id": "1"}, Shipped, "with field(s) 'order_id' that its schema does not declare"),  # not as encoded
        ({"stream": "payload value"}, ShippedFrom, None),  # declared by the schema: a payload field like any other
        ({}, Shipped, None),
    ],
)
def test_only_the_schema_s_fields_as_encoded(store: EventStore, extra: dict, head: type, quarantined: str | None):
    reasons, written = _migrated(store, _registry(extra, head))
    if quarantined is None:
        assert reasons == [] and len(written) == 2
        assert msgspec.json.decode(written[1]) == {"stream": "anything", "metadata": 1}
    else:
        assert written == [] and len(reasons) == 1 and quarantined in reasons[0]
        assert "a step returns only the payload" not in reasons[0]


def test_the_property_checks_and_a_rebuild_say_the_same(store: EventStore, store_url: str):
    registry = _registry({"stream": "shipments-1"})
    report = check_upcasters(registry, examples=5, strict=False)  # the runtime rule alone, no laws
    (failure,) = [f for n in report.nodes for f in n.failures]
    assert failure.property == "reaches heads" and "'stream' that its schema does not declare" in failure.message

    store.append("order-1", [new_event("Shipped", {"order_id": "1"})])
    table = sa.Table("shipped", sa.MetaData(), sa.Column("k", sa.Text, primary_key=True), sa.Column("c", sa.Text))
    shipped = Projection("shipped", version=1, tables=[table], state=dict, key=STREAM, initial=dict)

    @shipped.on(Shipped)
    def on_shipped(state: dict, e: Shipped) -> None:
        state["carrier"] = e.carrier

    shipped.rows(lambda k, s: [(k, s.get("carrier"))])
    # a split goes the registry's way; a dict step with one output, the rebuild's own shorter way
    one_output = Registry()
    one_output.schema("Shipped", 1)(ShippedV1)
    one_output.schema("Shipped", 2)(Shipped)
    one_output.fields("Shipped", 1, rename={"order_id": "orderId"}, defaults={"carrier": "dhl", "stream": "s-1"})
    for chains in (registry, one_output):
        with pytest.raises(RebuildFailed, match=r"cannot decode Shipped event at order-1@1 .*'stream' that its schema"):
            rebuild(store, [shipped], registry=chains, read_models=store_url, workers=1)
