"""CI tests of the accounts service's upcasters.

Run ``pytest`` in this directory. eventmig's pytest plugin (installed with
eventmig) provides the fixtures: ``eventmig_registry`` is the registry named
in ``[tool.eventmig]`` of pyproject.toml, compiled; ``eventmig_make_sqlite_store``
makes throwaway SQLite stores; ``eventmig_postgres_store`` is a store in a
fresh schema on the server given by ``--eventmig-postgres URL`` or
``EVENTMIG_TEST_POSTGRES`` (skipped without one).
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings

import upcasters
from eventmig import new_event
from eventmig.migrate import migrate
from eventmig.testing.checks import assert_upcasters
from eventmig.testing.events import stream_histories, to_new_events
from eventmig.verify import verify


def test_upcasters_hold_for_every_schema_version(eventmig_registry):
    """Generated events of every (type, version) upcast without error to valid heads,
    deterministically, the same in one chain as step by step; heads stay unchanged."""
    report = assert_upcasters(eventmig_registry, examples=50)
    # a step registered without a schema cannot be generated: the report says so
    assert [item.split(":")[0] for item in report.not_generated] == ["StatementViewed v1"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=stream_histories(upcasters.registry, max_size=8))
def test_any_history_migrates_and_verifies(history, eventmig_make_sqlite_store, eventmig_registry):
    store = eventmig_make_sqlite_store()
    store.append(history[0].stream, to_new_events(history))
    migrated = migrate(store, eventmig_registry)
    assert migrated.quarantined == 0
    assert verify(store, eventmig_registry).ok


def test_a_legacy_history_reads_as_head_events_on_postgres(eventmig_postgres_store, eventmig_registry):
    eventmig_postgres_store.append("account-1", [
        new_event("AccountOpened", {"account_id": "1", "owner": "Ada", "opened_at": "2019-03-01"}),
        new_event("MoneyDeposited", {"account_id": "1", "amount": 12.29, "reference": "salary"}),
        new_event("Withdrawal", {"account_id": "1", "amount_cents": 250, "reference": "rent"}),
        new_event("StatementViewed", {"account_id": "1"}),
        new_event("AccountClosed", {"account_id": "1", "reason": "moved", "closed_at": "2024-05-01",
                                    "final_balance_cents": 979}),
    ])
    heads = []
    for event in eventmig_postgres_store.read_stream("account-1"):
        type_, version = eventmig_registry.version_location.read(event.type, event.decoded_metadata())
        outcome = eventmig_registry.upcast(type_, version, event.data)
        heads += [(t, msgspec.json.decode(data)) for t, _, data, _ in outcome.events]
    assert heads == [
        ("AccountOpened", {"account_id": "1", "currency": "EUR", "holder": "Ada", "opened_at": "2019-03-01"}),
        ("MoneyDeposited", {"account_id": "1", "amount_cents": 1229, "reference": "salary"}),
        ("MoneyWithdrawn", {"account_id": "1", "amount_cents": 250, "reference": "rent"}),
        ("BalancePaidOut", {"account_id": "1", "amount_cents": 979}),
        ("AccountClosed", {"account_id": "1", "closed_at": "2024-05-01", "reason": "moved"}),
    ]
