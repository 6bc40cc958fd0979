"""The upcaster registry: schemas per version, steps between them, compiled chains.

Service code fills a :class:`Registry` with decorators::

    registry = Registry()

    @registry.schema("OrderPlaced", 1)
    class OrderPlacedV1(msgspec.Struct): ...

    @registry.schema("OrderPlaced", 2)
    class OrderPlacedV2(msgspec.Struct): ...

    @registry.upcaster
    def order_placed_v2(e: OrderPlacedV1) -> OrderPlacedV2: ...

A step maps one event of ``(type, version)`` to zero, one or many events of
later schemas, possibly of other types (renames, splits, drops). Steps are
declared with their outputs, so the whole graph is known before any event is
read: :meth:`Registry.compile` validates it (no duplicate steps, no cycles,
no version gaps, every output reaches a head) and builds one function per
stored ``(type, version)`` that runs the whole chain, decoding the payload
once and encoding it once.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import msgspec
import msgspec.inspect as mi

from eventmig.model.declared import Declared, Example, as_event, declared, source_path
from eventmig.errors import RegistryError, UpcastError
from eventmig.model.events import MetadataKey, VersionLocation, canonical_json
from eventmig.model.events import encode_json as _encode
from eventmig.model.events import version_location as parse_version_location
from eventmig.model.nesting import too_deep

Node = tuple[str, int]
"""An event schema: ``(event type, schema version)``."""

_json_decode = msgspec.json.Decoder().decode
_encode_fast = msgspec.json.Encoder().encode


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


class Outcome(msgspec.Struct, gc=False):
    """The result of upcasting one stored event. ``kind`` tells the report how it was treated.

    ``events`` holds ``(type, version, canonical JSON bytes, step names)`` per output.
    """

    kind: str  # "upcast" | "head" | "unknown" | "dropped"
    events: list[tuple[str, int, bytes, tuple[str, ...]]]


def _format_node(node: Node) -> str:
    return f"{node[0]} v{node[1]}"


class Registry:
    """Schemas and upcaster steps of one service, compiled into chains to each head."""

    def __init__(self, version_location: VersionLocation | str | None = None) -> None:
        if isinstance(version_location, str):
            version_location = parse_version_location(version_location)
        self._version_location: VersionLocation = version_location or MetadataKey()
        self._schemas: dict[Node, type] = {}
        self._nodes_of_struct: dict[type, Node] = {}
        self._steps: dict[Node, Step] = {}
        self._examples: list[Example] = []
        self._compiled: CompiledRegistry | None = None

    @property
    def version_location(self) -> VersionLocation:
        """Where stored events keep their schema version."""
        return self._version_location

    @version_location.setter
    def version_location(self, location: VersionLocation | str) -> None:
        self._version_location = parse_version_location(location) if isinstance(location, str) else location
        self._compiled = None

    # ----------------------------------------------------------- registration
    def schema(self, type: str, version: int) -> Callable[[type], type]:
        """Class decorator: declare the msgspec Struct of ``(type, version)``."""

        def register(cls: type) -> type:
            node = (type, _check_version(version, type))
            if not (isinstance(cls, builtins.type) and issubclass(cls, msgspec.Struct)):
                raise RegistryError(f"schema {_format_node(node)} must be a msgspec.Struct, got {cls!r}")
            if node in self._schemas and self._schemas[node] is not cls:
                raise RegistryError(
                    f"two schemas for {_format_node(node)}: "
                    f"{self._schemas[node].__qualname__} and {cls.__qualname__}"
                )
            self._schemas[node] = cls
            self._nodes_of_struct[cls] = node
            self._compiled = None
            return cls

        return register

    def upcaster(
        self,
        type: str | Callable[..., Any] | None = None,
        version: int | None = None,
        *,
        to: Node | Sequence[Node] | None = None,
        name: str | None = None,
        **declarations: Any,
    ) -> Any:
        """Register a step. Usable bare (``@registry.upcaster``) on a typed function, or as
        ``@registry.upcaster("T", 1, to=("T", 2))`` for dict steps and explicit outputs.

        The source is taken from the first parameter's Struct annotation unless given;
        the outputs from the return annotation unless ``to`` is given (``to=[]`` drops).
        ``declarations`` say what the step does for the checks: ``rename``, ``convert``,
        ``defaults``, ``remove``, ``optional``, ``repeated`` (see :meth:`declare`).
        """
        if callable(type) and version is None and to is None:
            return self._register_fn(type, None, None, name, Declared())
        declaring = _declared(declarations)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            source = None if type is None else (type, _check_version(version, type))
            return self._register_fn(fn, source, to, name, declaring)

        return register

    def add_step(
        self,
        source: Node,
        targets: Sequence[Node],
        fn: Callable[..., Any],
        *,
        name: str,
        input_type: type | None = None,
        takes_context: bool = False,
        declared: Declared | None = None,
    ) -> Step:
        """Register a fully described step (what the decorators and helpers build)."""
        source = (source[0], _check_version(source[1], source[0]))
        targets = tuple((t, _check_version(v, t)) for t, v in targets)
        if source in self._steps:
            raise RegistryError(
                f"two upcasters from {_format_node(source)}: {self._steps[source].name} and {name}"
            )
        step = Step(source, targets, fn, name, input_type, takes_context, declared or Declared())
        self._steps[source] = step
        self._compiled = None
        return step

    def _register_fn(
        self,
        fn: Callable[..., Any],
        source: Node | None,
        to: Node | Sequence[Node] | None,
        name: str | None,
        declaring: Declared,
    ) -> Callable[..., Any]:
        step_name = name or f"{fn.__module__}.{fn.__qualname__}"
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise RegistryError(f"upcaster {step_name} must take (payload) or (payload, context)")
        hints = _type_hints(fn, step_name, {cls.__name__: cls for cls in self._nodes_of_struct})
        input_type = hints.get(params[0].name)
        if not (isinstance(input_type, type) and issubclass(input_type, msgspec.Struct)):
            input_type = None
        if source is None:
            if input_type is None or input_type not in self._nodes_of_struct:
                raise RegistryError(
                    f"upcaster {step_name}: annotate its first parameter with a registered "
                    f"schema Struct, or pass the source as upcaster(type, version)"
                )
            source = self._nodes_of_struct[input_type]
        if to is None:
            if "return" not in hints:
                raise RegistryError(
                    f"upcaster {step_name}: annotate its return with schema Structs or pass to=..."
                )
            targets = self._targets_from_annotation(hints["return"], step_name)
            if _NoneType in _top_level(hints["return"]):  # ``-> T | None``: it may emit nothing
                declaring = declaring.merged(Declared(optional=frozenset(targets)))
        elif isinstance(to, tuple) and len(to) == 2 and isinstance(to[0], str):
            targets = [to]  # type: ignore[list-item]
        else:
            targets = list(to)  # type: ignore[arg-type]
        self.add_step(
            source, targets, fn, name=step_name, input_type=input_type, takes_context=len(params) == 2,
            declared=declaring,
        )
        return fn

    def _targets_from_annotation(self, annotation: Any, step_name: str) -> list[Node]:
        targets: list[Node] = []
        for cls in _leaf_types(annotation):
            if cls is type(None):
                continue
            if cls not in self._nodes_of_struct:
                raise RegistryError(
                    f"upcaster {step_name}: return type {getattr(cls, '__qualname__', cls)!r} "
                    "is not a registered schema"
                )
            if self._nodes_of_struct[cls] not in targets:
                targets.append(self._nodes_of_struct[cls])
        return targets

    # ---------------------------------------------------------------- helpers
    def rename_type(self, type: str, version: int, to: str, to_version: int = 1) -> Step:
        """Events of ``(type, version)`` become ``(to, to_version)`` with the payload unchanged."""
        return self.add_step(
            (type, version), [(to, to_version)], _identity, name=f"rename {type} v{version} -> {to} v{to_version}",
            declared=Declared(),
        )

    def fields(
        self,
        type: str,
        version: int,
        *,
        rename: Mapping[str, str] | None = None,
        convert: Mapping[str, Callable[[Any], Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        to_version: int | None = None,
    ) -> Step:
        """A dict step ``v -> v+1`` that renames, converts, defaults and removes fields.

        Applied in that order: ``convert`` sees the new names. A default only
        fills a field that is absent; a converter is not applied to a missing field.
        """
        renames, converters = dict(rename or {}), dict(convert or {})
        fills, removed = dict(defaults or {}), tuple(remove)

        def evolve_fields(data: dict[str, Any]) -> dict[str, Any]:
            out = {renames.get(k, k): v for k, v in data.items() if k not in removed}
            for key, fn in converters.items():
                if key in out:
                    out[key] = fn(out[key])
            for key, value in fills.items():
                if key not in out:
                    out[key] = value
            return out

        target = (type, to_version if to_version is not None else version + 1)
        says = Declared(renames, converters, fills, frozenset(removed))  # what it does is what it declares
        return self.add_step(
            (type, version), [target], evolve_fields, name=f"fields {type} v{version} -> v{target[1]}", declared=says
        )

    def split(
        self,
        type: str,
        version: int,
        into: Sequence[Node],
        fn: Callable[..., Iterable[Emitted]],
        *,
        name: str | None = None,
        **declarations: Any,
    ) -> Step:
        """One event of ``(type, version)`` becomes several, of the declared ``into`` schemas, in that order.

        Each target is emitted exactly once unless declared ``optional=[...]`` or
        ``repeated=[...]``; ``declarations`` are those of :meth:`declare`.
        """
        takes_context = len(inspect.signature(fn).parameters) == 2
        return self.add_step(
            (type, version), into, fn, name=name or f"split {type} v{version}", takes_context=takes_context,
            declared=_declared(declarations),
        )

    def drop(self, type: str, version: int) -> Step:
        """Events of ``(type, version)`` are not carried into the new epoch."""
        return self.add_step((type, version), [], _drop, name=f"drop {type} v{version}", declared=Declared())

    # ------------------------------------------------ what the output should be
    def declare(self, type: str, version: int, **declarations: Any) -> Step:
        """Say what the step from ``(type, version)`` does, for ``eventmig check``'s laws.

        ``rename={"old": "new"}``, ``convert={"field": rule}`` (a callable of the
        value it comes from, or words), ``defaults={"field": value}`` (filled when
        absent), ``remove=["field"]``, and for splits ``optional=[(T, v)]`` and
        ``repeated=[(T, v)]``. Added to what the step declared already.
        """
        node = (type, version)
        step = self._steps.get(node)
        if step is None:
            raise RegistryError(f"declare: there is no upcaster from {_format_node(node)} (register it first)")
        self._steps[node] = dataclasses.replace(step, declared=step.declared.merged(_declared(declarations)))
        return self._steps[node]

    def example(self, given: Any, becomes: Any, *, name: str | None = None,
                metadata: Mapping[str, Any] | None = None) -> Example:
        """An event at an old version and the head events it must become; ``eventmig check`` runs it.

        ``given`` is a schema Struct instance or ``(type, version, data)``;
        ``becomes`` is one such output, a list of them in order, or ``[]``
        for an event that is dropped.
        """
        t, v, data = as_event(given, self._nodes_of_struct, "given")
        outputs = becomes if isinstance(becomes, list) else [becomes]
        expected = tuple(as_event(out, self._nodes_of_struct, "becomes") for out in outputs)
        frame = sys._getframe(1)
        origin = f"{source_path(frame.f_code.co_filename)}:{frame.f_lineno}"
        count = sum(1 for e in self._examples if e.node == (t, v))
        label = name or f"{t} v{v} #{count + 1}"
        example = Example(t, v, data, expected, label, origin, dict(metadata or {}))
        self._examples.append(example)
        return example

    # ---------------------------------------------------------------- queries
    @property
    def steps(self) -> Mapping[Node, Step]:
        return self._steps

    @property
    def schemas(self) -> Mapping[Node, type]:
        return self._schemas

    @property
    def examples(self) -> Sequence[Example]:
        """The examples registered with :meth:`example`, in order."""
        return self._examples

    def schema_of(self, node: Node) -> type | None:
        return self._schemas.get(node)

    def compile(self) -> CompiledRegistry:
        """Validate the graph and build the chains; cached until the next registration."""
        if self._compiled is None:
            self._compiled = CompiledRegistry(self)
        return self._compiled

    def fingerprint(self) -> str:
        """A hash of the steps, their code and configuration: a resumed run refuses if it changed."""
        h = hashlib.blake2b(digest_size=12)
        for node in sorted(self._steps):
            step = self._steps[node]
            h.update(repr((node, step.targets, step.name)).encode())
            h.update(_code_fingerprint(step.fn).encode())
        for node in sorted(self._schemas):
            cls = self._schemas[node]
            h.update(repr((node, cls.__qualname__, cls.__struct_fields__)).encode())
        return h.hexdigest()


class CompiledRegistry:
    """Validated chains: one callable per stored ``(type, version)`` that yields head events."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.version_location = registry.version_location
        steps = registry.steps
        self._known_types = {t for t, _ in steps} | {t for t, _ in registry.schemas} | {
            t for s in steps.values() for t, _ in s.targets
        }
        problems = _validate(registry)
        if problems:
            raise RegistryError("invalid upcaster registry: " + "; ".join(problems))
        self.heads: dict[str, int] = {}
        for t, v in _all_nodes(registry):
            if (t, v) not in steps:
                self.heads[t] = max(self.heads.get(t, 0), v)
        self._decoders = {
            cls: msgspec.json.Decoder(cls) for cls in {s.input_type for s in steps.values()} if cls
        }
        self._head_decoders = {
            (t, v): msgspec.json.Decoder(registry.schemas[(t, v)]).decode
            for t, v in self.heads.items()
            if (t, v) in registry.schemas
        }
        #: heads whose schema holds msgspec.Raw: encoding copies its bytes, key order and all,
        #: so canonical bytes of them need a decode and a sorted re-encode
        self._raw_heads = frozenset(n for n in self._head_decoders if _holds(registry.schemas[n], _RAW))
        #: heads whose schema holds sets: a set's order in the fast encoding is its iteration order,
        #: which no reader can canonicalise once it is a JSON array, so they are always written sorted
        self._set_heads = frozenset(n for n in self._head_decoders if _holds(registry.schemas[n], _SETS))
        #: whether any step reads the event's context, so callers build it only when needed
        self.needs_context = any(s.takes_context for s in steps.values())
        self._chains: dict[Node, Chain] = {}
        for node in steps:
            self._chain(node)
        # per stored node with a step: how its payload is decoded, and its chain
        self._entries: dict[Node, tuple[Callable[[bytes], Any], Chain]] = {
            node: (self._decoders[step.input_type].decode if step.input_type else _json_decode, self._chains[node])
            for node, step in steps.items()
        }

    # ------------------------------------------------------------------ info
    def knows(self, type: str) -> bool:
        return type in self._known_types

    def is_head(self, node: Node) -> bool:
        return self.heads.get(node[0]) == node[1]

    def has_path(self, node: Node) -> bool:
        """Whether a stored event of ``node`` can be brought to a head (or is one)."""
        return node in self._chains or self.is_head(node) or not self.knows(node[0])

    def paths(self, node: Node) -> list[list[Node]]:
        """Every route from ``node`` to a head (several when a split fans out)."""
        step = self.registry.steps.get(node)
        if step is None:
            return [[node]]
        if not step.targets:
            return [[node, ("(dropped)", 0)]]
        return [[node, *rest] for target in step.targets for rest in self.paths(target)]

    def why_no_path(self, node: Node) -> str:
        t, v = node
        head = self.heads.get(t)
        if head is None:
            return f"{t} v{v} has no upcaster and {t} has no head schema"
        if v > head:
            return f"{t} v{v} is newer than the head schema {t} v{head}"
        return f"{t} v{v} has no upcaster and is not the head (v{head})"

    # --------------------------------------------------------------- running
    def apply_step(self, node: Node, data: bytes, context: EventContext | None = None) -> list[tuple[Node, Any]]:
        """Run only the step out of ``node`` on a stored payload: its outputs, not yet upcast further.

        For tests that compare a chain with its steps one at a time; applies
        the same decoding and output rules as the compiled chain.
        """
        step = self.registry.steps[node]
        decode = self._decoders[step.input_type].decode if step.input_type else _json_decode
        payload = decode(data)
        result = step.fn(payload, context) if step.takes_context else step.fn(payload)
        single = step.targets[0] if len(step.targets) == 1 else None
        return list(_outputs(result, single, self.registry._nodes_of_struct, step.name))

    def upcast_payloads(
        self, type: str, version: int, data: bytes, context: EventContext | None = None
    ) -> list[Chained]:
        """Bring one stored payload to its head schema(s) as objects: ``(type, version, payload, path)``.

        For consumers that use events rather than store them (projection
        rebuilds): payloads are what the steps returned, Structs or builtins,
        neither encoded nor validated against the head schemas as
        :meth:`upcast` does for what it writes. A dropped event gives an
        empty list. Raises :class:`UpcastError` like :meth:`upcast`.
        """
        try:
            node = (type, version)
            entry = self._entries.get(node)
            if entry is None:
                try:
                    if not self.knows(type):
                        return [(type, version, _json_decode(data), ())]
                    if not self.is_head(node):
                        raise UpcastError(self.why_no_path(node))
                    decode = self._head_decoders.get(node, _json_decode)
                    return [(type, version, decode(data), ())]
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    raise UpcastError(f"{_format_node(node)} payload does not decode: {exc}") from None
            decode, chain = entry
            try:
                payload = decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise UpcastError(f"{_format_node(node)} payload does not decode: {exc}") from None
            return chain(payload, context)
        except RecursionError:  # the stored payload, not a step: steps' errors are UpcastErrors by now
            raise UpcastError(f"{_format_node((type, version))} {too_deep('payload', data)}") from None

    def upcast(
        self, type: str, version: int, data: bytes, context: EventContext | None = None, *, canonical: bool = True
    ) -> Outcome:
        """Bring one stored payload to its head schema(s).

        Output payloads are canonical JSON (sorted keys), or, with
        ``canonical=False``, msgspec's faster field-order encoding, for
        writers whose output is canonicalised again wherever it is compared.
        Raises :class:`UpcastError` with a readable reason if the payload does
        not decode (a payload nested too deeply to decode included), a step
        fails or an output does not match its head schema.
        """
        try:
            node = (type, version)
            entry = self._entries.get(node)
            if entry is None:
                if not self.knows(type):
                    return Outcome("unknown", [(type, version, _canonical(data, node), ())])
                if not self.is_head(node):
                    raise UpcastError(self.why_no_path(node))
                payload = _canonical(data, node)
                self._validate_head(node, payload, ())
                return Outcome("head", [(type, version, payload, ())])
            encode = _encode if canonical else _encode_fast
            raw_heads = self._raw_heads if canonical else _NONE
            set_heads = _NONE if canonical else self._set_heads
            decode, chain = entry
            try:
                payload = decode(data)
            except msgspec.ValidationError as exc:
                input_type = self.registry.steps[node].input_type
                raise UpcastError(f"{_format_node(node)} payload does not match {input_type.__qualname__}: {exc}") from None
            except msgspec.DecodeError as exc:
                raise UpcastError(f"{_format_node(node)} payload is not valid JSON: {exc}") from None
            out = []
            head_decoders = self._head_decoders
            for t, v, obj, path in chain(payload, context):
                try:
                    encoded = _encode(obj) if set_heads and (t, v) in set_heads else encode(obj)
                except (TypeError, msgspec.EncodeError) as exc:
                    raise UpcastError(f"output of {' -> '.join(path)} cannot be encoded: {exc}") from None
                if raw_heads and (t, v) in raw_heads:
                    encoded = canonical_json(_json_decode(encoded))
                decoder = head_decoders.get((t, v))
                if decoder is not None:
                    try:
                        decoder(encoded)
                    except msgspec.ValidationError as exc:
                        raise UpcastError(
                            f"{_format_node((t, v))} payload does not match its head schema (after {' -> '.join(path)}): {exc}"
                        ) from None
                out.append((t, v, encoded, path))
            return Outcome("upcast" if out else "dropped", out)
        except RecursionError:  # decoding or encoding the payload: a step's own errors are UpcastErrors by now
            raise UpcastError(f"{_format_node((type, version))} {too_deep('payload', data)}") from None

    def _validate_head(self, node: Node, encoded: bytes, path: tuple[str, ...]) -> None:
        decoder = self._head_decoders.get(node)
        if decoder is None:
            return
        try:
            decoder(encoded)
        except msgspec.ValidationError as exc:
            via = f" (after {' -> '.join(path)})" if path else ""
            raise UpcastError(f"{_format_node(node)} payload does not match its head schema{via}: {exc}") from None

    def _chain(self, node: Node) -> Chain:
        """The function running the steps from ``node`` to the heads, built once.

        It passes payload objects from step to step (no JSON in between) and
        returns ``(type, version, payload, path)`` tuples. The common case, a
        step returning the one Struct or dict it declares, takes a short path.
        """
        if node in self._chains:
            return self._chains[node]
        step = self.registry.steps[node]
        targets = set(step.targets)
        single_target = step.targets[0] if len(step.targets) == 1 else None
        nodes_of_struct = self.registry._nodes_of_struct
        next_chains: dict[Node, Chain | None] = {
            t: (self._chain(t) if t in self.registry.steps else None) for t in step.targets
        }
        next_input = {t: self.registry.steps[t].input_type for t in step.targets if t in self.registry.steps}
        fn, name, takes_context, input_type = step.fn, step.name, step.takes_context, step.input_type
        path = (name,)
        # the short path: what a single-target step returns when it does the obvious thing
        fast_struct = self.registry.schemas.get(single_target) if single_target else None
        # per target with a schema: the fields a dict returned for it may have
        declared = {t: declared_fields(self.registry.schemas[t]) for t in step.targets if t in self.registry.schemas}
        fast_fields = declared.get(single_target) if single_target else None
        fast_next = next_chains.get(single_target) if single_target else None
        fast_ok = single_target is not None and (fast_next is None or next_input.get(single_target) is None)

        def run(payload: Any, context: EventContext | None) -> list[Chained]:
            if input_type is not None:
                if payload.__class__ is not input_type:
                    payload = _convert(payload, input_type, node, name)
            elif isinstance(payload, msgspec.Struct):
                payload = msgspec.to_builtins(payload)
            try:
                result = fn(payload, context) if takes_context else fn(payload)
            except UpcastError:
                raise
            except Exception as exc:  # a failing step quarantines its event, it must not stop the run
                raise UpcastError(f"upcaster {name} failed on {_format_node(node)}: {type(exc).__name__}: {exc}") from exc
            cls = result.__class__
            if fast_ok and (cls is dict or cls is fast_struct):
                if cls is dict and fast_fields is not None and not result.keys() <= fast_fields:
                    raise undeclared(name, single_target, result, fast_fields)  # type: ignore[arg-type]
                if fast_next is None:
                    return [(single_target[0], single_target[1], result, path)]
                return [(t, v, obj, (name, *rest)) for t, v, obj, rest in fast_next(result, context)]
            out: list[Chained] = []
            for target, obj in _outputs(result, single_target, nodes_of_struct, name):
                if target not in targets:
                    raise UpcastError(
                        f"upcaster {name} produced {_format_node(target)}, which it does not declare "
                        f"(declared: {', '.join(map(_format_node, step.targets)) or 'none'})"
                    )
                fields = declared.get(target)
                if fields is not None and obj.__class__ is dict and not obj.keys() <= fields:
                    raise undeclared(name, target, obj, fields)
                chain = next_chains[target]
                if chain is None:
                    out.append((target[0], target[1], obj, path))
                    continue
                want = next_input[target]
                if want is not None and obj.__class__ is not want:
                    obj = _convert(obj, want, target, name)
                for t, v, o, rest in chain(obj, context):
                    out.append((t, v, o, (name, *rest)))
            return out

        self._chains[node] = run
        return run


