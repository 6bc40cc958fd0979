"""Property tests of verify on SQLite and PostgreSQL: it flags exactly the streams a corruption touched,
and never a rewrite a reader cannot see.

Hypothesis draws a migration (a registry of the suite's, a few streams of
generated events of its schemas, interleaved in some commit order, maybe a
renamed stream, small batches so that streams cross slices) and runs it;
verify must pass. Then one corruption of the new epoch, drawn from a family
(delete, duplicate, reorder, renumber, change a field, move to another
stream, truncate a payload), must make verify report exactly the streams it
touched, each with the right field; and one benign rewrite (key order,
whitespace, lineage, the commit order) must leave it passing. Examples are
kept small and few: each one creates, migrates and verifies a store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from eventmig.model.events import RecordedEvent
from eventmig.jobs.migrate import migrate
from eventmig.ports import EventStore
from eventmig.backends import open_store
from eventmig.model.records import TargetEvent
from eventmig.testing.events import stream_histories
from eventmig.testing.plugin import fresh_schema
from eventmig.jobs.verify import verify
from registries import raw_hooks, tagged_sets

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

# each example creates a store: few examples (per kind of corruption or rewrite, so each is tried on each
# backend), and no explain phase after a failure (shrinking is enough)
_PROPERTY = settings(
    max_examples=5, deadline=None, derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def registries(shop_registry) -> dict[str, Any]:
    return {"shop": shop_registry, "raw hooks": raw_hooks().compile(), "tagged sets": tagged_sets().compile()}


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Any]:
    """A factory of fresh stores of one backend, one per hypothesis example."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("verify-properties")

        @contextmanager
        def sqlite() -> Iterator[EventStore]:
            with open_store(f"sqlite:///{directory / f'{uuid.uuid4().hex}.db'}") as store:
                yield store

        return sqlite
    server = request.getfixturevalue("postgres_server")

    @contextmanager
    def postgresql() -> Iterator[EventStore]:
        with fresh_schema(server) as url, open_store(url) as store:
            yield store

    return postgresql


# ---------------------------------------------------------------- migrations
@st.composite
def migrations(draw: st.DrawFn, registries: dict[str, Any]) -> dict[str, Any]:
    """A registry, a source history of a few streams interleaved in commit order, a stream map, batch sizes."""
    name = draw(st.sampled_from(sorted(registries)))
    registry = registries[name]
    count = draw(st.integers(1, 3))
    histories = [draw(stream_histories(registry, stream=f"s{i}", max_size=4)) for i in range(count)]
    # the commit order: each stream's events in their order, the streams interleaved as drawn
    turns = draw(st.permutations([i for i, history in enumerate(histories) for _ in history]))
    nexts = [iter(h) for h in histories]
    ordered = [next(nexts[i]) for i in turns]
    events = [  # ids unique across streams (generated ones are unique within a stream only)
        TargetEvent(e.stream, e.version, str(uuid.UUID(int=n + 1)), e.type, e.data, e.metadata, e.recorded_at)
        for n, e in enumerate(ordered)
    ]
    stream_map = {"s0": "renamed-s0"} if draw(st.booleans()) else None
    sizes = st.sampled_from([1, 2, 3, 1000])
    return {"registry": name, "events": events, "stream_map": stream_map, "migrate_batch": draw(sizes),
            "verify_batch": draw(sizes)}


@contextmanager
def migrated(make_store: Callable[[], Any], registries: dict[str, Any], migration: dict[str, Any]) -> Iterator[tuple[EventStore, Any]]:
    """A fresh store holding the migration's source, migrated and verified."""
    compiled = registries[migration["registry"]]
    with make_store() as store:
        store.write_batch(migration["events"])
        report = migrate(store, compiled, batch_size=migration["migrate_batch"], stream_map=migration["stream_map"],
                         workers=1)
        store.accept_quarantine(report.run_id)  # generated events that do not upcast are not what is tested
        baseline = verify(store, compiled, workers=1, batch_size=migration["verify_batch"])
        assert baseline.ok, baseline.problems
        yield store, compiled


def _target(store: EventStore) -> EventStore:
    return store.at_epoch(max(e.epoch for e in store.epochs()))


def _rows(target: EventStore) -> list[RecordedEvent]:
    return [RecordedEvent(*r) for rows in target.read_all_rows() for r in rows]


def _execute(target: EventStore, sql: str, *params: Any) -> None:
    with target.engine.begin() as c:  # type: ignore[attr-defined]
        c.exec_driver_sql(target._q(sql.format(t=target._table)), params)  # type: ignore[attr-defined]


def _set(target: EventStore, position: int, **values: Any) -> None:
    columns = ", ".join(f"{c} = ?" for c in values)
    _execute(target, f"UPDATE {{t}} SET {columns} WHERE global_position = ?", *values.values(), position)


def _insert(target: EventStore, e: RecordedEvent, **values: Any) -> None:
    row = {"stream": e.stream, "version": e.version, "event_id": e.event_id, "type": e.type, "data": e.data,
           "metadata": e.metadata, "recorded_at": e.recorded_at, **values}
    _execute(target, f"INSERT INTO {{t}} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", *row.values())


def _last_version(rows: list[RecordedEvent], stream: str) -> int:
    return max((e.version for e in rows if e.stream == stream), default=0)


