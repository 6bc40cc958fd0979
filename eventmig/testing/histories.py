"""Generated stream histories through a real store: append, migrate, verify, all in one migration.

A property test that migrates a fresh store for every generated case pays a
migration per case, and hundreds more while hypothesis shrinks a failure:
a minute before a wrong step reports. Here a batch of histories (the same on
every run) goes into the one store of the test, each in a stream of its
own, and is migrated and verified once. A failure names each quarantined
event with its reason and payload, which is the minimal example already:
the per-event checks of ``eventmig check`` shrink the rest::

    def test_histories_migrate(eventmig_sqlite_store, eventmig_registry):
        assert_histories_migrate(eventmig_sqlite_store, eventmig_registry)
"""

from __future__ import annotations

import uuid

import msgspec

from eventmig.model.events import NewEvent
from eventmig.jobs.migrate import MigrateReport, migrate
from eventmig.ports import EventStore
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.jobs.verify import verify
from eventmig.testing.events import stream_histories
from eventmig.testing.profile import draw

__all__ = ["assert_histories_migrate"]

#: problems listed in a failure at most (the first ones; each is a complete example)
MAX_LISTED = 10


def assert_histories_migrate(
    store: EventStore, registry: Registry | CompiledRegistry, *, histories: int = 30, max_size: int = 8
) -> MigrateReport:
    """Append ``histories`` generated streams to the empty ``store``, migrate and verify them once.

    Raises AssertionError naming every quarantined event (stream, type,
    reason, payload) and every verification problem. Returns the migration's
    report. One worker: the batch is small, and processes cost more than it.
    """
    compiled = registry.compile() if isinstance(registry, Registry) else registry
    drawn = draw(stream_histories(compiled, max_size=max_size), histories)
    batch = list({tuple((e.type, e.data, e.metadata) for e in h): h for h in drawn}.values())  # no repeats
    for i, history in enumerate(batch):
        stream = f"history-{i:03d}"
        store.append(stream, [
            NewEvent(e.type, e.data, e.metadata, str(uuid.UUID(int=(i << 32) + j)), e.recorded_at)
            for j, e in enumerate(history)
        ])
    report = migrate(store, compiled, workers=1)
    problems = [
        f"quarantined {q.stream}@{q.version} ({q.type}): {q.reason}\n    data: {_short(q.data)}"
        for q in store.quarantine(report.run_id)
    ]
    checked = verify(store, compiled, workers=1)
    problems += [f"verify: {problem}" for problem in checked.problems]
    if problems:
        more = [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise AssertionError(
            f"{len(batch)} generated histories, {report.events_read} events, migrated and verified once:\n"
            + "\n".join([*problems[:MAX_LISTED], *more])
        )
    return report


def _short(data: bytes, limit: int = 300) -> str:
    try:
        text = msgspec.json.encode(msgspec.json.decode(data)).decode()
    except msgspec.DecodeError:
        text = data.decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."
