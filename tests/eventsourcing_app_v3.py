"""The dog school of :mod:`eventsourcing_app` after its events evolved, as the team writes it today.

Version-3 event classes and no ``upcast_`` methods: the old events are made
version 3 by eventmig's upcasters (registered with eventmig, not here), so
this code only ever reads events as it writes them. ``Registered`` now says
``display_name`` and ``breed``; ``TrickAdded`` is now ``TrickLearned``, with
a ``level``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from eventsourcing_app import persistence_env


class Dog(Aggregate):
    class Registered(Aggregate.Created):
        class_version = 3
        display_name: str
        breed: str

    @event(Registered)
    def __init__(self, display_name: str, breed: str) -> None:
        self.display_name = display_name
        self.breed = breed
        self.tricks: list[tuple[str, int]] = []

    class TrickLearned(Aggregate.Event):
        class_version = 3
        trick: str
        level: int

    @event(TrickLearned)
    def learn_trick(self, trick: str, level: int) -> None:
        self.tricks.append((trick, level))


class DogSchool(Application):
    def register(self, display_name: str, breed: str) -> UUID:
        dog = Dog(display_name, breed)
        self.save(dog)
        return dog.id

    def learn_trick(self, dog_id: UUID, trick: str, level: int = 1) -> None:
        dog = self.repository.get(dog_id)
        dog.learn_trick(trick, level)
        self.save(dog)

    def get_dog(self, dog_id: UUID) -> Dog:
        return self.repository.get(dog_id)


@contextmanager
def dog_school(url: str) -> Iterator[DogSchool]:
    """The application persisting into the database of ``url``, closed afterwards."""
    app = DogSchool(env=persistence_env(url))
    try:
        yield app
    finally:
        app.close()
