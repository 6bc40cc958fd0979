"""Projections bound to a registry: which stored events reach which handlers, and decoded how.

A :class:`~eventmig.projection.api.Projection` is declared against event
types; binding it to a compiled registry resolves stored (type, version)
pairs to head types, their decoders and the slots (projection, handler, key)
each event feeds. The fold and the rebuild and follow jobs all route through it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec

from eventmig.errors import ConfigError, UpcastError
from eventmig.model.events import MetadataKey, TypeSuffix
from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import EventContext
from eventmig.projection.api import STREAM, Handler, Projection
from eventmig.projection.fast_paths import FastPaths
from eventmig.projection.sentinels import _MISSING
from eventmig.projection.callables import arity, code_of, dict_key, type_label


# ====================================================================== binding
class Slot(NamedTuple):
    """One projection's part in handling one head event type."""

    projection: Projection
    index: int  # position of the projection in the bound list
    handler: Handler
    wants_info: bool
    key_kind: int  # KEY_STREAM | KEY_GETTER | KEY_FUNCTION | KEY_INDEXED
    key: Callable[..., Any] | None


KEY_STREAM, KEY_GETTER, KEY_FUNCTION, KEY_INDEXED = range(4)


class Route(NamedTuple):
    """How events of one head type reach the projections that handle it."""

    type: str
    decode: Callable[[bytes], Any]
    slots: tuple[Slot, ...]
    needs_event: bool  # False when every slot is keyed by stream and the event is decoded only if needed


