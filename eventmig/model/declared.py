"""What a step says it does, and examples of what it must produce: the "should" of an upcaster.

A property check can tell that a step runs and yields valid heads, but not
that 12.29 euros became 1229 cents rather than 1228: for that it needs to be
told what the output should be. Two ways, usable together:

* **declarations** (:class:`Declared`): which fields a step renames,
  converts (with the rule), fills with a default or removes, and which of a
  split's targets are optional or repeated. ``fields()``, ``rename_type()``
  and ``drop()`` declare themselves; a typed or dict step declares with
  keywords of ``@registry.upcaster(...)``, ``registry.split(...)`` or
  ``registry.declare(...)``. ``eventmig check`` derives laws from the schemas
  and these declarations (every other field arrives unchanged...).
* **examples** (:class:`Example`): an event at an old version together with
  the head events it must become, registered with ``registry.example(...)``
  or kept in a file of cases.

Neither changes what a step does: they are read by the checks only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

Node = tuple[str, int]

#: a declared conversion: a callable (the rule, checked on every generated event) or
#: words saying what changes (accepted as a declaration, not checked)
Rule = Callable[[Any], Any] | str


@dataclass(frozen=True)
class Declared:
    """The changes a step declares to the fields it reads and the events it emits.

    Field names are the JSON keys of the payloads. ``convert`` is keyed by
    the field's new name, like ``fields()``: its rule is called with the
    value of the field it comes from (itself, or the old name ``rename``
    maps to it), in the form the step sees it (a typed step: the attribute;
    a dict step: the JSON value), or with the whole input payload when the
    field comes from no single field.
    """

    rename: Mapping[str, str] = field(default_factory=dict)
    convert: Mapping[str, Rule] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()
    #: targets a split may leave out (zero or one of them)
    optional: frozenset[Node] = frozenset()
    #: targets a split may emit more than once, one after another
    repeated: frozenset[Node] = frozenset()

    def merged(self, other: Declared) -> Declared:
        """These declarations and ``other``'s (``other`` wins where both name a field)."""
        return Declared(
            {**self.rename, **other.rename},
            {**self.convert, **other.convert},
            {**self.defaults, **other.defaults},
            self.remove | other.remove,
            self.optional | other.optional,
            self.repeated | other.repeated,
        )


def declared(
    *,
    rename: Mapping[str, str] | None = None,
    convert: Mapping[str, Rule] | None = None,
    defaults: Mapping[str, Any] | None = None,
    remove: Iterable[str] = (),
    optional: Iterable[Node] = (),
    repeated: Iterable[Node] = (),
) -> Declared:
    """Build a :class:`Declared` from the keywords the registration methods take, checking their shapes."""
    from eventmig.errors import RegistryError

    if isinstance(remove, str):
        remove = [remove]
    for name, mapping in (("rename", rename), ("convert", convert), ("defaults", defaults)):
        if mapping is not None and not isinstance(mapping, Mapping):
            raise RegistryError(f"{name}= takes a mapping of field names, got {type(mapping).__name__}")
    for name, rule in (convert or {}).items():
        if not (callable(rule) or isinstance(rule, str)):
            raise RegistryError(f"convert={{{name!r}: ...}} takes a rule (a callable) or words saying what changes")
    return Declared(
        dict(rename or {}),
        dict(convert or {}),
        dict(defaults or {}),
        frozenset(remove),
        frozenset(_nodes(optional, "optional")),
        frozenset(_nodes(repeated, "repeated")),
    )


def _nodes(nodes: Iterable[Any], what: str) -> list[Node]:
    from eventmig.errors import RegistryError

    out = []
    for node in nodes:
        if not (isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int)):
            raise RegistryError(f"{what}= takes (type, version) pairs, got {node!r}")
        out.append(node)
    return out


@dataclass(frozen=True)
class Example:
    """An event at an old version and the events the chain must turn it into (none: dropped).

    Payloads are JSON builtins. Outputs compare as the JSON written to the
    store, where a field left out equals its schema default.
    """

    type: str
    version: int
    data: Any
    becomes: tuple[tuple[str, int, Any], ...]
    name: str
    #: where it was written: "upcasters/__init__.py:42", or the cases file
    origin: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> Node:
        return (self.type, self.version)


def as_event(value: Any, nodes_of_struct: Mapping[type, Node], what: str) -> tuple[str, int, Any]:
    """An example's event as ``(type, version, JSON builtins)``, from a schema Struct or such a tuple."""
    from eventmig.errors import RegistryError

    if isinstance(value, msgspec.Struct):
        node = nodes_of_struct.get(type(value))
        if node is None:
            raise RegistryError(f"example: {what} is a {type(value).__qualname__}, not a registered schema")
        return (node[0], node[1], msgspec.to_builtins(value))
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str):
        if not isinstance(value[1], int) or isinstance(value[1], bool) or value[1] < 1:
            raise RegistryError(f"example: the version of {what} must be an int >= 1, got {value[1]!r}")
        return (value[0], value[1], msgspec.to_builtins(value[2]))
    raise RegistryError(f"example: {what} must be a schema Struct instance or (type, version, data), got {value!r}")


def source_path(filename: str) -> str:
    """A source file as a reader finds it: relative to the working directory when it is under it."""
    import os

    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith("..") else relative
