"""How a binding turns a stored payload into head events with the least work: chains compiled to plain calls.

Most events in a rebuild take the same few chains; compiling each chain once
into nested closures (decode, step, step, head Struct) skips the registry's
general machinery per event. Anything less plain than a declared Struct or a
dict falls back to the general path, marked by :data:`~eventmig.projection.sentinels.SLOW`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from eventmig.errors import UpcastError
from eventmig.model.chains import run_step
from eventmig.model.steps import declared_fields, undeclared
from eventmig.projection.sentinels import SLOW

if TYPE_CHECKING:
    from eventmig.model.chains import CompiledRegistry
    from eventmig.projection.binding import Route

_json_decode = msgspec.json.Decoder().decode

#: what a continuation gives for one step target: (head type or None, the continuation, target is a head Struct)
Continued = tuple[str | None, Callable[[Any], Any], bool]


class FastPaths:
    """The chains of a :class:`~eventmig.projection.binding.Binding`, compiled for speed; it mixes this in."""

    compiled: CompiledRegistry
    routes: dict[str, Route]

    # ------------------------------------------------------- fast decoding
    def fast_path(
        self, type_name: str, version: int
    ) -> tuple[str | None, Callable[[bytes], Any], Callable[[Any], Any] | None] | None:
        """How a stored payload of ``(type, version)`` becomes head events with the least work.

        Returns ``(head type, decode, then)``: ``decode`` reads the stored
        bytes (into the head Struct for a head event, into the first step's
        input type otherwise) and ``then`` (None for a head event) runs the
        chain's steps one after another, without the registry's general
        machinery. When every step on the way has one output, ``then`` gives
        the head event of ``head type``; with a split, ``head type`` is None
        and ``then`` gives a list of ``(head type, event)``. Either returns
        :data:`SLOW` when a step returns anything less plain than its declared
        Struct or a dict: :meth:`general_path` then does what the registry's
        chains do. None when a step takes the event's context (or there is no
        chain): the general path it is, for every event.
        """
        compiled = self.compiled
        node = (type_name, version)
        if not compiled.knows(type_name) or compiled.is_head(node):
            route = self.routes.get(type_name)
            if route is None:
                return None
            return type_name, route.decode, None
        step = compiled.registry.steps.get(node)
        if step is None:
            return None
        plain = self._plain_step(node, ())
        if plain is None:
            return None
        out_type, then = plain
        decode = msgspec.json.Decoder(step.input_type).decode if step.input_type is not None else _json_decode
        return out_type, decode, then

    def single_step(self, type_name: str, version: int) -> tuple[Callable[[bytes], Any], Callable[[Any], Any], type, str] | None:
        """``(decode, step, head Struct, step name)`` when ``(type, version)`` is one typed step from its head.

        The commonest chain (a rename, a unit conversion): callers fuse it with
        what follows. A step returning anything but the head Struct needs
        :meth:`general_path`.
        """
        registry = self.compiled.registry
        step = registry.steps.get((type_name, version))
        if step is None or step.takes_context or step.input_type is None or len(step.targets) != 1:
            return None
        target = step.targets[0]
        head = registry.schema_of(target)
        if head is None or target in registry.steps or not self.compiled.is_head(target):
            return None
        return msgspec.json.Decoder(step.input_type).decode, step.fn, head, step.name

    def _plain_step(self, node: tuple[str, int], path: tuple[str, ...]) -> tuple[str | None, Callable[[Any], Any]] | None:
        """The steps from ``node`` on, for a payload already in its step's input form."""
        registry = self.compiled.registry
        step = registry.steps.get(node)
        if step is None or step.takes_context:
            return None
        path = (*path, step.name)
        if not step.targets:

            def dropped(payload: Any) -> Any:
                result = run_step(step, payload)
                return [] if result is None else SLOW

            return None, dropped
        continued = []
        for target in step.targets:
            found = self._continue(target, path)
            if found is None:
                return None
            continued.append((target, *found))
        if len(continued) == 1:
            target, out_type, cont, direct = continued[0]
            return out_type, _one_target(step, registry.schemas.get(target), cont, direct)
        split = _split_targets(step, registry.schemas, continued)
        return None if split is None else (None, split)

    def _continue(
        self, target: tuple[str, int], path: tuple[str, ...]
    ) -> Continued | None:
        """What becomes of a step's output for ``target``: ``(head type or None, cont, target is a head Struct)``."""
        compiled = self.compiled
        steps = compiled.registry.steps
        schema = compiled.registry.schema_of(target)
        fields = declared_fields(schema) if schema is not None else None  # what a dict for the target may hold
        made_by = path[-1] if path else ""
        if target in steps:
            rest = self._plain_step(target, path)
            if rest is None:
                return None
            out_type, then = rest
            want = steps[target].input_type
            if want is not None:

                def typed(obj: Any) -> Any:
                    return then(obj) if obj.__class__ is want else SLOW

                return out_type, typed, False

            def untyped(obj: Any) -> Any:
                if obj.__class__ is dict:
                    if fields is not None and not obj.keys() <= fields:
                        raise undeclared(made_by, target, obj, fields)
                    return then(obj)
                return then(msgspec.to_builtins(obj)) if isinstance(obj, msgspec.Struct) else SLOW

            return out_type, untyped, False
        if not compiled.is_head(target):
            return None
        type_name = target[0]
        struct = compiled.registry.schema_of(target)
        if struct is None:

            def schemaless(obj: Any) -> Any:
                return msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else obj

            return type_name, schemaless, False
        via = " -> ".join(path)

        def head(obj: Any) -> Any:
            if obj.__class__ is struct:
                return obj
            if obj.__class__ is not dict:
                return SLOW
            if not obj.keys() <= fields:  # type: ignore[operator]
                raise undeclared(made_by, target, obj, fields)  # type: ignore[arg-type]
            try:
                return msgspec.convert(obj, struct)
            except msgspec.ValidationError as exc:
                raise UpcastError(f"{type_name} payload does not match its head schema (after {via}): {exc}") from None

        return type_name, head, True


