"""eventmig's bookkeeping on the cluster: epochs and switches, runs, quarantine, in ``$eventmig-*`` streams.

Each change to the epochs is one event holding the whole state (epochs,
the active one, the switches), appended with the expected revision of the
state it was computed from: two jobs racing to change it cannot both win,
and the latest event is the truth. A store eventmig never wrote to has no
such stream and reads as epoch 1 active, nothing else. Runs and
quarantined events are appended, one event each, and read back whole.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from eventmig.errors import StoreError
from eventmig.model.records import EpochInfo, QuarantinedEvent, Run, Switch
from .names import QUARANTINE_STREAM, RUNS_STREAM, STATE_STREAM, EpochNames, default_prefix, plain

_NAMESPACE = uuid.UUID("8d7f0c1e-2b3a-5c4d-8e9f-0a1b2c3d4e5f")


class State(msgspec.Struct):
    """The epochs of a store, which one is active, and every switch and rollback so far."""

    epochs: list[EpochInfo]
    active: int
    switches: list[Switch] = []
    #: the number the next epoch gets: numbers (and so stream prefixes) are never reused, since a
    #: dropped epoch's streams stay in $all until a scavenge, and reusing them would recreate them
    next_epoch: int = 2
    #: each epoch's stream-name prefix, where it is not the default (see :mod:`.names`)
    prefixes: dict[int, str] = {}
    #: epochs that hold nothing: epoch 1, once a migration into the empty cluster took its plain names
    hollow: list[int] = []

    def names(self, number: int) -> EpochNames:
        """How epoch ``number``'s streams are named."""
        return EpochNames(number, self.prefixes.get(number, default_prefix(number)), number in self.hollow)

    def epoch(self, number: int) -> EpochInfo | None:
        return next((e for e in self.epochs if e.epoch == number), None)

    def with_status(self, number: int, status: str) -> None:
        self.epochs = [msgspec.structs.replace(e, status=status) if e.epoch == number else e for e in self.epochs]


class Ledger:
    """Reads and writes the bookkeeping streams through one client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    # ------------------------------------------------------------ state
    def active_names(self) -> EpochNames:
        """How the active epoch's streams are named: one read of the state stream's last event (plain
        names on a cluster eventmig never wrote epochs to). What a handle that follows the active
        epoch, and :class:`~eventmig.backends.esdb.pointer.EpochPointer`, resolve names through."""
        from kurrentdbclient.exceptions import NotFoundError

        try:
            last = self.client.get_stream(STATE_STREAM, backwards=True, limit=1)
        except NotFoundError:
            last = ()
        if not last:
            return plain()
        state = msgspec.json.decode(last[0].data, type=State)
        return state.names(state.active)

    def state(self) -> tuple[State, int | None]:
        """The current state and the revision it was read at (None: never written)."""
        from kurrentdbclient.exceptions import NotFoundError

        try:
            last = self.client.get_stream(STATE_STREAM, backwards=True, limit=1)
        except NotFoundError:
            last = ()
        if not last:
            return State([EpochInfo(1, "active", None, self._first_event_time())], 1), None
        return msgspec.json.decode(last[0].data, type=State), last[0].stream_position

    def _first_event_time(self) -> float:
        """When the cluster's first application event was written (now, if it has none): when epoch 1
        began, for a cluster eventmig has not written epochs to."""
        with self.client.read_all(limit=1, **plain().read_filter()) as events:
            for e in events:
                return e.recorded_at.timestamp() if e.recorded_at is not None else time.time()
        return time.time()

    def save_state(self, state: State, read_at: int | None) -> None:
        """Write ``state``, refusing if another job changed it since it was read at ``read_at``."""
        from kurrentdbclient import NewEvent, StreamState
        from kurrentdbclient.exceptions import WrongCurrentVersionError

        expected = StreamState.NO_STREAM if read_at is None else read_at
        try:
            self.client.append_to_stream(STATE_STREAM, current_version=expected,
                                         events=[NewEvent("EpochsChanged", msgspec.json.encode(state))])
        except WrongCurrentVersionError:
            raise StoreError("another eventmig job changed the epochs meanwhile; run the command again") from None

    # ------------------------------------------------------------- runs
    def save_run(self, run: Run) -> None:
        from kurrentdbclient import NewEvent, StreamState

        self.client.append_to_stream(RUNS_STREAM, current_version=StreamState.ANY,
                                     events=[NewEvent("RunSaved", msgspec.json.encode(run))])

    def runs(self) -> list[Run]:
        """Each run's latest record, in the order the runs started."""
        latest: dict[str, Run] = {}
        for e in self._read(RUNS_STREAM):
            run = msgspec.json.decode(e.data, type=Run)
            latest[run.id] = run  # dicts keep first insertion order: the order runs started
        return list(latest.values())

    # ------------------------------------------------------- quarantine
    def quarantine_events(self, events: list[QuarantinedEvent]) -> Any:
        """NewEvents for these quarantined events, with ids a repeated write is recognised by."""
        from kurrentdbclient import NewEvent

        return [
            NewEvent("Quarantined", msgspec.json.encode(q),
                     id=uuid.uuid5(_NAMESPACE, f"{q.run_id}/{q.position}/{q.event_id}"))
            for q in events
        ]

    def add_quarantine(self, events: list[QuarantinedEvent]) -> None:
        from kurrentdbclient import StreamState

        if events:
            self.client.append_to_stream(QUARANTINE_STREAM, current_version=StreamState.ANY,
                                         events=self.quarantine_events(events))

    def quarantine(self, run_id: str | None) -> list[QuarantinedEvent]:
        """Quarantined events (their id: their revision in the quarantine stream), acceptances applied."""
        found: dict[int, QuarantinedEvent] = {}
        for e in self._read(QUARANTINE_STREAM):
            if e.type == "Quarantined":
                q = msgspec.json.decode(e.data, type=QuarantinedEvent)
                found[e.stream_position] = msgspec.structs.replace(q, id=e.stream_position)
            elif e.type == "QuarantineAccepted":
                accepted = msgspec.json.decode(e.data)
                for key, q in found.items():
                    if q.run_id == accepted["run_id"] and (accepted["ids"] is None or key in accepted["ids"]):
                        found[key] = msgspec.structs.replace(q, accepted=True)
        return [q for q in found.values() if run_id is None or q.run_id == run_id]

    def accept(self, run_id: str, ids: list[int] | None) -> int:
        from kurrentdbclient import NewEvent, StreamState

        pending = [q for q in self.quarantine(run_id) if not q.accepted and (ids is None or q.id in ids)]
        if pending:
            doc = {"run_id": run_id, "ids": [q.id for q in pending], "at": time.time()}
            self.client.append_to_stream(QUARANTINE_STREAM, current_version=StreamState.ANY,
                                         events=[NewEvent("QuarantineAccepted", msgspec.json.encode(doc))])
        return len(pending)

    def _read(self, stream: str) -> Any:
        from kurrentdbclient.exceptions import NotFoundError

        try:
            return self.client.get_stream(stream)
        except NotFoundError:
            return ()
