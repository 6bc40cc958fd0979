"""Hypothesis strategies for stored events of a registry's schemas, and for stream histories.

An event as a store holds it (:class:`~eventmig.model.events.RecordedEvent`) is
more than a payload: its schema version lives in its metadata or its type
name, according to the registry's version location; it belongs to a stream,
at a stream version; it has an id and a time. The strategies here build all
of it from the registry, so an upcaster or a projection is tested on what
it will really read::

    from eventmig.testing.events import stored_events, stream_histories

    @given(stored_events(registry, "OrderPlaced", 1))
    def test_old_orders_upcast(event): ...

    @given(stream_histories(registry, max_size=20))
    def test_projection_folds_any_history(history): ...

Payloads come from the schema Struct of each ``(type, version)`` through
:func:`~eventmig.testing.strategies.builtins_from_type`, so they honour its
``msgspec.Meta`` constraints, and its fields with a default are sometimes
absent, as in events stored before those fields existed; a node without a
schema (a dict step registered without one) cannot be generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from eventmig.model.events import NewEvent, RecordedEvent, VersionLocation
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.model.steps import Node
from eventmig.testing.boundaries import boundary_payloads
from eventmig.testing.strategies import builtins_from_type

__all__ = [
    "boundary_events",
    "generatable_nodes",
    "payloads",
    "schema_for",
    "stored_events",
    "stream_histories",
    "to_new_events",
]

RegistryLike = Registry | CompiledRegistry

_encode = msgspec.json.Encoder().encode

# Recording times between 2000-01-01 and 2100-01-01, in microseconds since the Unix epoch.
_RECORDED_MIN = 946_684_800_000_000
_RECORDED_MAX = 4_102_444_800_000_000

_IDS = st.uuids().map(str)
_USER_METADATA: SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {}, optional={"correlation_id": _IDS, "causation_id": _IDS, "user": st.text(max_size=12)}
)


def _parts(registry: RegistryLike) -> tuple[Registry, VersionLocation]:
    if isinstance(registry, CompiledRegistry):
        return registry.registry, registry.version_location
    if isinstance(registry, Registry):
        return registry, registry.version_location
    raise TypeError(f"expected an eventmig Registry or CompiledRegistry, got {type(registry).__name__}")


def schema_for(registry: RegistryLike, type: str, version: int) -> type | None:
    """The Struct payloads of ``(type, version)`` are generated from, if there is one.

    That is the node's registered schema, or else the Struct its upcaster
    decodes its input into.
    """
    reg, _ = _parts(registry)
    node = (type, version)
    schema = reg.schemas.get(node)
    if schema is None and node in reg.steps:
        schema = reg.steps[node].input_type
    return schema


def generatable_nodes(registry: RegistryLike) -> list[Node]:
    """Every ``(type, version)`` of the registry that has a schema to generate from, sorted."""
    reg, _ = _parts(registry)
    nodes = set(reg.schemas) | set(reg.steps)
    return sorted(n for n in nodes if schema_for(registry, *n) is not None)


def payloads(registry: RegistryLike, type: str, version: int) -> SearchStrategy[Any]:
    """Payloads of ``(type, version)`` as JSON builtins (what the store's ``data`` decodes to).

    A field with a default is sometimes absent, as in an event written
    before the field was added: msgspec reads it as the default, but a step
    that works on the plain dict sees no key at all, and must still cope.
    """
    schema = schema_for(registry, type, version)
    if schema is None:
        raise ValueError(
            f"cannot generate events of {type} v{version}: it has no schema "
            f"(register one with @registry.schema({type!r}, {version}))"
        )
    return _with_defaults_omitted(schema, builtins_from_type(schema))


def _with_defaults_omitted(schema: type, values: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``values`` (builtins of ``schema``) with some top-level fields that have a default left out.

    Shrinking keeps every field, so a minimal failing example omits only
    the fields its failure needs absent.
    """
    info = mi.type_info(schema)
    if not isinstance(info, mi.StructType) or info.array_like:
        return values
    optional = [f.encode_name for f in info.fields if not f.required]
    if not optional:
        return values
    omitted = st.sets(st.sampled_from(optional))
    return st.tuples(values, omitted).map(lambda pair: {k: v for k, v in pair[0].items() if k not in pair[1]})


def _streams(type: str) -> SearchStrategy[str]:
    return st.uuids().map(lambda u: f"{type.lower()}-{u}")


def _as_strategy(value: Any, default: SearchStrategy[Any]) -> SearchStrategy[Any]:
    if value is None:
        return default
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _place_version(
    draw: st.DrawFn, location: VersionLocation, type: str, version: int, user_metadata: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Where the version goes, per the registry's location.

    Where leaving the location's keys out still reads as the same version
    (a missing ``schema_version`` means 1), both forms are generated: old
    events were written before the key existed.
    """
    metadata = {k: v for k, v in user_metadata.items() if k not in location.metadata_keys}
    stored_type = location.write(type, version, metadata)
    bare = {k: v for k, v in metadata.items() if k not in location.metadata_keys}
    if bare != metadata and location.read(stored_type, dict(bare)) == (type, version) and draw(st.booleans()):
        metadata = bare
    return stored_type, metadata


def stored_events(
    registry: RegistryLike,
    type: str,
    version: int,
    *,
    stream: str | SearchStrategy[str] | None = None,
    stream_version: int | SearchStrategy[int] | None = None,
    metadata: Mapping[str, Any] | SearchStrategy[Mapping[str, Any]] | None = None,
) -> SearchStrategy[RecordedEvent]:
    """Whole stored events of ``(type, version)``, as a store would return them.

    The payload is generated from the node's schema and encoded to JSON
    bytes; the metadata holds the schema version where the registry's
    version location puts it (or the stored type name carries it), plus
    some user metadata (ids of correlation and causation) unless
    ``metadata`` is given. ``stream``, ``stream_version`` and ``metadata``
    may be values or strategies.
    """
    _, location = _parts(registry)
    data = payloads(registry, type, version)
    streams = _as_strategy(stream, _streams(type))
    versions = _as_strategy(stream_version, st.integers(1, 10_000))
    metadatas = _as_strategy(metadata, _USER_METADATA)

    @st.composite
    def build(draw: st.DrawFn) -> RecordedEvent:
        stored_type, meta = _place_version(draw, location, type, version, draw(metadatas))
        return RecordedEvent(
            stream=draw(streams),
            version=draw(versions),
            position=draw(st.integers(1, 2**53)),
            event_id=draw(_IDS),
            type=stored_type,
            data=_encode(draw(data)),
            metadata=_encode(meta),
            recorded_at=draw(st.integers(_RECORDED_MIN, _RECORDED_MAX)),
        )

    return build()


def stream_histories(
    registry: RegistryLike,
    *,
    nodes: Iterable[Node] | None = None,
    heads_only: bool = False,
    stream: str | SearchStrategy[str] | None = None,
    min_size: int = 1,
    max_size: int = 10,
    first_version: int = 1,
    metadata: Mapping[str, Any] | SearchStrategy[Mapping[str, Any]] | None = None,
) -> SearchStrategy[list[RecordedEvent]]:
    """Histories of one stream: events of several types and schema versions, in stream order.

    Stream versions are consecutive from ``first_version``; commit
    positions increase (with gaps, as in stores that share a log between
    streams) and recording times never go back; event ids are distinct.
    Events are drawn from ``nodes`` (default: every node with a schema, or
    only the heads with ``heads_only``).
    """
    reg, location = _parts(registry)
    if nodes is not None:
        chosen = sorted(set(nodes))
    else:
        chosen = generatable_nodes(registry)
        if heads_only:
            compiled = registry if isinstance(registry, CompiledRegistry) else reg.compile()
            chosen = [n for n in chosen if compiled.is_head(n)]
    if not chosen:
        raise ValueError("no (type, version) with a schema to generate a history from")
    node_payloads = {node: payloads(registry, *node) for node in chosen}
    streams = _as_strategy(stream, st.uuids().map(lambda u: f"stream-{u}"))
    metadatas = _as_strategy(metadata, _USER_METADATA)

    @st.composite
    def build(draw: st.DrawFn) -> list[RecordedEvent]:
        name = draw(streams)
        picked: Sequence[Node] = draw(st.lists(st.sampled_from(chosen), min_size=min_size, max_size=max_size))
        ids = draw(st.lists(_IDS, min_size=len(picked), max_size=len(picked), unique=True))
        position = draw(st.integers(1, 2**40))
        recorded_at = draw(st.integers(_RECORDED_MIN, _RECORDED_MAX - 10**12))
        history = []
        for i, node in enumerate(picked):
            stored_type, meta = _place_version(draw, location, *node, draw(metadatas))
            history.append(
                RecordedEvent(
                    stream=name,
                    version=first_version + i,
                    position=position,
                    event_id=ids[i],
                    type=stored_type,
                    data=_encode(draw(node_payloads[node])),
                    metadata=_encode(meta),
                    recorded_at=recorded_at,
                )
            )
            position += draw(st.integers(1, 1_000))
            recorded_at += draw(st.integers(0, 10**9))
        return history

    return build()


def boundary_events(registry: RegistryLike, type: str, version: int) -> list[RecordedEvent]:
    """Stored events of ``(type, version)`` holding the schema's boundary payloads, in a fixed order.

    The checks run them as explicit examples before generating any (see
    :mod:`~eventmig.testing.boundaries`): the simplest payload first, then
    one field at a time at each of its boundary values. Each sits in a
    stream of its own, with the version where the registry's location puts it.
    """
    _, location = _parts(registry)
    schema = schema_for(registry, type, version)
    if schema is None:
        return []
    events = []
    for i, payload in enumerate(boundary_payloads(schema)):
        metadata: dict[str, Any] = {}
        stored_type = location.write(type, version, metadata)
        events.append(RecordedEvent(
            stream=f"{type.lower()}-boundary-{i}",
            version=1,
            position=i + 1,
            event_id=f"00000000-0000-4000-8000-{i:012d}",
            type=stored_type,
            data=_encode(payload),
            metadata=_encode(metadata),
            recorded_at=_RECORDED_MIN,
        ))
    return events


def to_new_events(events: Iterable[RecordedEvent]) -> list[NewEvent]:
    """Generated events in the form :meth:`EventStore.append` takes (ids and times kept)."""
    return [NewEvent(e.type, e.data, e.metadata, e.event_id, e.recorded_at) for e in events]
