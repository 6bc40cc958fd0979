"""Hypothesis strategies derived from msgspec types.

``hypothesis.strategies.from_type`` reads plain type hints and ignores
``Annotated[..., msgspec.Meta(...)]`` constraints, so the values it builds for
an event schema can be rejected by ``msgspec.convert``/``decode``. The
strategies here are derived from ``msgspec.inspect.type_info`` instead: they
see exactly the types and constraints msgspec validates against, so every
value they generate is one msgspec would accept and round-trip:

* ``msgspec.msgpack.decode(msgspec.msgpack.encode(v), type=tp) == v``;
* ``msgspec.json.decode(msgspec.json.encode(v), type=tp) == v`` wherever JSON
  can represent ``v`` (not ``msgspec.msgpack.Ext``; not dict keys that JSON
  turns into indistinguishable strings, e.g. ``bool`` or ``int | str`` keys);
* ``msgspec.convert(msgspec.to_builtins(v), tp) == v`` (not ``Ext``).

``msgspec.Raw`` is what a codec leaves unparsed, so its bytes belong to one
format. Event payloads are stored as JSON, so generated ``Raw`` values hold
compact JSON: they round-trip through JSON only, and
:func:`builtins_from_type` replaces them with the JSON they hold.
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi
import msgspec.structs
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["builtins_from_type", "from_type", "register_strategy"]

# The integer range both wire formats can carry: msgpack has no bigints.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# JSON needs valid UTF-8, and lone surrogates cannot be encoded as UTF-8.
_TEXT_CHARS = st.characters(codec="utf-8")

# RFC 3339 offsets have minute resolution: JSON drops offset seconds.
_MAX_OFFSET_MINUTES = 23 * 60 + 59
_TIMEZONES = st.just(datetime.UTC) | st.integers(-_MAX_OFFSET_MINUTES, _MAX_OFFSET_MINUTES).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
# msgpack stores aware datetimes as UTC timestamps, so an aware value within a
# day of datetime.min/max would overflow once its offset is applied.
_AWARE_MIN = datetime.datetime.min + datetime.timedelta(days=1)
_AWARE_MAX = datetime.datetime.max - datetime.timedelta(days=1)

_JSON_SCALARS: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(_INT_MIN, _INT_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_TEXT_CHARS),
)
# What an untyped (``Any``) value decodes to: JSON-ish builtins. Containers are
# lists and str-keyed dicts because that is what tuples and other keys become.
_JSON_VALUES: SearchStrategy[Any] = st.recursive(
    _JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(_TEXT_CHARS), children, max_size=4)
    ),
    max_leaves=8,
)

# Bounds the size of values of self-referencing types; see from_type.
_MAX_RECURSIVE_LEAVES = 8

_registry: dict[Hashable, SearchStrategy[Any]] = {}
_cache: dict[Any, SearchStrategy[Any]] = {}


@dataclass
class _InProgress:
    """A type whose strategy is being built, and what refers back to it."""

    self_reference: SearchStrategy[Any]
    depends_on: set[Any] = field(default_factory=set)


# Outermost first; only class-backed types recurse, so keys are hashable.
_building: dict[Any, _InProgress] = {}


def from_type(tp: Any) -> SearchStrategy[Any]:
    """Return a strategy for Python values of the msgspec type ``tp``.

    ``tp`` is anything msgspec accepts as a type: a Struct, dataclass,
    TypedDict or NamedTuple class, a builtin, a generic alias, a union, an
    ``Annotated[..., msgspec.Meta(...)]``, a ``NewType``... Strategies are
    cached per type.

    A self-referencing type becomes an ``st.recursive`` strategy: its base
    case is the type with every self-reference unsatisfiable (so optional
    fields are None and lists empty), and each extension substitutes the
    smaller values for the self-references. A plain lazy self-reference
    would let hypothesis grow trees until it gives up on oversized data.
    """
    if not _is_hashable(tp):
        return _strategy(mi.type_info(tp), root=True)
    cached = _cache.get(tp)
    if cached is not None:
        return cached
    if tp in _building:
        return _reference(tp)
    info = mi.type_info(tp)
    strategy, depends_on = _build(tp, info, st.nothing())
    if tp in depends_on:
        strategy = st.recursive(
            strategy,
            lambda children: _build(tp, info, children)[0],
            max_leaves=_MAX_RECURSIVE_LEAVES,
        )
    # A strategy that captured a substitute for an enclosing type's
    # self-reference is only right inside that build.
    if depends_on <= {tp}:
        _cache[tp] = strategy
    return strategy


def _build(
    tp: Any, info: mi.Type, self_reference: SearchStrategy[Any]
) -> tuple[SearchStrategy[Any], set[Any]]:
    """Build ``tp``'s strategy with references to ``tp`` resolved to ``self_reference``.

    Also returns the types being built (``tp`` included) it refers back to.
    """
    in_progress = _building[tp] = _InProgress(self_reference)
    try:
        return _strategy(info, root=True), in_progress.depends_on
    finally:
        del _building[tp]


def _reference(tp: Any) -> SearchStrategy[Any]:
    """Refer back to ``tp``, whose strategy is being built.

    ``tp`` and every type built inside it so far now depend on ``tp``.
    """
    keys = list(_building)
    for key in keys[keys.index(tp) :]:
        _building[key].depends_on.add(tp)
    return _building[tp].self_reference


def register_strategy(tp: Any, strategy: SearchStrategy[Any]) -> None:
    """Use ``strategy`` wherever msgspec sees the type ``tp``.

    Needed for custom types (msgspec only knows them through enc/dec hooks)
    and useful for constraints generation cannot honour efficiently, such as
    a ``pattern`` that random strings rarely match with the required length.

    Matching is by msgspec's view of the type, so it also applies inside
    containers and Struct fields. ``NewType`` and ``Annotated`` without
    ``Meta`` are invisible to msgspec and hence to matching: registering one
    overrides its underlying type everywhere. Give an alias its own identity
    with ``Annotated[T, msgspec.Meta(extra={...})]`` if that is not wanted.
    The strategy must generate values msgspec accepts for ``tp``. Register
    before building strategies for types that contain ``tp``: strategies
    already returned by ``from_type`` keep what they were built from.
    """
    _registry[_identity(mi.type_info(tp))] = strategy
    _cache.clear()


def builtins_from_type(tp: Any) -> SearchStrategy[Any]:
    """Return a strategy for the builtin form of values of type ``tp``.

    This is the shape of a stored event payload (dicts, lists, str, int,
    ...), as produced by ``msgspec.to_builtins``; ``msgspec.convert`` turns
    each such value back into an equal value of ``tp`` (``msgspec.Raw``
    aside: its JSON is inlined, which JSON-decodes back into it).
    """
    return from_type(tp).map(_to_builtins)


def _to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value, enc_hook=_raw_json)


def _raw_json(value: Any) -> Any:
    """``to_builtins`` leaves Raw to a hook: inline the JSON it holds."""
    if isinstance(value, msgspec.Raw):
        return msgspec.json.decode(value)
    raise TypeError(f"Encoding objects of type {type(value).__qualname__} is unsupported")


def _is_hashable(tp: Any) -> bool:
    try:
        hash(tp)
    except TypeError:  # e.g. Annotated with unhashable metadata
        return False
    return True


def _identity(value: Any) -> Hashable:
    """A hashable key for a type-info node, equal for equal msgspec types.

    Class-backed nodes (Structs, enums, custom types, ...) are identified by
    their class alone, which also stops the walk at recursive Structs.
    """
    if isinstance(value, mi.Type):
        cls = getattr(value, "cls", None)
        if cls is not None:
            return (type(value), cls)
        fields = (_identity(getattr(value, name)) for name in value.__struct_fields__)
        return (type(value), *fields)
    if isinstance(value, dict):
        return (dict, frozenset((k, _identity(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(_identity(v) for v in value))
    # Keep the type: Literal[1] and Literal[True] differ although 1 == True.
    return (type(value), value)


def _strategy(node: mi.Type, *, root: bool = False) -> SearchStrategy[Any]:
    """Build the strategy for one type-info node.

    Below the root, class-backed object types go through ``from_type`` so
    that they are cached per class and references back to a type being
    built are noticed.
    """
    registered = _registry.get(_identity(node))
    if registered is not None:
        return registered
    if not root and isinstance(node, _OBJECT_TYPES):
        return from_type(node.cls)
    builder = _BUILDERS.get(type(node))
    if builder is None:
        cls = getattr(node, "cls", None)
        what = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else repr(node)
        raise TypeError(
            f"cannot generate values of {what}; "
            "use eventmig.testing.strategies.register_strategy for it"
        )
    return builder(node)


def _ints(node: mi.IntType) -> SearchStrategy[int]:
    low = _INT_MIN if node.ge is None else node.ge
    if node.gt is not None:
        low = max(low, node.gt + 1)
    high = _INT_MAX if node.le is None else node.le
    if node.lt is not None:
        high = min(high, node.lt - 1)
    step = node.multiple_of
    if step is None:
        return _integers(low, high)
    return _integers(-(-low // step), high // step).map(lambda k: k * step)


def _integers(low: int, high: int) -> SearchStrategy[int]:
    return st.nothing() if low > high else st.integers(low, high)


def _floats(node: mi.FloatType) -> SearchStrategy[float]:
    if node.multiple_of is not None:
        return _float_multiples(node, node.multiple_of)
    return st.floats(
        min_value=node.ge if node.gt is None else node.gt,
        max_value=node.le if node.lt is None else node.lt,
        exclude_min=node.gt is not None,
        exclude_max=node.lt is not None,
        allow_nan=False,
        allow_infinity=False,
    )


def _float_multiples(node: mi.FloatType, step: float) -> SearchStrategy[float]:
    """Floats that pass msgspec's exact check ``math.fmod(x, step) == 0``.

    ``k * step`` only passes when the product is exact, i.e. when the odd
    part of ``k`` times the odd mantissa of ``step`` fits in 53 bits; for a
    step like 0.1 that leaves only powers of two. Multipliers are trimmed to
    such values, and msgspec itself re-checks the bounds on the products.
    """
    low = next((b for b in (node.gt, node.ge) if b is not None), -sys.float_info.max)
    high = next((b for b in (node.lt, node.le) if b is not None), sys.float_info.max)
    max_odd = (2**53 - 1) // _odd_part(step.as_integer_ratio()[0])
    # Exact arithmetic: near the float range, k and low / step overflow floats.
    exact_step = Fraction(step)
    multipliers = _integers(
        math.ceil(Fraction(low) / exact_step), math.floor(Fraction(high) / exact_step)
    )
    return multipliers.map(lambda k: float(_trim(k, max_odd) * exact_step)).filter(
        _accepted_by(Annotated[float, _meta(node)])
    )


def _odd_part(n: int) -> int:
    return n >> ((n & -n).bit_length() - 1)


def _trim(k: int, max_odd: int) -> int:
    """Clear low bits of ``k`` until its odd part is at most ``max_odd``."""
    sign, k = (-1 if k < 0 else 1), abs(k)
    while k and _odd_part(k) > max_odd:
        k &= k - 1
    return sign * k


def _text(node: mi.StrType) -> SearchStrategy[str]:
    if node.pattern is None:
        return st.text(_TEXT_CHARS, min_size=node.min_length or 0, max_size=node.max_length)
    # msgspec matches patterns anywhere in the string (re.search), which is
    # what from_regex generates by default; lengths are left to the filter.
    candidates = st.from_regex(node.pattern, alphabet=_TEXT_CHARS)
    return candidates.filter(_accepted_by(Annotated[str, _meta(node)]))


def _meta(node: mi.FloatType | mi.StrType) -> msgspec.Meta:
    """The ``Meta`` that expresses ``node``'s constraints."""
    return msgspec.Meta(**msgspec.structs.asdict(node))


