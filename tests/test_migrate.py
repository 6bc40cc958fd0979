"""migrate, verify, switch and rollback through the library, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter

import msgspec
import pytest

from eventmig import Busy, ConfigError, Registry, StoreError, VerificationFailed, WrongExpectedVersion, new_event
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import current_run, migrate
from eventmig.ports import EventStore
from eventmig.backends import open_store
from eventmig.jobs.verify import verify
from registries import raw_hooks, tagged_sets


def source_digest(store: EventStore, epoch: int = 1) -> str:
    """A digest of an epoch's raw rows, every column of every row: proves the source was not touched."""
    d = hashlib.blake2b(digest_size=16)
    for rows in store.at_epoch(epoch).read_all_rows():
        for r in rows:
            d.update(msgspec.json.encode(r) + b"\n")
    return d.hexdigest()


def test_migrate_verify_switch_rollback(store: EventStore, shop_registry):
    seed(store, 3000)
    before = source_digest(store)
    report = migrate(store, shop_registry, batch_size=500)
    assert report.status == "completed" and report.events_read == 3000
    assert report.quarantined == 0
    assert report.before["OrderPlaced v1"] > 0 and "OrderPlaced v1" not in report.after
    assert report.after["OrderPlaced v3"] == sum(n for k, n in report.before.items() if k.startswith("OrderPlaced"))
    assert report.after["LineItemAdded v1"] == report.before["ItemAdded v1"]
    assert report.after["ShippingAddressRecorded v1"] == report.before["OrderShipped v1"]
    assert report.dropped == report.before["CartViewed v1"]
    assert report.events_written == 3000 - report.dropped + report.before["OrderShipped v1"]
    assert source_digest(store) == before  # the source is never written

    target = store.at_epoch(report.target_epoch)
    assert target.count_events() == report.events_written
    v = verify(store, shop_registry)
    assert v.ok, v.problems
    assert v.expected_digest == v.target_digest and v.expected_events == report.events_written

    s = switch(store, shop_registry)
    assert (s.from_epoch, s.to_epoch) == (1, 2)
    with open_store(store._raw_url) as app:  # type: ignore[attr-defined]
        assert app.active_epoch() == 2
        stream = next(s for s in app.list_streams() if s.startswith("order-"))
        events = app.read_stream(stream)
        assert events[0].type == "OrderPlaced" and events[0].decoded_metadata()["schema_version"] == 3
        lineage = events[0].decoded_metadata()["eventmig"]
        assert lineage["source"]["stream"] == stream and lineage["source"]["epoch"] == 1
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        # the new epoch keeps the store's guarantees: optimistic concurrency, unique event ids, positions
        with pytest.raises(WrongExpectedVersion):
            app.append(stream, [new_event("OrderCancelled", {"order_id": "x"})], expected_version=len(events) - 1)
        with pytest.raises(StoreError, match="duplicate event id"):
            app.append(stream, [new_event("OrderCancelled", {"order_id": "x"}, event_id=events[0].event_id)])
        head = app.head_position()
        app.append(stream, [new_event("OrderCancelled", {"order_id": "x"})], expected_version=len(events))
        (appended,) = app.read_stream(stream, from_version=len(events) + 1)
        assert appended.position > head

    r = rollback(store, force=True)
    assert (r.from_epoch, r.to_epoch) == (2, 1)
    assert store.active_epoch() == 1
    assert source_digest(store) == before


