"""The dry run counts in the workers without making rows: its counts must still be the real run's."""

from __future__ import annotations

import pytest

from eventmig import new_event
from eventmig.jobs.migrate import migrate
from eventmig.jobs.seed import seed
from eventmig.ports import EventStore

COUNTED = ("events_read", "events_written", "unknown", "dropped", "quarantined", "before", "after",
           "quarantine_reasons")


@pytest.mark.parametrize("workers", [1, 2])
def test_dry_run_counts_what_migrate_writes(store: EventStore, shop_registry, workers: int):
    seed(store, 700)
    store.append("order-bad", [
        new_event("OrderPlaced", b'{"order_id": "x", "total": ', {}),  # invalid JSON
        new_event("ItemAdded", {"order_id": "x"}, {"schema_version": "one"}),  # unreadable version
        new_event("OrderPlaced", {}, {"schema_version": 9}),  # newer than the head
        new_event("SomethingElse", {"b": 1, "a": 2}),  # a type no upcaster knows
    ])
    dry = migrate(store, shop_registry, dry_run=True, batch_size=100, workers=workers)
    real = migrate(store, shop_registry, batch_size=100, workers=workers)
    assert {k: getattr(dry, k) for k in COUNTED} == {k: getattr(real, k) for k in COUNTED}
    assert dry.quarantined == 3 and dry.unknown == 1 and dry.dropped > 0
    assert store.at_epoch(real.target_epoch).count_events() == dry.events_written


def test_dry_run_reports_a_stream_the_map_would_merge(store: EventStore, shop_registry):
    seed(store, 200)
    stream = next(iter(store.list_streams()))
    store.append("renamed-onto", [new_event("SomethingElse", {"a": 1})])
    dry = migrate(store, shop_registry, dry_run=True, stream_map={stream: "renamed-onto"}, workers=1)
    assert len(dry.problems) == 1 and "'renamed-onto'" in dry.problems[0] and "merge" in dry.problems[0]
