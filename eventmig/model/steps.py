"""What a registry is made of: schema nodes, steps, and the rules on what a step may return.

A step maps one event of ``(type, version)`` to zero, one or many events of
later schemas. This module holds the records both the declarations
(:mod:`eventmig.model.registry`) and the compiled chains
(:mod:`eventmig.model.chains`) speak in, so that neither imports the other's
internals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventmig.errors import UpcastError
from eventmig.model.declared import Declared

Node = tuple[str, int]
"""An event schema: ``(event type, schema version)``."""


def format_node(node: Node) -> str:
    """``"OrderPlaced v2"``: how messages name a node."""
    return f"{node[0]} v{node[1]}"


@dataclass(frozen=True)
class Emitted:
    """An output of a dict step that is not simply "the next version of the same type"."""

    type: str
    version: int
    data: Any


def emit(type: str, version: int, data: Any) -> Emitted:
    """Return this from a dict step to produce an event of another type or several events."""
    return Emitted(type, version, data)


@dataclass(frozen=True)
class EventContext:
    """What a step may know about the event beyond its payload (passed if it takes 2 args)."""

    stream: str
    type: str
    version: int
    metadata: Mapping[str, Any]
    event_id: str = ""
    recorded_at: int = 0


@dataclass(frozen=True)
class Step:
    """One registered upcaster: ``source`` becomes events of ``targets`` (empty: dropped)."""

    source: Node
    targets: tuple[Node, ...]
    fn: Callable[..., Any]
    name: str
    input_type: type | None  # a Struct to decode the payload into; None: plain builtins
    takes_context: bool
    #: what it says it does to fields and targets, for the checks (never changes what it does)
    declared: Declared = Declared()


Chained = tuple[str, int, Any, tuple[str, ...]]
"""An event produced by a chain: (type, version, payload object, names of the steps it went through)."""

Chain = Callable[[Any, "EventContext | None"], list[Chained]]


#: what an event has besides its payload: a field of these names in a step's output is a mistake for one of them
ENVELOPE = frozenset(("stream", "stream_id", "type", "event_type", "version", "schema_version", "metadata",
                      "event_id", "id", "position", "recorded_at"))


def declared_fields(schema: type) -> frozenset[str]:
    """The names a JSON object of ``schema`` may have: its fields as encoded (renames applied), and its tag's."""
    config = schema.__struct_config__  # type: ignore[attr-defined]
    tag = (config.tag_field,) if config.tag_field is not None else ()
    return frozenset((*schema.__struct_encode_fields__, *tag))  # type: ignore[attr-defined]


def undeclared(name: str, target: Node, obj: Mapping[str, Any], fields: frozenset[str]) -> UpcastError:
    """The error of a step that returned, for a schema, a dict with fields the schema does not declare.

    Such a field would be written into the payload unvalidated (a Struct
    decoder ignores fields it does not know), so the event is quarantined
    instead; a field named like part of the event's envelope (``stream``,
    ``metadata``...) gets a word on why that is no way to set it.
    """
    extra = sorted(set(obj) - fields)
    why = ""
    if ENVELOPE.intersection(extra):
        why = ("; a step returns only the payload: an event keeps its stream (renamed only by --stream-map), "
               "its id and its metadata")
    return UpcastError(
        f"upcaster {name} returned {format_node(target)} with field(s) {', '.join(map(repr, extra))} "
        f"that its schema does not declare{why}"
    )