# -------------------------------------------------------------------- helpers
def _code_fingerprint(obj: Any, depth: int = 0) -> str:
    """A description of a step that is stable across processes (no memory addresses).

    Covers the function's bytecode, its constants and the values it closes
    over, so that ``fields(..., defaults={"y": 1})`` and ``{"y": 2}`` differ.
    """
    if depth > 6:
        return "..."
    if isinstance(obj, types.CodeType):
        consts = ",".join(_code_fingerprint(c, depth + 1) for c in obj.co_consts)
        return f"code({obj.co_code.hex()};{consts};{obj.co_names})"
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        fn = getattr(obj, "__func__", obj)
        cells = ",".join(_code_fingerprint(c.cell_contents, depth + 1) for c in (fn.__closure__ or ()) if _has_contents(c))
        return f"fn({fn.__qualname__};{_code_fingerprint(fn.__code__, depth + 1)};{cells})"
    if isinstance(obj, dict):
        items = sorted((repr(k), _code_fingerprint(v, depth + 1)) for k, v in obj.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(obj, (list, tuple, set, frozenset)):
        parts = [_code_fingerprint(v, depth + 1) for v in obj]
        return f"{type(obj).__name__}(" + ",".join(sorted(parts) if isinstance(obj, (set, frozenset)) else parts) + ")"
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return repr(obj)
    if isinstance(obj, type):
        return f"type({obj.__module__}.{obj.__qualname__})"
    text = repr(obj)
    return type(obj).__qualname__ if " at 0x" in text else text


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _identity(data: Any) -> Any:
    return data


def is_rename(step: Step) -> bool:
    """Whether ``step`` is a :meth:`Registry.rename_type`: its payload passes unchanged."""
    return step.fn is _identity


_NoneType = type(None)


def _top_level(annotation: Any) -> list[Any]:
    """The members of a top-level union (``A | None``), or the annotation itself."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _declared(declarations: Mapping[str, Any]) -> Declared:
    try:
        return declared(**declarations)
    except TypeError as exc:
        raise RegistryError(
            f"unknown declaration: {exc}; a step declares rename, convert, defaults, remove, optional, repeated"
        ) from None


def _drop(data: Any) -> None:
    return None


def _check_version(version: Any, type: str) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RegistryError(f"schema version of {type} must be an int >= 1, got {version!r}")
    return version


def _type_hints(fn: Callable[..., Any], name: str, schemas: dict[str, type]) -> dict[str, Any]:
    """Resolve annotations, also by the names of registered schemas.

    With ``from __future__ import annotations``, Structs defined inside a
    function (tests, factories) are not in the step's globals; they are
    registered schemas, so their names resolve them.
    """
    try:
        return typing.get_type_hints(fn, localns=schemas)
    except NameError as exc:
        raise RegistryError(
            f"upcaster {name}: cannot resolve its annotations ({exc}); annotate it with registered "
            "schema Structs, or pass the source and to=... explicitly"
        ) from None


def _leaf_types(annotation: Any) -> list[Any]:
    """Struct classes named by a return annotation: ``A``, ``A | None``, ``list[A | B]``..."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaf_types(arg)]
    if origin is not None:
        return [leaf for arg in typing.get_args(annotation) if arg is not Ellipsis for leaf in _leaf_types(arg)]
    if annotation is None:
        return [type(None)]
    return [annotation]


def _outputs(
    result: Any, single_target: Node | None, nodes_of_struct: Mapping[type, Node], name: str
) -> Iterable[tuple[Node, Any]]:
    if result is None:
        return ()
    if isinstance(result, (list, tuple)) and not isinstance(result, msgspec.Struct):
        return [o for item in result for o in _outputs(item, single_target, nodes_of_struct, name)]
    if isinstance(result, Emitted):
        return [((result.type, result.version), result.data)]
    if isinstance(result, msgspec.Struct):
        node = nodes_of_struct.get(type(result))
        if node is None:
            if single_target is None:
                raise UpcastError(f"upcaster {name} returned an unregistered {type(result).__qualname__}")
            node = single_target
        return [(node, result)]
    if isinstance(result, dict):
        if single_target is None:
            raise UpcastError(f"upcaster {name} returned a dict but declares several outputs: use emit()")
        return [(single_target, result)]
    raise UpcastError(f"upcaster {name} returned {type(result).__name__}; expected a Struct, dict, emit(...), list or None")


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
        f"upcaster {name} returned {_format_node(target)} with field(s) {', '.join(map(repr, extra))} "
        f"that its schema does not declare{why}"
    )