# --------------------------------------------------------------- corruptions
FIELDS = ["type", "schema version", "payload", "metadata", "event id", "record time"]
CORRUPTIONS = ["delete", "duplicate", "reorder", "renumber", "move", "truncate", *FIELDS]


def corrupt(target: EventStore, kind: str, draw: Callable[[Any], Any]) -> dict[str, str]:
    """Apply one corruption; return each stream it touched with the field its first difference must be."""
    rows = _rows(target)
    victim = draw(st.sampled_from(rows))
    stream, last = victim.stream, _last_version(rows, victim.stream)
    meta = _decode(victim.metadata)
    if kind == "delete":
        _execute(target, "DELETE FROM {t} WHERE global_position = ?", victim.position)
        return {stream: "missing"}
    if kind == "duplicate":
        _insert(target, victim, version=last + 1, event_id=str(uuid.uuid4()))
        return {stream: "unexpected"}
    if kind == "reorder":
        others = [e for e in rows if e.stream == stream and e.version != victim.version]
        if not others:
            return corrupt(target, "renumber", draw)
        other = draw(st.sampled_from(others))
        _set(target, victim.position, version=-1)
        _set(target, other.position, version=victim.version)
        _set(target, victim.position, version=other.version)
        return {stream: "version"}
    if kind == "renumber":
        _set(target, victim.position, version=last + draw(st.integers(1, 3)))
        return {stream: "version"}
    if kind == "move":
        elsewhere = draw(st.sampled_from(sorted({e.stream for e in rows} - {stream} | {"moved-here"})))
        _set(target, victim.position, stream=elsewhere, version=_last_version(rows, elsewhere) + 1)
        return {stream: "missing", elsewhere: "unexpected"}
    if kind == "truncate":  # payloads are JSON objects: no prefix of one is JSON
        _set(target, victim.position, data=victim.data[: draw(st.integers(1, len(victim.data) - 1))])
        return {stream: "malformed"}
    if kind == "type":
        _set(target, victim.position, type=victim.type + "X")
    elif kind == "schema version":
        _set(target, victim.position, metadata=_encode({**meta, "schema_version": meta.get("schema_version", 1) + 1}))
    elif kind == "payload":
        _set(target, victim.position, data=_encode({**_decode(victim.data), "tampered": True}))
    elif kind == "metadata":
        _set(target, victim.position, metadata=_encode({**meta, "tampered": True}))
    elif kind == "event id":
        _set(target, victim.position, event_id=str(uuid.uuid4()))
    elif kind == "record time":
        _set(target, victim.position, recorded_at=victim.recorded_at + draw(st.sampled_from([-1, 1, 10**6])))
    return {stream: kind}


@pytest.mark.parametrize("kind", CORRUPTIONS)
@_PROPERTY
@given(data=st.data())
def test_verify_flags_exactly_the_streams_a_corruption_touched(make_store, registries, kind, data):
    migration = data.draw(migrations(registries), label="migration")
    event(migration["registry"])
    with migrated(make_store, registries, migration) as (store, compiled):
        target = _target(store)
        if not _rows(target):
            return  # everything was dropped: nothing to corrupt
        touched = corrupt(target, kind, data.draw)
        report = verify(store, compiled, workers=1, batch_size=migration["verify_batch"])
        assert not report.ok
        assert set(report.differing_streams) == set(touched), report.problems
        assert {d.stream: d.field for d in report.differences} == touched, report.differences


# ----------------------------------------------------------- benign rewrites
REWRITES = ["key order", "whitespace", "lineage", "commit order"]


def rewrite(target: EventStore, kind: str, draw: Callable[[Any], Any]) -> None:
    """Rewrite the target in a way no reader of its streams can see."""
    rows = _rows(target)
    if kind == "commit order":  # every stream reads the same; the epoch's commit order is another one
        shuffled = draw(st.permutations(rows))
        _execute(target, "DELETE FROM {t}")
        for e in shuffled:
            _insert(target, e)
        return
    victim = draw(st.sampled_from(rows))
    data, meta = _decode(victim.data), _decode(victim.metadata)
    if kind == "key order":
        _set(target, victim.position, data=_encode(dict(reversed(list(data.items())))),
             metadata=_encode(dict(reversed(list(meta.items())))))
    elif kind == "whitespace":
        _set(target, victim.position, data=json.dumps(data, indent=2).encode(),
             metadata=json.dumps(meta, separators=(" , ", " : ")).encode())
    elif kind == "lineage":
        lineage = {**meta["eventmig"], "chain": ["rewritten"], "source": {"position": -1}}
        _set(target, victim.position, metadata=_encode({**meta, "eventmig": lineage}))


@pytest.mark.parametrize("kind", REWRITES)
@_PROPERTY
@given(data=st.data())
def test_verify_never_flags_a_rewrite_no_reader_can_see(make_store, registries, kind, data):
    migration = data.draw(migrations(registries), label="migration")
    event(migration["registry"])
    with migrated(make_store, registries, migration) as (store, compiled):
        target = _target(store)
        if not _rows(target):
            return
        rewrite(target, kind, data.draw)
        report = verify(store, compiled, workers=1, batch_size=migration["verify_batch"])
        assert report.ok, (report.problems, report.differences)
