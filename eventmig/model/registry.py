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
from typing import Any, Union

import msgspec

from eventmig.errors import RegistryError
from eventmig.model.chains import CompiledRegistry
from eventmig.model.declared import Declared, Example, as_event, declared, source_path
from eventmig.model.events import MetadataKey, VersionLocation
from eventmig.model.events import version_location as parse_version_location
from eventmig.model.steps import Emitted, EventContext, Node, Step, emit, format_node

__all__ = ["EventContext", "Node", "Registry", "Step", "emit", "is_rename"]


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
                raise RegistryError(f"schema {format_node(node)} must be a msgspec.Struct, got {cls!r}")
            if node in self._schemas and self._schemas[node] is not cls:
                raise RegistryError(
                    f"two schemas for {format_node(node)}: "
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
                f"two upcasters from {format_node(source)}: {self._steps[source].name} and {name}"
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
            raise RegistryError(f"declare: there is no upcaster from {format_node(node)} (register it first)")
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