def _one_target(step: Any, declared: Any, cont: Callable[[Any], Any], direct: bool) -> Callable[[Any], Any]:
    """A step with one output: its result goes on to ``cont``, or is done when it is already the head Struct."""
    if direct:  # the target is a head Struct: a step returning it is done
        head_struct = declared

        def single_head(payload: Any) -> Any:
            result = run_step(step, payload)
            if result.__class__ is head_struct:
                return result
            return cont(result) if result.__class__ is dict else SLOW

        return single_head

    def single(payload: Any) -> Any:
        result = run_step(step, payload)
        cls = result.__class__
        return cont(result) if cls is declared or cls is dict else SLOW

    return single


def _split_targets(
    step: Any, schemas: dict[Any, Any], continued: list[tuple[Any, str | None, Callable[[Any], Any], bool]]
) -> Callable[[Any], Any] | None:
    """A step with several outputs, told apart by their class: each item goes on through its own target's chain."""
    by_class: dict[Any, tuple[str | None, Callable[[Any], Any]]] = {}
    for target, out_type, cont, _direct in continued:
        declared = schemas.get(target)
        if declared is None or declared in by_class:
            return None  # outputs told apart by their class only
        by_class[declared] = (out_type, cont)

    def split(payload: Any) -> Any:
        result = run_step(step, payload)
        if result.__class__ is not list:
            return SLOW
        out: list[tuple[str, Any]] = []
        for item in result:
            found = by_class.get(item.__class__)
            if found is None:
                return SLOW
            out_type, cont = found
            event = cont(item)
            if event is SLOW:
                return SLOW
            if out_type is None:
                out.extend(event)
            else:
                out.append((out_type, event))
        return out

    return split