def test_lineage_and_ids(store: EventStore, shop_registry):
    store.append("order-1", [
        new_event("OrderShipped", {"order_id": "1", "carrier": "DHL", "address": "Main 1|Gent|9000", "shipped_at": "t"},
                  {"correlation_id": "c-1"}, event_id="aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"),
        new_event("OrderCancelled", {"order_id": "1", "reason": "r", "cancelled_at": "t"},
                  event_id="bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"),
    ])
    report = migrate(store, shop_registry)
    target = store.at_epoch(report.target_epoch).read_stream("order-1")
    assert [e.type for e in target] == ["ShippingAddressRecorded", "OrderShipped", "OrderCancelled"]
    assert [e.version for e in target] == [1, 2, 3]
    split_ids = [e.event_id for e in target[:2]]
    assert len(set(split_ids)) == 2 and "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa" not in split_ids
    assert target[2].event_id == "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"  # one-to-one keeps its id
    meta = target[0].decoded_metadata()
    assert meta["correlation_id"] == "c-1"  # user metadata is carried over
    assert meta["eventmig"]["source"] == {"epoch": 1, "stream": "order-1", "version": 1, "position": 1,
                                         "event_id": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"}
    assert meta["eventmig"]["chain"] == ["upcasters.orders.address_out_of_shipment"]
    assert target[2].decoded_metadata()["eventmig"]["chain"] == []


def test_malformed_events_are_quarantined_nothing_lost(store: EventStore, shop_registry):
    seed(store, 500)
    bad = [
        new_event("OrderPlaced", b'{"order_id": "x", "total": ', {}),  # invalid JSON
        new_event("OrderPlaced", {"order_id": 1, "customer_id": "c", "total": "lots", "placed_at": "t", "channel": "w"}),
        new_event("ItemAdded", {"order_id": "x"}, {"schema_version": "one"}),  # unreadable version
        new_event("OrderPlaced", {}, {"schema_version": 9}),  # newer than the head
    ]
    store.append("order-bad", bad)
    report = migrate(store, shop_registry)
    assert report.quarantined == 4 and report.events_read == 504
    reasons = [q.reason for q in store.quarantine(report.run_id)]
    assert any("not valid JSON" in r for r in reasons)
    assert any("Expected `str`, got `int`" in r for r in reasons)
    assert any("schema_version" in r for r in reasons)
    assert any("newer than the head" in r for r in reasons)
    kept = {q.event_id: q for q in store.quarantine(report.run_id)}
    assert {e.event_id for e in bad} == kept.keys()
    assert kept[bad[0].event_id].data == b'{"order_id": "x", "total": '  # verbatim

    v = verify(store, shop_registry)
    assert not v.ok and v.unaccepted_quarantine == 4
    assert v.expected_digest == v.target_digest  # everything else matches
    with pytest.raises(VerificationFailed, match="4 event"):
        switch(store, shop_registry)
    assert store.active_epoch() == 1
    assert store.accept_quarantine(report.run_id) == 4
    assert verify(store, shop_registry).ok
    switch(store, shop_registry)
    assert store.active_epoch() == 2
    # the source keeps the malformed events
    assert len(store.at_epoch(1).read_stream("order-bad")) == 4


def test_dry_run_writes_nothing(store: EventStore, shop_registry):
    seed(store, 800)
    report = migrate(store, shop_registry, dry_run=True)
    assert report.dry_run and report.events_read == 800 and report.run_id is None
    assert report.after["OrderPlaced v3"] > 0
    assert [e.epoch for e in store.epochs()] == [1] and store.runs() == []


def test_resume_catches_up_with_new_source_events(store: EventStore, shop_registry):
    seed(store, 1000)
    first = migrate(store, shop_registry)
    store.append("order-late", [new_event("OrderCancelled", {"order_id": "late", "reason": "r", "cancelled_at": "t"})])
    v = verify(store, shop_registry)
    assert v.ok and v.source_advanced_by == 1
    with pytest.raises(VerificationFailed, match="appended to epoch 1 after the migration"):
        switch(store, shop_registry, catch_up=False)
    second = migrate(store, shop_registry)
    assert second.run_id == first.run_id and second.events_read == 1 and second.resumed_from is not None
    assert verify(store, shop_registry).source_advanced_by == 0
    switch(store, shop_registry)
    assert store.read_stream("order-late")[0].type == "OrderCancelled"


def test_stream_map_renames_streams(store: EventStore, shop_registry):
    store.append("order-1", [new_event("OrderCancelled", {"order_id": "1", "reason": "r", "cancelled_at": "t"})])
    store.append("order-2", [new_event("OrderCancelled", {"order_id": "2", "reason": "r", "cancelled_at": "t"})])
    report = migrate(store, shop_registry, stream_map={"order-1": "orders-1"})
    assert sorted(store.at_epoch(report.target_epoch).list_streams()) == ["order-2", "orders-1"]
    assert verify(store, shop_registry).ok


def test_stream_map_cannot_merge_streams(store: EventStore, shop_registry):
    store.append("a", [new_event("X", {})])
    store.append("b", [new_event("X", {})])
    with pytest.raises(ConfigError, match="cannot merge"):
        migrate(store, shop_registry, stream_map={"a": "b"})
    with pytest.raises(ConfigError, match="cannot merge"):
        migrate(store, shop_registry, stream_map={"a": "c", "b": "c"})


def test_changed_upcasters_refuse_to_resume(store: EventStore, shop_registry):
    store.append("s", [new_event("A", {"x": 1})])
    r1 = Registry()
    r1.fields("A", 1, defaults={"y": 1})
    migrate(store, r1.compile())
    r2 = Registry()
    r2.fields("A", 1, defaults={"y": 2})
    with pytest.raises(ConfigError, match="upcasters changed"):
        migrate(store, r2.compile())
    report = migrate(store, r2.compile(), restart=True)
    assert report.events_written == 1
    assert msgspec.json.decode(store.at_epoch(report.target_epoch).read_stream("s")[0].data) == {"x": 1, "y": 2}
    assert verify(store, r2.compile()).ok


def test_verify_finds_a_tampered_target(store: EventStore, shop_registry):
    seed(store, 600)
    report = migrate(store, shop_registry)
    target = store.at_epoch(report.target_epoch)
    victim = target.read_all_rows(batch_size=10).__next__()[5]
    with target.engine.begin() as c:  # type: ignore[attr-defined]
        c.exec_driver_sql(
            target._q(f"UPDATE {target._table} SET data = ? WHERE global_position = ?"),  # type: ignore[attr-defined]
            (b'{"tampered":true}', victim[2]),
        )
    v = verify(store, shop_registry)
    assert not v.ok and v.differing_streams == [victim[0]]
    with pytest.raises(VerificationFailed, match="1 stream"):
        switch(store, shop_registry)


def test_second_concurrent_run_is_refused(store: EventStore, shop_registry):
    seed(store, 100)
    with store.lock("migrate"):
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with open_store(store._raw_url) as other:  # type: ignore[attr-defined]
                    migrate(other, shop_registry)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], Busy)


