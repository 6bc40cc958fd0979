"""A small application written with the ``eventsourcing`` library, as a team would have it: dogs with tricks.

Tests use it to write a real eventsourcing store (SQLite or PostgreSQL) that
eventmig then has to find, recognise and refuse to mistake for an empty one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy.engine import make_url


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.tricks: list[str] = []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


class DogSchool(Application):
    def register(self, name: str) -> UUID:
        dog = Dog(name)
        self.save(dog)
        return dog.id

    def add_trick(self, dog_id: UUID, trick: str) -> None:
        dog = self.repository.get(dog_id)
        dog.add_trick(trick)
        self.save(dog)


def persistence_env(url: str) -> dict[str, str]:
    """The environment eventsourcing reads its persistence settings from, for an eventmig store URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(parsed.database)}
    options = str(parsed.query.get("options", ""))
    schema = options.partition("search_path=")[2] or "public"
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": str(parsed.database),
        "POSTGRES_HOST": str(parsed.host), "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": str(parsed.username), "POSTGRES_PASSWORD": parsed.password or "",
        "POSTGRES_SCHEMA": schema,
    }


@contextmanager
def dog_school(url: str) -> Iterator[DogSchool]:
    """The application persisting into the database of ``url``, closed afterwards."""
    app = DogSchool(env=persistence_env(url))
    try:
        yield app
    finally:
        app.close()


def write_history(url: str, dogs: int = 3, tricks: int = 2) -> list[UUID]:
    """Register ``dogs`` dogs with ``tricks`` tricks each; their ids."""
    with dog_school(url) as app:
        ids = [app.register(f"dog-{i}") for i in range(dogs)]
        for dog_id in ids:
            for t in range(tricks):
                app.add_trick(dog_id, f"trick-{t}")
    return ids