def _convert(obj: Any, cls: type, node: Node, name: str) -> Any:
    try:
        builtins = msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else obj
        return msgspec.convert(builtins, cls)
    except msgspec.ValidationError as exc:
        raise UpcastError(f"{_format_node(node)} from {name} does not match {cls.__qualname__}: {exc}") from None


_NONE: frozenset[Node] = frozenset()
_RAW = (mi.RawType,)
_SETS = (mi.SetType, mi.FrozenSetType)


def _holds(schema: type, kinds: tuple[type[mi.Type], ...]) -> bool:
    """Whether values of ``schema`` can hold a value of one of these msgspec type kinds anywhere inside."""
    seen: set[int] = set()

    def walk(node: Any) -> bool:
        if isinstance(node, kinds):
            return True
        if isinstance(node, (list, tuple)):
            return any(walk(n) for n in node)
        if isinstance(node, mi.Field):
            return walk(node.type)
        if not isinstance(node, mi.Type) or id(node) in seen:
            return False
        seen.add(id(node))
        return any(walk(getattr(node, f)) for f in node.__struct_fields__)

    return walk(mi.type_info(schema))


def _canonical(data: bytes, node: Node) -> bytes:
    try:
        return canonical_json(_json_decode(data))
    except msgspec.DecodeError as exc:
        raise UpcastError(f"{_format_node(node)} payload is not valid JSON: {exc}") from None