def test_rollback_refuses_to_hide_new_events(store: EventStore, shop_registry):
    seed(store, 200)
    migrate(store, shop_registry)
    switch(store, shop_registry)
    store.append("order-new", [new_event("OrderCancelled", {"order_id": "n", "reason": "r", "cancelled_at": "t"})])
    with pytest.raises(Exception, match="1 event"):
        rollback(store)
    report = rollback(store, force=True)
    assert report.hidden_events == 1 and store.active_epoch() == 1
    assert store.at_epoch(2).read_stream("order-new")  # hidden, not lost


def test_a_restart_after_a_rollback_keeps_the_epoch_that_was_active(store: EventStore, shop_registry):
    """Events appended while epoch 2 was active live only there: migrate --restart must not drop it."""
    seed(store, 200)
    migrate(store, shop_registry)
    switch(store, shop_registry)
    store.append("order-new", [new_event("OrderCancelled", {"order_id": "n", "reason": "r", "cancelled_at": "t"})])
    rollback(store, force=True)
    again = migrate(store, shop_registry, restart=True)
    assert (again.source_epoch, again.target_epoch) == (1, 3)
    assert store.at_epoch(2).read_stream("order-new")  # still hidden, still not lost
    assert {e.epoch: e.status for e in store.epochs()}[2] == "retired"
    assert verify(store, shop_registry).ok


