"""CI tests of the accounts service's upcasters.

Run ``pytest`` in this directory. eventmig's pytest plugin (installed with
eventmig) collects ``test_upcasters`` below into one item per example and
one per (type, version), and provides the fixtures: ``eventmig_registry``
is the registry named in ``[tool.eventmig]`` of pyproject.toml, compiled;
``eventmig_sqlite_store`` is a throwaway SQLite store; ``eventmig_postgres_store``
is a store in a fresh schema on the server given by ``--eventmig-postgres URL``
or ``EVENTMIG_TEST_POSTGRES`` (skipped without one).
"""

from __future__ import annotations

import msgspec

from eventmig import new_event
from eventmig.testing.histories import assert_histories_migrate
from eventmig.testing.suite import upcaster_tests

# One item per example (registry.example(...) in upcasters/, upcaster-cases.json) and one per
# (type, version): what `eventmig check` runs, with the same hypothesis profile, seed and budget.
test_upcasters = upcaster_tests()


def test_generated_histories_migrate_and_verify(eventmig_sqlite_store, eventmig_registry):
    """Thirty generated streams of mixed types and versions in one store, migrated and verified
    once: a failing event is named with its reason in seconds (the items above shrink it further)."""
    assert_histories_migrate(eventmig_sqlite_store, eventmig_registry)


def test_generated_histories_migrate_and_verify_on_postgres(eventmig_postgres_store, eventmig_registry):
    assert_histories_migrate(eventmig_postgres_store, eventmig_registry)


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