def _accepted_by(tp: Any) -> Callable[[Any], bool]:
    """msgspec's own validation for ``tp``, to filter candidate values with."""

    def accepts(value: Any) -> bool:
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError:
            return False
        return True

    return accepts


def _binary(node: mi.BytesType | mi.ByteArrayType | mi.MemoryViewType) -> SearchStrategy[bytes]:
    return st.binary(min_size=node.min_length or 0, max_size=node.max_length)


def _datetimes(node: mi.DateTimeType) -> SearchStrategy[datetime.datetime]:
    naive = st.datetimes()
    aware = st.datetimes(_AWARE_MIN, _AWARE_MAX, timezones=_TIMEZONES)
    return {None: naive | aware, True: aware, False: naive}[node.tz]


def _times(node: mi.TimeType) -> SearchStrategy[datetime.time]:
    naive = st.times()
    aware = st.times(timezones=_TIMEZONES)
    return {None: naive | aware, True: aware, False: naive}[node.tz]


def _collection_sizes(node: mi.CollectionType | mi.DictType) -> dict[str, Any]:
    return {"min_size": node.min_length or 0, "max_size": node.max_length}


def _lists(node: mi.ListType) -> SearchStrategy[list[Any]]:
    return st.lists(_strategy(node.item_type), **_collection_sizes(node))