def test_next_migration_starts_from_the_new_active_epoch(store: EventStore, shop_registry):
    seed(store, 300)
    migrate(store, shop_registry)
    switch(store, shop_registry)
    again = migrate(store, shop_registry)
    assert (again.source_epoch, again.target_epoch) == (2, 3)
    assert Counter(again.before) == Counter(again.after)  # everything is at its head already
    assert again.dropped == 0 and current_run(store).id == again.run_id


def test_switch_catches_up_with_events_appended_meanwhile(store: EventStore, shop_registry):
    seed(store, 1500)
    migrate(store, shop_registry)
    late = [new_event("OrderCancelled", {"order_id": f"late-{i}", "reason": "r", "cancelled_at": "t"}) for i in range(3)]
    store.append("order-late", late)
    report = switch(store, shop_registry)
    assert report.caught_up == 3 and store.active_epoch() == 2
    assert [e.event_id for e in store.read_stream("order-late")] == [e.event_id for e in late]
    run = current_run_of(store, report.to_epoch)
    assert run.checkpoint == store.at_epoch(1).head_position()


def test_switch_under_continuous_writes_loses_nothing(store_url: str, shop_registry):
    """Writers keep appending to the old epoch while it switches: every event ends up in the new one."""
    with open_store(store_url) as s:
        seed(s, 2000)
        migrate(s, shop_registry)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        with open_store(store_url) as app:
            i = 0
            while not stop.is_set():
                event = new_event("OrderCancelled", {"order_id": f"w-{i}", "reason": "r", "cancelled_at": "t"})
                app.append(f"order-w{i % 7}", [event])  # the handle follows the active epoch
                written.append(event.event_id)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with open_store(store_url) as s:
            report = switch(s, shop_registry, attempts=50)
        switched_at = len(written)
        deadline = time.monotonic() + 30
        while len(written) < switched_at + 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # let the writer go on appending, now to the new epoch
    finally:
        stop.set()
        thread.join()
    assert report.caught_up > 0
    with open_store(store_url) as s:
        assert s.active_epoch() == 2
        ids = {r[3] for batch in s.read_all_rows() for r in batch}
        assert set(written) <= ids  # written before, during and after the switch: all in the active epoch
        old_ids = {r[3] for batch in s.at_epoch(1).read_all_rows() for r in batch}
        after_switch = set(written) - old_ids
        assert after_switch  # some landed directly in the new epoch


def current_run_of(store: EventStore, target_epoch: int):
    return next(r for r in store.runs("migrate") if r.target_epoch == target_epoch)


def test_payloads_with_raw_fields_migrate_and_verify(sqlite_url: str):
    """An unparsed sub-document keeps its stored key order when encoded: digests must not see it."""
    r = raw_hooks()
    with open_store(sqlite_url, create=True) as store:
        store.append("hook-1", [new_event("Hook", b'{"url":"u","body":{"b":1,"a":2}}')])
        assert migrate(store, r.compile()).quarantined == 0
        assert verify(store, r.compile()).ok


def test_payloads_with_set_fields_migrate_and_verify(sqlite_url: str):
    r = tagged_sets()
    with open_store(sqlite_url, create=True) as store:
        store.append("tagged-1", [new_event("Tagged", {"tags": [f"tag-{i}" for i in range(20)]})])
        assert migrate(store, r.compile()).quarantined == 0
        assert verify(store, r.compile()).ok


