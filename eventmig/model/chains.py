"""Compiled chains: one function per stored ``(type, version)`` that runs every step to the heads.

:func:`step_failed` words every failing step: :func:`run_step` (which
:meth:`CompiledRegistry.apply_step` and the projections' fast path call)
and the chains here, which inline it because they run once per event and
step, so a failing step reads the same wherever it fails. A chain
decodes the payload once, passes objects from step to step (no JSON in
between) and encodes once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi

from eventmig.errors import RegistryError, UpcastError
from eventmig.model.nesting import too_deep
from eventmig.model.plans import UpcastPlans
from eventmig.model.steps import Chain, Chained, Emitted, EventContext, Node, Step, declared_fields, format_node, undeclared
from eventmig.model.validation import all_nodes, validate

if TYPE_CHECKING:
    from eventmig.model.registry import Registry

_json_decode = msgspec.json.Decoder().decode


class Outcome(msgspec.Struct, gc=False):
    """The result of upcasting one stored event. ``kind`` tells the report how it was treated.

    ``events`` holds ``(type, version, canonical JSON bytes, step names)`` per output.
    """

    kind: str  # "upcast" | "head" | "unknown" | "dropped"
    events: list[tuple[str, int, bytes, tuple[str, ...]]]


def run_step(step: Step, payload: Any, context: EventContext | None = None) -> Any:
    """Call one step on one payload; what it raises becomes an :class:`UpcastError` naming it.

    A failing step quarantines its event: it must not stop a run, and the
    report says which step failed on which schema.
    """
    try:
        return step.fn(payload, context) if step.takes_context else step.fn(payload)
    except UpcastError:
        raise
    except Exception as exc:
        raise step_failed(step, exc) from exc


def step_failed(step: Step, exc: Exception) -> UpcastError:
    """The error of a step that raised ``exc``."""
    return UpcastError(f"upcaster {step.name} failed on {format_node(step.source)}: {type(exc).__name__}: {exc}")


class CompiledRegistry:
    """Validated chains: one callable per stored ``(type, version)`` that yields head events."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.version_location = registry.version_location
        steps = registry.steps
        self._known_types = {t for t, _ in steps} | {t for t, _ in registry.schemas} | {
            t for s in steps.values() for t, _ in s.targets
        }
        problems = validate(steps, registry.schemas)
        if problems:
            raise RegistryError("invalid upcaster registry: " + "; ".join(problems))
        self.heads: dict[str, int] = {}
        for t, v in all_nodes(steps, registry.schemas):
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
        #: per stored node, the upcast worked out once (see :mod:`eventmig.model.plans`)
        self.plans = UpcastPlans(self)

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
        result = run_step(step, payload, context)
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
                    raise UpcastError(f"{format_node(node)} payload does not decode: {exc}") from None
            decode, chain = entry
            try:
                payload = decode(data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise UpcastError(f"{format_node(node)} payload does not decode: {exc}") from None
            return chain(payload, context)
        except RecursionError:  # the stored payload, not a step: steps' errors are UpcastErrors by now
            raise UpcastError(f"{format_node((type, version))} {too_deep('payload', data)}") from None

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
        kind, plan = self.plans.plan(type, version, canonical)
        out = plan(data, context)
        return Outcome(kind if out or kind != "upcast" else "dropped", out)

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
        name, input_type = step.name, step.input_type
        fn, takes_context = step.fn, step.takes_context
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
            try:  # run_step, inlined: this is once per event and step
                result = fn(payload, context) if takes_context else fn(payload)
            except UpcastError:
                raise
            except Exception as exc:
                raise step_failed(step, exc) from exc
            cls = result.__class__
            if fast_ok and (cls is dict or cls is fast_struct):
                if cls is dict and fast_fields is not None and not result.keys() <= fast_fields:
                    raise undeclared(name, single_target, result, fast_fields)  # type: ignore[arg-type]
                if fast_next is None:
                    return [(single_target[0], single_target[1], result, path)]
                return [(t, v, obj, (name, *rest)) for t, v, obj, rest in fast_next(result, context)]
            return _route_outputs(result, step, targets, single_target, nodes_of_struct, declared, next_chains,
                                  next_input, context, path)

        self._chains[node] = run
        return run


def _route_outputs(
    result: Any, step: Any, targets: set[Node], single_target: Node | None, nodes_of_struct: Any,
    declared: dict[Node, Any], next_chains: dict[Node, Chain | None], next_input: dict[Node, Any],
    context: EventContext | None, path: tuple[str, ...],
) -> list[Chained]:
    """The general path of a chain's step: each output checked against what the step declares, then run down
    its target's chain (converted to that chain's input type first)."""
    name = step.name
    out: list[Chained] = []
    for target, obj in _outputs(result, single_target, nodes_of_struct, name):
        if target not in targets:
            raise UpcastError(
                f"upcaster {name} produced {format_node(target)}, which it does not declare "
                f"(declared: {', '.join(map(format_node, step.targets)) or 'none'})"
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


# -------------------------------------------------------------------- helpers
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


def _convert(obj: Any, cls: type, node: Node, name: str) -> Any:
    try:
        builtins = msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else obj
        return msgspec.convert(builtins, cls)
    except msgspec.ValidationError as exc:
        raise UpcastError(f"{format_node(node)} from {name} does not match {cls.__qualname__}: {exc}") from None


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