def _var_tuples(node: mi.VarTupleType) -> SearchStrategy[tuple[Any, ...]]:
    return st.lists(_strategy(node.item_type), **_collection_sizes(node)).map(tuple)


def _sets(node: mi.SetType) -> SearchStrategy[set[Any]]:
    return st.sets(_member(node.item_type), **_collection_sizes(node))


def _frozensets(node: mi.FrozenSetType) -> SearchStrategy[frozenset[Any]]:
    return st.frozensets(_member(node.item_type), **_collection_sizes(node))


def _member(node: mi.Type) -> SearchStrategy[Any]:
    """Set members must be hashable, so ``Any`` members are scalars only."""
    return _JSON_SCALARS if isinstance(node, mi.AnyType) else _strategy(node)


def _dicts(node: mi.DictType) -> SearchStrategy[dict[Any, Any]]:
    # JSON object keys are strings: an untyped key decodes back as a str.
    keys = (
        st.text(_TEXT_CHARS) if isinstance(node.key_type, mi.AnyType) else _strategy(node.key_type)
    )
    return st.dictionaries(keys, _strategy(node.value_type), **_collection_sizes(node))


def _unions(node: mi.UnionType) -> SearchStrategy[Any]:
    # msgspec decodes a union's members other than Raw only (``Raw | None``
    # reads nothing but null), so Raw values there would not round-trip.
    members = [t for t in node.types if not isinstance(t, mi.RawType)]
    return st.one_of(*(_strategy(t) for t in members))


