"""Upgrade the history of an ``eventsourcing`` application to its version-3 event classes, with no upcast_ methods.

A dog school written with the Python ``eventsourcing`` library registered
dogs (``Registered(name)``) and taught them tricks (``TrickAdded(trick)``).
Its code moved on: today ``Registered`` has a ``display_name`` and a
``breed``, and ``TrickAdded`` is ``TrickLearned`` with a ``level``; both are
``class_version = 3``. Rather than keep ``upcast_v1_v2`` and ``upcast_v2_v3``
methods on the classes forever, the team registers upcasters with eventmig
and rewrites the history once:

1. the old application writes its history, a snapshot, and a follower
   (a process application) processes it, tracking notification ids;
2. ``eventmig`` migrates the ``stored_events`` table into a sibling table,
   verifies it and switches it in (same table name; positions kept; the
   stale snapshot deleted);
3. the new application loads every dog with its version-3 classes, learns a
   trick, and the follower carries on from the position it had tracked;
4. a rollback puts the old history back.

Run it from the repository root (``make install`` installs ``eventsourcing``)::

    .venv/bin/python examples/eventsourcing_upgrade.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import ProcessApplication

from eventmig import Registry, open_store
from eventmig.backends.sql.layouts import EVENTSOURCING
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.migrate import migrate
from eventmig.jobs.verify import verify


class Before:
    """The application's code as it was: version-1 event classes."""

    class Dog(Aggregate):
        @event("Registered")
        def __init__(self, name: str) -> None:
            self.name = name
            self.tricks: list[str] = []

        @event("TrickAdded")
        def add_trick(self, trick: str) -> None:
            self.tricks.append(trick)


class After:
    """The application's code today: version-3 classes, and no upcast_ methods."""

    class Dog(Aggregate):
        class Registered(Aggregate.Created):
            class_version = 3
            display_name: str
            breed: str

        @event(Registered)
        def __init__(self, display_name: str, breed: str) -> None:
            self.display_name, self.breed = display_name, breed
            self.tricks: list[tuple[str, int]] = []

        class TrickLearned(Aggregate.Event):
            class_version = 3
            trick: str
            level: int

        @event(TrickLearned)
        def learn_trick(self, trick: str, level: int) -> None:
            self.tricks.append((trick, level))


class Tally(ProcessApplication):
    """A follower: counts the events it processes; its position is in its tracking table."""

    processed = 0

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        type(self).processed += 1


# ------------------------------------------------------------------ upcasters
# Types are eventsourcing's topics, versions the state's class_version (absent: 1). Each old topic is
# renamed to today's at version 3, so migrated events carry the topic and class_version the classes have.
OLD, NEW = f"{__name__}:Before.Dog", f"{__name__}:After.Dog"
registry = Registry(version_location="metadata:class_version")
registry.fields(f"{OLD}.Registered", 1, rename={"name": "display_name"})
registry.fields(f"{OLD}.Registered", 2, defaults={"breed": "mixed"}, convert={"originator_topic": lambda _: NEW})
registry.rename_type(f"{OLD}.Registered", 3, to=f"{NEW}.Registered", to_version=3)
registry.fields(f"{OLD}.TrickAdded", 1, defaults={"level": 1})
registry.fields(f"{OLD}.TrickAdded", 2)
registry.rename_type(f"{OLD}.TrickAdded", 3, to=f"{NEW}.TrickLearned", to_version=3)


def env(path: Path, **extra: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), **extra}


def follow(app: Application, path: Path) -> int:
    """Run the follower over what it has not processed yet; its tracked position afterwards."""
    tally = Tally(env=env(path))
    tally.follow(app.name, app.notification_log)
    tally.pull_and_process(app.name)
    position = tally.recorder.max_tracking_id(app.name)
    tally.close()
    return position or 0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db, tally_db = Path(tmp) / "dogs.db", Path(tmp) / "tally.db"
        url = f"sqlite:///{db}"

        app = Application(env=env(db, IS_SNAPSHOTTING_ENABLED="y"))
        dogs: list[UUID] = []
        for name in ("Fido", "Rex"):
            dog = Before.Dog(name)
            for trick in ("sit", "roll over"):
                dog.add_trick(trick)
            app.save(dog)
            dogs.append(dog.id)
        app.take_snapshot(dogs[0])
        print(f"the old application wrote {app.recorder.max_notification_id()} events and a snapshot; "
              f"the follower tracked up to {follow(app, tally_db)}")
        app.close()

        compiled = registry.compile()
        with open_store(url, table="stored_events", layout=EVENTSOURCING, init=True) as store:
            report = migrate(store, compiled, workers=1)
            print(f"migrate: read {report.events_read}, wrote {report.events_written}: {report.after}")
            print(f"verify: {'digests match' if verify(store, compiled, workers=1).ok else 'FAILED'}")
            flipped = switch(store, compiled, workers=1)
            print(f"switch: epoch {flipped.from_epoch} -> {flipped.to_epoch} is active in table stored_events")
            print(f"lineage of position 1: {store.lineage([1])[1]['chain']}")

        app = Application(env=env(db))
        for dog_id in dogs:
            dog = app.repository.get(dog_id)
            print(f"  {type(dog).__qualname__} {dog.display_name} ({dog.breed}): {dog.tricks}")
        dog = app.repository.get(dogs[1])
        dog.learn_trick("play dead", 3)
        app.save(dog)
        before = Tally.processed
        print(f"the follower carries on: up to {follow(app, tally_db)}, {Tally.processed - before} new event(s)")
        app.close()

        with open_store(url, table="stored_events", layout=EVENTSOURCING) as store:
            back = rollback(store, force=True)
            print(f"rollback: epoch {back.from_epoch} -> {back.to_epoch} ({back.hidden_events} event(s) kept "
                  "in the retired epoch)")
        app = Application(env=env(db))
        dog = app.repository.get(dogs[0])
        print(f"  {type(dog).__qualname__} {dog.name}: {dog.tricks}")
        app.close()


if __name__ == "__main__":
    main()
