"""Adopt the event stores a team already has: find them, read them, migrate a hand-rolled one.

A team has two stores eventmig did not create:

* an application written with the Python ``eventsourcing`` library, whose
  events sit in its ``stored_events`` table;
* a hand-rolled ``events`` table of its own naming (``stream_id``,
  ``event_type``, ``payload``...), whose ``OrderPlaced`` events stored money
  in euros and now want cents.

The script shows what ``eventmig inspect`` finds in each database (the
layout, the events by type and version, the settings to use), that pointing
eventmig at an application's database with the default settings creates
nothing and says why, and then migrates the hand-rolled table through an
upcaster with ``layout = "columns"``: verify, switch (the table keeps its
name; the application's SQL keeps working) and roll back.

Run it from the repository root (the eventsourcing part needs the
``eventsourcing`` package, which ``make install`` installs)::

    .venv/bin/python examples/adopt_existing_store.py
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import msgspec

from eventmig import ConfigError, Registry, open_store
from eventmig.backends.sql.layouts import from_columns
from eventmig.command import inspect
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.migrate import migrate
from eventmig.jobs.verify import verify

registry = Registry(version_location="metadata:schema_version")


@registry.schema("OrderPlaced", 1)
class OrderPlacedV1(msgspec.Struct):
    order_id: str
    total: float  # euros, as the first version stored money


@registry.schema("OrderPlaced", 2)
class OrderPlaced(msgspec.Struct):
    order_id: str
    total_cents: int


@registry.upcaster()
def to_cents(e: OrderPlacedV1) -> OrderPlaced:
    return OrderPlaced(e.order_id, round(e.total * 100))


COLUMNS = {"stream": "stream_id", "version": "version", "position": "id", "type": "event_type", "data": "payload",
           "metadata": "metadata"}


def eventsourcing_app(path: Path) -> None:
    """A few events written by a real eventsourcing application (skipped if the library is missing)."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        print("(eventsourcing is not installed: its part is skipped)")
        return

    class Dog(Aggregate):
        @event("Registered")
        def __init__(self, name: str) -> None:
            self.name = name

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    for name in ("Fido", "Rex"):
        app.save(Dog(name))
    app.close()


def show(url: str) -> None:
    report = inspect(url)
    for table in report.tables:
        if table.layout:
            counts = ", ".join(f"{c.type} v{c.version}: {c.events}" for c in table.counts)
            print(f"  {table.table}: {table.layout} layout, {table.events} events ({counts})")
    print("  " + report.snippet.strip().replace("\n", "\n  "))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dogs = Path(tmp) / "dogs.db"
        eventsourcing_app(dogs)
        if dogs.exists():
            print("inspect the eventsourcing application's database:")
            show(f"sqlite:///{dogs}")
            try:
                open_store(f"sqlite:///{dogs}")
            except ConfigError as refused:
                print(f"\nthe default settings on it create nothing:\n  {refused}")

        shop = Path(tmp) / "shop.db"
        with sqlite3.connect(shop) as db:
            db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER NOT NULL, "
                       "event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', "
                       "UNIQUE (stream_id, version))")
            db.executemany("INSERT INTO events (stream_id, version, event_type, payload) VALUES (?, 1, 'OrderPlaced', ?)",
                           [(f"order-{i}", f'{{"order_id": "o-{i}", "total": {i}.25}}') for i in range(1, 4)])
        url = f"sqlite:///{shop}"
        print("\ninspect the hand-rolled store:")
        show(url)

        compiled = registry.compile()
        with open_store(url, layout=from_columns(COLUMNS)) as store:
            report = migrate(store, compiled, workers=1)
            print(f"\nmigrate: read {report.events_read}, wrote {report.events_written}; "
                  f"verify: {'digests match' if verify(store, compiled, workers=1).ok else 'FAILED'}")
            flipped = switch(store, compiled, workers=1)
            print(f"switch: epoch {flipped.from_epoch} -> {flipped.to_epoch} is active")
        with sqlite3.connect(shop) as db:  # the application's own SQL reads the migrated events
            print("  the application reads:", db.execute("SELECT payload FROM events WHERE stream_id = 'order-1'").fetchone()[0])
        with open_store(url, layout=from_columns(COLUMNS)) as store:
            back = rollback(store)
            print(f"rollback: epoch {back.from_epoch} -> {back.to_epoch} is active again")
        with sqlite3.connect(shop) as db:
            print("  the application reads:", db.execute("SELECT payload FROM events WHERE stream_id = 'order-1'").fetchone()[0])


if __name__ == "__main__":
    main()