def test_rollbacks_undo_switches_latest_first_and_never_a_rollback(store: EventStore, shop_registry):
    seed(store, 300)
    migrate(store, shop_registry)
    switch(store, shop_registry)  # 1 -> 2
    migrate(store, shop_registry)
    switch(store, shop_registry)  # 2 -> 3
    assert (rollback(store).to_epoch, store.active_epoch()) == (2, 2)
    assert (rollback(store).to_epoch, store.active_epoch()) == (1, 1)
    # a third rollback must not put back, unverified, the epoch the last one left
    with pytest.raises(ConfigError, match="nothing to roll back: epoch 1 is active again since the rollback"):
        rollback(store)
    assert store.active_epoch() == 1
    # going forward again is a switch, verified
    again = switch(store, shop_registry)
    assert (again.from_epoch, again.to_epoch) == (1, 2) and again.verification.ok
    assert rollback(store).to_epoch == 1


def test_a_rollback_two_switches_back_refuses_to_hide_what_the_middle_epoch_got(store: EventStore, shop_registry):
    seed(store, 200)
    migrate(store, shop_registry)
    switch(store, shop_registry)  # 1 -> 2
    store.append("order-late", [new_event("OrderCancelled", {"order_id": "l", "reason": "r", "cancelled_at": "t"})])
    migrate(store, shop_registry)
    switch(store, shop_registry)  # 2 -> 3, which carries the late event over
    rollback(store)  # 3 -> 2: nothing was appended to 3
    with pytest.raises(Exception, match="1 event"):
        rollback(store)  # 2 -> 1 would hide the late event, which epoch 1 never had
    assert store.active_epoch() == 2


def test_unknown_types_pass_through_unchanged_and_are_counted(store: EventStore, shop_registry):
    store.append("audit-1", [
        new_event("AuditNoted", {"who": "ops", "z": [1, 2]}, {"schema_version": 4, "trace": "t"}),
        new_event("OrderCancelled", {"order_id": "1", "reason": "r", "cancelled_at": "t"}),
        new_event("AuditNoted", {"who": "dev"}),
    ])
    report = migrate(store, shop_registry)
    assert report.unknown == 2 and report.quarantined == 0 and report.events_written == 3
    assert report.before == {"AuditNoted v1": 1, "AuditNoted v4": 1, "OrderCancelled v1": 1} == report.after
    source = store.read_stream("audit-1")
    target = store.at_epoch(report.target_epoch).read_stream("audit-1")
    assert [e.type for e in target] == ["AuditNoted", "OrderCancelled", "AuditNoted"]
    for old, new in zip(source, target):
        assert new.decoded_data() == old.decoded_data() and new.event_id == old.event_id
    meta = target[0].decoded_metadata()
    assert meta["schema_version"] == 4 and meta["trace"] == "t" and meta["eventmig"]["chain"] == []
    assert verify(store, shop_registry).ok


def test_target_event_ids_are_the_same_on_every_run(store: EventStore, shop_registry):
    seed(store, 400)
    first = migrate(store, shop_registry)
    ids = [(r[0], r[1], r[3]) for b in store.at_epoch(first.target_epoch).read_all_rows() for r in b]
    again = migrate(store, shop_registry, restart=True, batch_size=37)  # a new copy, cut into other batches
    assert again.run_id != first.run_id
    assert [(r[0], r[1], r[3]) for b in store.at_epoch(again.target_epoch).read_all_rows() for r in b] == ids
    assert len({i for _, _, i in ids}) == len(ids) == first.events_written


def test_the_demo_history_is_the_same_on_every_seed(tmp_path, shop_registry):
    rows = []
    for name in ("a", "b"):
        with open_store(f"sqlite:///{tmp_path}/{name}.db") as s:
            assert seed(s, 2500) == 2500
            rows.append([r for b in s.read_all_rows() for r in b])
    assert rows[0] == rows[1] and len(rows[0]) == 2500
    with open_store(f"sqlite:///{tmp_path}/a.db") as s:
        mix = migrate(s, shop_registry, dry_run=True).before
    # old versions of several types, each treated its own way: conversion, default, rename, split, drop
    assert {"OrderPlaced v1", "OrderPlaced v2", "OrderPlaced v3", "CustomerRegistered v1", "ItemAdded v1",
            "OrderShipped v1", "CartViewed v1"} <= mix.keys()
