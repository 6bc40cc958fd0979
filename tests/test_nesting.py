"""Payloads nested about a thousand levels deep: quarantined with the reason, never a crash.

msgspec decodes within Python's recursion limit, so such a payload raises
RecursionError; migrate, verify, ``eventmig check`` and rebuild each treat
it as what it is, an event that cannot be decoded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import projections as shop
from eventmig.jobs.cutover import switch
from eventmig.jobs.seed import seed
from eventmig.model.events import NewEvent
from eventmig.jobs.migrate import migrate
from eventmig.model.nesting import depth
from eventmig.jobs.rebuild import RebuildFailed, rebuild
from eventmig.ports import EventStore
from eventmig.jobs.verify import verify

REPO = Path(__file__).resolve().parent.parent
DEEP = b"[" * 1000 + b"]" * 1000
REASON = "nested too deeply to decode: 1001 levels"


def _deep_events(store: EventStore) -> None:
    """A head event, an event with an upcaster, an event of a type no schema knows, and deep metadata."""
    cancelled = b'{"order_id":"d1","reason":"r","cancelled_at":"t","deep":' + DEEP + b"}"
    placed = (b'{"order_id":"d2","customer_id":"c","total":1.5,"placed_at":"t","channel":"web","deep":' + DEEP + b"}")
    store.append("order-d1", [NewEvent("OrderCancelled", cancelled)])
    store.append("order-d2", [NewEvent("OrderPlaced", placed)])
    store.append("misc-d3", [NewEvent("NobodyKnowsMe", b'{"deep":' + DEEP + b"}")])
    store.append("misc-d4", [NewEvent("NobodyKnowsMe", b"{}", b'{"deep":' + DEEP + b"}")])


@pytest.mark.parametrize("workers", [1, 2])
def test_migrate_quarantines_deep_payloads_and_goes_on(store: EventStore, shop_registry, workers: int):
    seed(store, 600)
    _deep_events(store)
    seed_after = store.count_events()
    report = migrate(store, shop_registry, workers=workers, batch_size=200)
    assert report.status == "completed" and report.events_read == seed_after and report.quarantined == 4
    quarantined = {q.stream: q.reason for q in store.quarantine(report.run_id)}
    assert set(quarantined) == {"order-d1", "order-d2", "misc-d3", "misc-d4"}
    assert quarantined["order-d1"].startswith(f"OrderCancelled v1 payload {REASON}")
    assert quarantined["order-d2"].startswith(f"OrderPlaced v1 payload {REASON}")
    assert quarantined["misc-d4"].startswith(f"unreadable event: metadata {REASON}")
    assert report.quarantine_reasons["OrderCancelled v1 payload nested too deeply to decode"] == 1
    checked = verify(store, shop_registry, workers=workers)
    assert not checked.ok and checked.unaccepted_quarantine == 4  # a verdict, not a crash
    store.accept_quarantine(report.run_id)
    assert verify(store, shop_registry, workers=workers).ok
    switch(store, shop_registry, workers=1)
    assert store.active_epoch() == 2 and store.stream_version("order-d1") is None


def test_rebuild_reports_a_deep_payload_as_an_event_it_cannot_decode(store: EventStore, store_url: str, shop_registry):
    seed(store, 300)
    cancelled = b'{"order_id":"d1","reason":"r","cancelled_at":"t","deep":' + DEEP + b"}"
    store.append("order-d1", [NewEvent("OrderCancelled", cancelled)])
    with pytest.raises(RebuildFailed) as failed:
        rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=1)
    message = str(failed.value)
    assert message.startswith("cannot decode OrderCancelled event at order-d1@1 (position ")
    assert f"payload {REASON}" in message and failed.value.exit_code == 3


def test_check_reports_a_deep_stored_payload_as_a_failing_event(store: EventStore, store_url: str):
    seed(store, 300)
    _deep_events(store)
    env = {**os.environ, "EVENTMIG_STORE": store_url}
    result = subprocess.run([sys.executable, "-m", "eventmig", "check", "--examples", "5", "--json"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr + result.stdout[-2000:]  # a failed check, not a crash (3)
    failed = {f["stream"]: f["reason"] for f in json.loads(result.stdout)["store"]["failed"]}
    assert failed["order-d1"].startswith(f"OrderCancelled v1 payload {REASON}")
    assert failed["misc-d4"].startswith(f"unreadable event: metadata {REASON}")


def _nested(draw_depth: int, leaf: object) -> object:
    value = leaf
    for i in range(draw_depth):
        value = [value] if i % 2 else {"k[{": value, "s": "]}\\\"["}
    return value


@given(levels=st.integers(0, 60), leaf=st.one_of(st.integers(), st.text(), st.none()))
def test_depth_counts_arrays_and_objects_not_brackets_in_strings(levels: int, leaf: object):
    assert depth(msgspec.json.encode(_nested(levels, leaf))) == levels