class Binding(FastPaths):
    """Projections bound to a registry: decoders per head type and the slots each event reaches.

    Stored events are routed by their stored type and schema version: head
    events are decoded straight into their Struct; older ones go through
    the registry's chains first; types no projection handles are skipped
    without decoding anything.
    """

    def __init__(self, projections: Sequence[Projection], compiled: CompiledRegistry) -> None:
        self.projections = list(projections)
        self.compiled = compiled
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ConfigError(f"two projections share a name: {sorted({n for n in names if names.count(n) > 1})}")
        tables = [t.name for p in self.projections for t in p.tables]
        if len(set(tables)) != len(tables):
            raise ConfigError(f"two projections write the same table: {sorted({n for n in tables if tables.count(n) > 1})}")
        registry = compiled.registry
        struct_nodes = {cls: node for node, cls in registry.schemas.items()}
        slots: dict[str, list[Slot]] = {}
        for index, projection in enumerate(self.projections):
            if not projection._handlers:
                raise ConfigError(f"projection {projection.name} handles no event type: decorate handlers with @{projection.name}.on(...)")
            bound: set[str] = set()
            for event_type, handler in projection._handlers.items():
                type_name = self._type_name(projection, event_type, struct_nodes)
                if type_name in bound:
                    raise ConfigError(f"projection {projection.name}: two handlers for {type_name}")
                bound.add(type_name)
                struct = self._head_struct(type_name)
                slots.setdefault(type_name, []).append(
                    Slot(projection, index, handler, arity(handler) >= 3, *self._key(projection, struct))
                )
        self.routes: dict[str, Route] = {}
        for type_name, type_slots in slots.items():
            struct = self._head_struct(type_name)
            decode = msgspec.json.Decoder(struct).decode if struct is not None else msgspec.json.Decoder().decode
            needs_event = any(s.key_kind != KEY_STREAM for s in type_slots)
            self.routes[type_name] = Route(type_name, decode, tuple(type_slots), needs_event)
        self._structs = {t: self._head_struct(t) for t in self.routes}
        self._stored: dict[str, Any] = {}  # stored type name -> (type, fixed version or None) | None
        location = compiled.version_location
        self._suffix = location if isinstance(location, TypeSuffix) else None
        self._meta_key = location.key if isinstance(location, MetadataKey) else None
        self._meta_key_bytes = f'"{self._meta_key}"'.encode() if self._meta_key else b""
        self.version_key_bytes = self._meta_key_bytes
        self._version_decoder = (
            msgspec.json.Decoder(
                msgspec.defstruct(
                    "_Version", [("v", Annotated[int, msgspec.Meta(ge=1)], 1)], rename={"v": self._meta_key}
                )
            ).decode
            if self._meta_key
            else None
        )

    # -------------------------------------------------------------- building
    def _type_name(self, projection: Projection, event_type: Any, struct_nodes: dict[type, tuple[str, int]]) -> str:
        if isinstance(event_type, str):
            return event_type
        node = struct_nodes.get(event_type)
        if node is None:
            raise ConfigError(
                f"projection {projection.name} handles {type_label(event_type)}, which is not a schema of the upcaster registry"
            )
        if not self.compiled.is_head(node):
            raise ConfigError(
                f"projection {projection.name} handles {node[0]} v{node[1]} ({type_label(event_type)}), "
                f"not the head schema v{self.compiled.heads.get(node[0])}: projections see head events only"
            )
        return node[0]

    def _head_struct(self, type_name: str) -> type | None:
        head = self.compiled.heads.get(type_name)
        return self.compiled.registry.schema_of((type_name, head)) if head is not None else None

    def _key(self, projection: Projection, struct: type | None) -> tuple[int, Callable[..., Any] | None]:
        key = projection.key
        if key is STREAM:
            return KEY_STREAM, None
        if isinstance(key, str):
            if struct is not None:
                if key not in struct.__struct_fields__:
                    raise ConfigError(f"projection {projection.name}: key field {key!r} is not a field of {struct.__qualname__}")
                return KEY_GETTER, operator.attrgetter(key)
            return KEY_GETTER, dict_key(key)
        if callable(key):
            return (KEY_INDEXED if arity(key) >= 2 else KEY_FUNCTION), key
        raise ConfigError(f"projection {projection.name}: key must be a field name, STREAM or a function, got {key!r}")

    # ---------------------------------------------------------------- blame
    def culprit(self, exc: BaseException) -> str | None:
        """Which projection's code raised ``exc``: ``"projection P: handler of T"`` or ``"...: key function"``.

        Found by walking the traceback for the code of a bound handler or key
        function, so that folding pays nothing for it until something fails.
        None when no projection code is on the traceback (eventmig's own code,
        or the database, failed).
        """
        codes: dict[Any, str] = {}
        for route in self.routes.values():
            for slot in route.slots:
                name = slot.projection.name
                code = code_of(slot.handler)
                if code is not None:
                    codes.setdefault(code, f"projection {name}: handler of {route.type}")
                key = slot.projection.key
                code = code_of(key) if callable(key) and key is not STREAM else None
                if code is not None:
                    codes.setdefault(code, f"projection {name}: key function")
        tb = exc.__traceback__
        while tb is not None:  # outermost first: the function eventmig called, not a helper it called
            found = codes.get(tb.tb_frame.f_code)
            if found is not None:
                return found
            tb = tb.tb_next
        return None

    # --------------------------------------------------------------- routing
    def handled_types(self) -> set[str]:
        return set(self.routes)

    def resolve(self, stored_type: str, metadata: bytes) -> tuple[str, int] | None:
        """(type, schema version) of a stored event, or None if no projection can use it.

        Events whose type can never become a handled type are recognised from
        the stored type alone, without reading their metadata.
        """
        entry = self._stored.get(stored_type, _MISSING)
        if entry is _MISSING:
            entry = self._stored[stored_type] = self._classify(stored_type)
        if entry is None:
            return None
        type_name, version = entry
        if version is not None:
            return type_name, version
        if self._meta_key_bytes not in metadata:
            return type_name, 1
        return type_name, self._metadata_version(metadata)

    def _classify(self, stored_type: str) -> tuple[str, int | None] | None:
        if self._suffix is not None:
            type_name, version = self._suffix.read(stored_type, {})
        else:
            type_name, version = stored_type, None
        reachable = self._reachable_types(type_name)
        if not reachable & self.routes.keys():
            return None
        return type_name, version

    def _reachable_types(self, type_name: str) -> set[str]:
        """Head types a stored event of ``type_name`` (any version) can become."""
        steps = self.compiled.registry.steps
        found: set[str] = {type_name}
        todo = [node for node in steps if node[0] == type_name]
        seen: set[tuple[str, int]] = set()
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            for target in steps[node].targets:
                found.add(target[0])
                if target in steps:
                    todo.append(target)
        return found

    def _metadata_version(self, metadata: bytes) -> int:
        assert self._version_decoder is not None
        try:
            return self._version_decoder(metadata).v
        except msgspec.ValidationError as exc:
            raise UpcastError(f"metadata {self._meta_key!r}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise UpcastError(f"metadata is not a JSON object: {exc}") from None

    def metadata_version(self) -> Callable[[bytes], int] | None:
        """A fast reader of the schema version in metadata bytes (None: it is not kept in metadata)."""
        if self._version_decoder is None:
            return None
        key, decode = self._meta_key_bytes, self._version_decoder

        def version(metadata: bytes) -> int:
            return decode(metadata).v if key in metadata else 1

        return version

    def entry(self, stored_type: str) -> tuple[str, int | None, int] | None:
        """(type, version fixed by the stored type name or None, head version) for a stored type name.

        Types unknown to the registry are their own head (version 0 stands for both).
        """
        classified = self._classify(stored_type)
        if classified is None:
            return None
        type_name, version = classified
        if not self.compiled.knows(type_name):
            return type_name, 0, 0
        return type_name, version, self.compiled.heads.get(type_name, -1)

    def head_events(self, row: Sequence[Any], type_name: str, version: int) -> list[tuple[Route, Any]]:
        """The head events a stored event of an older schema becomes, as head Structs, with their routes."""
        compiled = self.compiled
        context = None
        if compiled.needs_context:
            stream, _stream_version, _position, event_id, _type, _data, metadata, recorded_at = row
            context = EventContext(
                stream, type_name, version, msgspec.json.decode(metadata) if metadata else {}, event_id, recorded_at
            )
        out = []
        for t, _v, payload, path in compiled.upcast_payloads(type_name, version, row[5], context):
            route = self.routes.get(t)
            if route is not None:
                out.append((route, self._as_head(t, payload, path)))
        return out

    def _as_head(self, type_name: str, payload: Any, path: tuple[str, ...]) -> Any:
        """What a chain produced, as the head Struct its handlers expect (or builtins for schemaless types)."""
        struct = self._structs.get(type_name)
        if struct is None:
            return msgspec.to_builtins(payload) if isinstance(payload, msgspec.Struct) else payload
        if payload.__class__ is struct:
            return payload
        try:
            return msgspec.convert(payload, struct, from_attributes=True)
        except msgspec.ValidationError as exc:
            via = f" (after {' -> '.join(path)})" if path else ""
            raise UpcastError(f"{type_name} payload does not match its head schema{via}: {exc}") from None

    def is_head(self, type_name: str, version: int) -> bool:
        head = self.compiled.heads.get(type_name)
        return head is None and not self.compiled.knows(type_name) or head == version

    def general_path(self, type_name: str, version: int) -> Callable[[Sequence[Any]], list[tuple[str, Any]]]:
        """``row -> [(head type, head event)]`` through the registry's chains, for whatever they handle."""
        if self.compiled.needs_context:
            return lambda row: [(route.type, event) for route, event in self.head_events(row, type_name, version)]
        upcast = self.compiled.upcast_payloads
        structs = self._structs
        as_head = self._as_head
        routes = self.routes

        def run(row: Sequence[Any]) -> list[tuple[str, Any]]:
            out = []
            for t, _v, payload, path in upcast(type_name, version, row[5]):
                if t in routes:
                    out.append((t, payload if payload.__class__ is structs[t] else as_head(t, payload, path)))
            return out

        return run


def events_of(binding: Binding, row: Sequence[Any]) -> list[tuple[Route, Any]]:
    resolved = binding.resolve(row[4], row[6])
    if resolved is None:
        return []
    type_name, version = resolved
    route = binding.routes.get(type_name)
    if binding.is_head(type_name, version):
        return [(route, route.decode(row[5]))] if route is not None else []
    return binding.head_events(row, type_name, version)