def _all_nodes(registry: Registry) -> set[Node]:
    nodes = set(registry.schemas) | set(registry.steps)
    for step in registry.steps.values():
        nodes.update(step.targets)
    return nodes


def _validate(registry: Registry) -> list[str]:
    """Every problem with the graph, so one run of ``eventmig plan`` shows them all."""
    problems: list[str] = []
    steps = registry.steps
    nodes = _all_nodes(registry)
    versions: dict[str, set[int]] = {}
    for t, v in nodes:
        versions.setdefault(t, set()).add(v)
    renamed_into = {t for s in steps.values() for t, _ in s.targets if t != s.source[0]}

    for t in sorted(versions):
        known = versions[t]
        head = max(known)
        low = min(known) if t in renamed_into else 1
        missing = [v for v in range(low, head) if v not in known]
        if missing:
            problems.append(
                f"version gap in {t}: " + ", ".join(f"v{v}" for v in missing) + f" missing below v{head}"
            )
        for v in sorted(known):
            if (t, v) not in steps and v != head:
                problems.append(f"{t} v{v} has no upcaster and is not the head (v{head})")

    for step in steps.values():
        for target in step.targets:
            if target == step.source or (target[0] == step.source[0] and target[1] < step.source[1]):
                problems.append(
                    f"upcaster {step.name} goes from {_format_node(step.source)} back to {_format_node(target)}"
                )

    for cycle in _cycles(steps):
        problems.append("cycle: " + " -> ".join(map(_format_node, cycle)))
    return problems


def _cycles(steps: Mapping[Node, Step]) -> list[list[Node]]:
    """Find cycles by depth-first search (each reported once, from its smallest node)."""
    found: list[list[Node]] = []
    seen: set[tuple[Node, ...]] = set()
    state: dict[Node, int] = {}  # 1: on the current path, 2: finished

    def visit(node: Node, path: list[Node]) -> None:
        state[node] = 1
        path.append(node)
        step = steps.get(node)
        for target in step.targets if step else ():
            if state.get(target) == 1:
                cycle = path[path.index(target):]
                start = cycle.index(min(cycle))
                key = tuple(cycle[start:] + cycle[:start])
                if key not in seen:
                    seen.add(key)
                    found.append([*key, key[0]])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[node] = 2

    for node in sorted(steps):
        if node not in state:
            visit(node, [])
    return found