def _field_value(spec: mi.Field) -> SearchStrategy[Any]:
    """A field's values; fields defaulting to ``msgspec.UNSET`` sometimes stay unset.

    type_info reports an ``UNSET`` default as no default on an optional
    field (and drops ``UnsetType`` from the field's type).
    """
    values = _strategy(spec.type)
    unset_default = (
        not spec.required
        and spec.default is msgspec.NODEFAULT
        and spec.default_factory is msgspec.NODEFAULT
    )
    return st.just(msgspec.UNSET) | values if unset_default else values


def _structs(node: mi.StructType | mi.DataclassType) -> SearchStrategy[Any]:
    # Every field is generated: an instance always carries all of them, and a
    # value equal to the default survives omit_defaults encoding unchanged.
    return st.builds(node.cls, **{f.name: _field_value(f) for f in node.fields})


def _named_tuples(node: mi.NamedTupleType) -> SearchStrategy[tuple[Any, ...]]:
    return st.builds(node.cls, *(_strategy(f.type) for f in node.fields))


def _typed_dicts(node: mi.TypedDictType) -> SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f.name: _strategy(f.type) for f in node.fields if f.required},
        optional={f.name: _strategy(f.type) for f in node.fields if not f.required},
    )


_OBJECT_TYPES = (mi.StructType, mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)

_BUILDERS: dict[type[mi.Type], Callable[[Any], SearchStrategy[Any]]] = {
    mi.AnyType: lambda node: _JSON_VALUES,
    mi.NoneType: lambda node: st.none(),
    mi.BoolType: lambda node: st.booleans(),
    mi.IntType: _ints,
    mi.FloatType: _floats,
    mi.StrType: _text,
    mi.BytesType: _binary,
    mi.ByteArrayType: lambda node: _binary(node).map(bytearray),
    mi.MemoryViewType: lambda node: _binary(node).map(memoryview),
    mi.DateTimeType: _datetimes,
    mi.TimeType: _times,
    mi.DateType: lambda node: st.dates(),
    mi.TimeDeltaType: lambda node: st.timedeltas(),
    mi.UUIDType: lambda node: st.uuids(),
    mi.DecimalType: lambda node: st.decimals(allow_nan=False, allow_infinity=False),
    mi.ExtType: lambda node: st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary()),
    mi.RawType: lambda node: _JSON_VALUES.map(lambda value: msgspec.Raw(msgspec.json.encode(value))),
    mi.EnumType: lambda node: st.sampled_from(list(node.cls)),
    mi.LiteralType: lambda node: st.sampled_from(node.values),
    mi.UnionType: _unions,
    mi.Metadata: lambda node: _strategy(node.type),
    mi.ListType: _lists,
    mi.VarTupleType: _var_tuples,
    mi.SetType: _sets,
    mi.FrozenSetType: _frozensets,
    mi.TupleType: lambda node: st.tuples(*(_strategy(t) for t in node.item_types)),
    mi.DictType: _dicts,
    mi.StructType: _structs,
    mi.DataclassType: _structs,
    mi.NamedTupleType: _named_tuples,
    mi.TypedDictType: _typed_dicts,
}
