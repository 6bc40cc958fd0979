"""Hand-made faults in a migrated epoch, on SQLite and PostgreSQL: each must be caught, and named.

Every test here corrupts what a reader would see (the order of a stream, an
event's id or record time) or writes a row no reader could decode, and
asserts that ``verify`` names the stream, the first version that differs and
in what, and that the corrupted epoch is not switched in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventmig import VerificationFailed, new_event
from eventmig.jobs.cutover import switch
from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import migrate
from eventmig.ports import EventStore
from eventmig.model.records import TargetEvent
from eventmig.jobs.verify import verify

_encode = msgspec.json.Encoder().encode
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- helpers
def migrated(store: EventStore, registry: Any, events: int = 1500) -> EventStore:
    """Seed the shop's history, migrate it; return the target epoch's handle."""
    seed(store, events)
    report = migrate(store, registry, workers=1)
    return store.at_epoch(report.target_epoch)


def execute(target: EventStore, sql: str, *params: Any) -> None:
    """Run one statement on the target epoch's table, named ``{t}`` in ``sql``."""
    with target.engine.begin() as c:  # type: ignore[attr-defined]
        c.exec_driver_sql(target._q(sql.format(t=target._table)), params)  # type: ignore[attr-defined]


def stream_with(target: EventStore, events: int, nth: int = 0) -> list[tuple[Any, ...]]:
    """The rows, in version order, of the ``nth`` target stream (by name) of at least ``events`` events."""
    with target.engine.connect() as c:  # type: ignore[attr-defined]
        stream = c.exec_driver_sql(
            target._q(f"SELECT stream FROM {target._table} GROUP BY stream HAVING count(*) >= ? "  # type: ignore[attr-defined]
                      "ORDER BY stream LIMIT 1 OFFSET ?"),
            (events, nth),
        ).scalar()
    assert stream is not None, f"no stream of {events} events"
    return [(e.stream, e.version, e.position, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
            for e in target.read_stream(stream)]


def refused(store: EventStore, registry: Any, stream: str) -> Any:
    """Verify fails naming ``stream`` (and only it), and the switch is refused."""
    report = verify(store, registry, workers=1)
    assert not report.ok
    assert report.differing_streams == [stream], report.problems
    with pytest.raises(VerificationFailed, match="1 stream"):
        switch(store, registry, workers=1)
    assert store.active_epoch() == 1
    return report


def difference(report: Any, stream: str) -> Any:
    (found,) = [d for d in report.differences if d.stream == stream]
    return found


# -------------------------------------------- 1. stream versions are compared
def test_swapped_stream_versions_are_a_difference(store: EventStore, shop_registry):
    target = migrated(store, shop_registry)
    rows = stream_with(target, 3)
    a, b = rows[1], rows[2]
    # swap the versions of two events (through a free number: (stream, version) is unique)
    execute(target, "UPDATE {t} SET version = ? WHERE global_position = ?", -1, a[2])
    execute(target, "UPDATE {t} SET version = ? WHERE global_position = ?", a[1], b[2])
    execute(target, "UPDATE {t} SET version = ? WHERE global_position = ?", b[1], a[2])
    report = refused(store, shop_registry, a[0])
    found = difference(report, a[0])
    assert (found.version, found.field) == (a[1], "version")


def test_a_renumbered_stream_version_is_a_difference(store: EventStore, shop_registry):
    target = migrated(store, shop_registry)
    rows = stream_with(target, 7)
    seventh = rows[6]
    execute(target, "UPDATE {t} SET version = 99 WHERE global_position = ?", seventh[2])  # 7 -> 99: a gap
    report = refused(store, shop_registry, seventh[0])
    found = difference(report, seventh[0])
    assert (found.version, found.field) == (7, "version")


# ------------------------------------------ 2. event ids and record times are compared
def test_a_replaced_event_id_is_a_difference(store: EventStore, shop_registry):
    target = migrated(store, shop_registry)
    victim = stream_with(target, 2)[1]
    execute(target, "UPDATE {t} SET event_id = ? WHERE global_position = ?",
            "00000000-0000-4000-8000-000000000000", victim[2])
    report = refused(store, shop_registry, victim[0])
    found = difference(report, victim[0])
    assert (found.version, found.field) == (victim[1], "event id")


def test_a_changed_record_time_is_a_difference(store: EventStore, shop_registry):
    target = migrated(store, shop_registry)
    victim = stream_with(target, 2)[1]
    execute(target, "UPDATE {t} SET recorded_at = recorded_at + 1 WHERE global_position = ?", victim[2])
    report = refused(store, shop_registry, victim[0])
    found = difference(report, victim[0])
    assert (found.version, found.field) == (victim[1], "record time")


# ---------------------------------------- 4. malformed target rows are differences
@pytest.mark.parametrize(
    "column, value",
    [
        ("data", b'{"order_id": "o-1", "total_ce'),  # a truncated JSON payload
        ("metadata", b'{"schema_version": "3"}'),  # the schema version as a string
        ("metadata", b'["not", "an", "object"]'),
    ],
    ids=["truncated payload", "schema version as a string", "metadata not an object"],
)
def test_a_malformed_target_row_is_a_difference_not_a_crash(store: EventStore, shop_registry, column, value):
    target = migrated(store, shop_registry)
    victim = stream_with(target, 2)[1]
    execute(target, f"UPDATE {{t}} SET {column} = ? WHERE global_position = ?", value, victim[2])
    report = refused(store, shop_registry, victim[0])
    found = difference(report, victim[0])
    assert (found.version, found.position, found.field) == (victim[1], victim[2], "malformed")
    assert any(f"{victim[0]}" in p and f"position {victim[2]}" in p for p in report.problems), report.problems


def test_a_source_event_that_no_longer_upcasts_and_is_not_in_the_quarantine_is_a_difference(store: EventStore,
                                                                                          shop_registry):
    """Migrate quarantines what does not upcast; an event that does not upcast now, but was migrated (the
    source was edited since), names its stream and source position."""
    target = migrated(store, shop_registry)
    source = store.at_epoch(1)
    victim = stream_with(target, 2)[0]
    lineage = msgspec.json.decode(victim[6])["eventmig"]["source"]
    execute(source, "UPDATE {t} SET data = ? WHERE global_position = ?", b'{"truncated', lineage["position"])
    report = refused(store, shop_registry, victim[0])
    found = difference(report, victim[0])
    assert (found.field, found.position) == ("malformed", lineage["position"])
    assert any(f"position {lineage['position']}" in p and "not in the quarantine" in p for p in report.problems)


def test_malformed_rows_found_by_worker_processes_are_reported_the_same(sqlite_url, shop_registry):
    """Worker processes send back what they could not read; a stream version SQLite holds as text, too."""
    from eventmig.backends import open_store

    with open_store(sqlite_url) as store:
        target = migrated(store, shop_registry)
        first, second = stream_with(target, 2, 0)[1], stream_with(target, 2, 1)[1]
        execute(target, "UPDATE {t} SET data = ? WHERE global_position = ?", b"{", first[2])
        execute(target, "UPDATE {t} SET version = 'second' WHERE global_position = ?", second[2])
        report = verify(store, shop_registry, workers=2, batch_size=200)
        assert not report.ok and report.malformed_events == 2
        found = {d.stream: (d.field, d.version, d.position) for d in report.differences}
        assert found == {first[0]: ("malformed", first[1], first[2]), second[0]: ("malformed", "second", second[2])}


# ------------------------------------------------------ what an operator sees
def verify_cli(store_url: str, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    environment["EVENTMIG_STORE"] = store_url
    return subprocess.run([sys.executable, "-m", "eventmig", "verify", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_verify_json_names_each_differing_stream_its_first_version_and_field(store: EventStore, store_url, shop_registry):
    target = migrated(store, shop_registry)
    changed, renumbered, truncated = (stream_with(target, n, nth) for nth, n in enumerate((3, 7, 2)))
    assert len({changed[0][0], renumbered[0][0], truncated[0][0]}) == 3
    execute(target, "UPDATE {t} SET data = ? WHERE global_position = ?", b'{"tampered": true}', changed[2][2])
    execute(target, "UPDATE {t} SET version = 99 WHERE global_position = ?", renumbered[6][2])
    execute(target, "UPDATE {t} SET data = ? WHERE global_position = ?", b'{"order_id": "o-', truncated[1][2])

    result = verify_cli(store_url, "--json", "--workers", "1")
    assert result.returncode == 1, result.stderr  # a difference, not a crash (3)
    report = json.loads(result.stdout)
    assert report["differing_count"] == 3 and report["malformed_events"] == 1
    found = {d["stream"]: (d["version"], d["field"], d["position"]) for d in report["differences"]}
    assert found == {
        changed[0][0]: (3, "payload", changed[2][2]),
        renumbered[0][0]: (7, "version", None),
        truncated[0][0]: (2, "malformed", truncated[1][2]),
    }
    human = verify_cli(store_url, "--workers", "1")
    assert human.returncode == 1
    assert f"differs: {renumbered[0][0]} at version 7: version" in human.stderr


def test_verify_lists_differing_streams_up_to_a_cap_and_counts_them_all(store: EventStore, store_url, shop_registry):
    from eventmig.jobs.verify import MAX_LISTED

    target = migrated(store, shop_registry)
    streams = len(set(target.list_streams()))
    assert streams > MAX_LISTED
    execute(target, "UPDATE {t} SET recorded_at = recorded_at + 1")  # every event of every stream
    report = verify(store, shop_registry, workers=1)
    assert not report.ok and report.differing_count == streams
    assert len(report.differences) == len(report.differing_streams) == MAX_LISTED
    assert {(d.version, d.field) for d in report.differences} == {(1, "record time")}


# ------------------------------------------------- the switch's locked catch-up
def test_the_switchs_locked_catch_up_verifies_the_last_events_stream_versions(store: EventStore, shop_registry):
    """The last events a switch migrates inside its transaction are verified with the same digests: written
    back with their versions swapped, they refuse the switch; as numbered, they pass."""
    from eventmig.jobs.cutover import _LockedCatchUp
    from eventmig.jobs.migrate import current_run
    from eventmig.jobs.verify import Verification

    target = migrated(store, shop_registry, 600)
    stream = stream_with(store.at_epoch(1), 2)[0][0]
    items = [{"order_id": "o", "sku": f"SKU-{i}", "name": "late", "quantity": 1, "unit_price_cents": 5} for i in (1, 2)]
    store.append(stream, [new_event("LineItemAdded", item) for item in items])
    run = current_run(store)
    source_rows = [r for rows in store.at_epoch(1).read_all_rows(after=run.checkpoint) for r in rows]
    assert len(source_rows) == 2

    def locked_catch_up() -> tuple[_LockedCatchUp, list[tuple[Any, ...]]]:
        fresh = current_run(store)  # prepare() moves the run's checkpoint on
        verification = Verification(store, shop_registry, fresh, workers=1)
        verification.extend(fresh.checkpoint, target.head_position())
        assert verification.report().ok
        locked = _LockedCatchUp(verification, target.stream_versions(), target.capabilities.first_stream_version)
        events, _ = locked.prepare(source_rows)
        head = target.head_position()
        written = [(e.stream, e.version, head + 1 + i, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
                   for i, e in enumerate(map(TargetEvent._make, events))]
        return locked, written

    locked, written = locked_catch_up()
    (a, b) = written
    swapped = [a[:1] + (b[1],) + a[2:], b[:1] + (a[1],) + b[2:]]
    with pytest.raises(VerificationFailed, match=stream):
        locked.check(source_rows, swapped)
    locked, written = locked_catch_up()
    locked.check(source_rows, written)
