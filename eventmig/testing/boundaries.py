"""Boundary values of every field type, as payloads the checks run before any generated one.

Random generation finds a float in exponent form or a string with an astral
character only sometimes; a verdict that depends on luck is no CI gate. So
each check first runs fixed payloads of the schema: the simplest valid one
(empty strings, zeros, empty lists, the first enum value...), then the same
with one field at a time set to each of its boundary values:

* strings: empty, blank, padded with spaces, a NUL, a newline, non-ASCII
  (``é``, ``ß``, ``İ``: their case mapping changes the length), astral
  (``𝄞``), a long one, and the lengths ``msgspec.Meta`` allows at its ends;
* ints: 0, ±1, the 32-bit, 53-bit (exact float) and 64-bit limits, and
  the bounds of ``Meta(ge/gt/le/lt/multiple_of)`` and their neighbours;
* floats: 0.0 and -0.0, ±1, halves (rounding modes), decimals that binary
  floats cannot hold (0.29, 1.15, 12.29...), exponent forms (1e-07, 1e+16),
  the smallest subnormal and normal, the largest finite, a whole number
  stored as a JSON integer, and the ``Meta`` bounds (``nextafter`` for
  strict ones). NaN and infinities are not among them: JSON cannot hold
  them, so no stored payload does (msgspec writes NaN as ``null``);
* booleans, None, every literal and enum value, date and time extremes,
  the nil and max UUID, decimals, empty and one-element collections.

Every payload is checked with msgspec against the schema before use: a value
the schema refuses is never offered as a stored event.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["boundary_payloads"]

#: explicit payloads per schema at most (one field varied at a time, fields taking turns)
MAX_PAYLOADS = 160
#: values of a nested Struct or collection at most (its own minimal one first)
_MAX_NESTED = 12

# the values that tell most come first (a failure shows the first one that breaks a property),
# then the bounds of the field's Meta, then the extremes of the type
_INT_COMMON = [0, 1, -1]
_INT_EXTREMES = [2**31 - 1, -(2**31), 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgspec's JSON decoder reads as an int
_FLOAT_COMMON: list[Any] = [
    0.0, -0.0, 1.0, -1.0, 0.29, 12.29, 1.15, 4.35, 0.5, 1.5, 2.5, -0.5, 0.1, 0.125, 1.005, 2.675,
    0.30000000000000004, 12,  # 12: a whole number stored as a JSON int
]
_FLOAT_EXTREMES = [1e-07, 1.5e-05, 1e16, 1e22, 9007199254740993.0, 5e-324, sys.float_info.min,
                   sys.float_info.max, -sys.float_info.max]
_STR_CANDIDATES = [
    "", " ", "a", "0", " padded ", "\x00", "line\nbreak", "é", "ß", "İ", "𝄞",
    "The quick brown fox jumps over the lazy dog: ÿ, ß, İ, 𝄞",
]
_DATETIMES = ["1970-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59.999999", "2000-02-29T12:00:00"]
_AWARE_DATETIMES = ["1970-01-01T00:00:00Z", "2000-02-29T23:59:59.999999+23:59", "1999-12-31T00:00:00-23:59"]
_TIMES = ["00:00:00", "23:59:59.999999"]
_AWARE_TIMES = ["00:00:00Z", "23:59:59.999999+23:59"]
_DATES = ["1970-01-01", "0001-01-01", "9999-12-31", "2000-02-29"]
_UUIDS = ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
_DECIMALS = ["0", "-0", "12.29", "1E+2", "0.0000001", "-1"]
_ANY = [None, 0, "", [], {}, -0.0, 1e16, "𝄞", {"": None}, [0, "", None]]


def boundary_payloads(schema: type, *, limit: int = MAX_PAYLOADS) -> list[Any]:
    """Payloads of ``schema`` as JSON builtins: the simplest valid one first, then one field varied at a time.

    A field with a default is left out of one more payload (as in events
    written before it existed). Returns ``[]`` for a schema this cannot
    build a valid payload of; generation still covers it.
    """
    try:
        info = mi.type_info(schema)
    except Exception:  # noqa: BLE001 (a type msgspec cannot describe: generation reports it)
        return []
    if not isinstance(info, mi.StructType):
        return []
    decode = msgspec.json.Decoder(schema).decode
    payloads = _struct_values(info, limit, decode)
    optional = [f.encode_name for f in info.fields if not f.required]
    if payloads and optional and not info.array_like:
        payloads.insert(1, {k: v for k, v in payloads[0].items() if k not in optional})
    return [p for p in _unique(payloads) if _accepted(decode, p)][:limit]


def _struct_values(info: mi.StructType, limit: int, decode: Callable[[bytes], Any] | None = None) -> list[Any]:
    """The minimal payload of a Struct, then variations of one field each, fields taking turns."""
    per_field = [_values(f.type) for f in info.fields]
    if any(not values for values in per_field):
        return []
    check = decode or msgspec.json.Decoder(info.cls).decode
    array_like, tag_field = getattr(info, "array_like", False), getattr(info, "tag_field", None)

    def build(choice: dict[int, Any]) -> Any:
        values = [choice.get(i, values[0]) for i, values in enumerate(per_field)]
        if array_like:
            return ([info.tag] if tag_field is not None else []) + values
        payload = {f.encode_name: v for f, v in zip(info.fields, values, strict=True)}
        if tag_field is not None:
            payload = {tag_field: info.tag, **payload}
        return payload

    minimal = build({})
    if not _accepted(check, minimal):
        return []
    out = [minimal]
    depth = max((len(v) for v in per_field), default=1)
    for rank in range(1, depth):  # fields take turns: every field's most telling values come first
        for i, values in enumerate(per_field):
            if rank < len(values):
                out.append(build({i: values[rank]}))
                if len(out) >= limit:
                    return out
    return out


def _accepted(decode: Callable[[bytes], Any], payload: Any) -> bool:
    try:
        decode(msgspec.json.encode(payload))
    except (msgspec.ValidationError, msgspec.DecodeError, msgspec.EncodeError, TypeError, ValueError, OverflowError):
        return False
    except Exception:  # noqa: BLE001 (a __post_init__ of the service's may raise anything)
        return False
    return True


def _unique(values: list[Any]) -> list[Any]:
    seen: set[bytes] = set()
    out = []
    for value in values:
        key = _key(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _key(value: Any) -> bytes:
    """Tell -0.0 from 0.0 and 12 from 12.0, as the JSON bytes do."""
    return msgspec.json.encode(value)


# ------------------------------------------------------------------ per type
def _values(node: mi.Type) -> list[Any]:
    """Boundary values of one type as JSON builtins, the simplest first.

    A type none of whose values is known here (a pattern no candidate
    matches, a type registered with its own strategy) gets the minimal value
    hypothesis finds for it; a type with none at all gets [].
    """
    cls = getattr(node, "cls", None)
    if cls is not None and cls in _building:  # a self-reference: the minimal value leaves it out
        return []
    builder = _BUILDERS.get(type(node))
    if cls is not None:
        _building.add(cls)
    try:
        values = _unique(builder(node)) if builder is not None and not _registered(node) else []
    finally:
        _building.discard(cls)
    return values or _minimal(node)


_building: set[Any] = set()


def _registered(node: mi.Type) -> bool:
    from eventmig.testing import strategies

    return strategies._identity(node) in strategies._registry


def _minimal(node: mi.Type) -> list[Any]:
    """The value hypothesis shrinks to for this type (deterministic), or [] if it cannot build one."""
    from hypothesis import HealthCheck, Phase, find, settings

    from eventmig.testing import strategies

    try:
        strategy = strategies._strategy(node, root=True).map(strategies._to_builtins)
        value = find(strategy, lambda _: True, settings=settings(
            database=None, derandomize=True, max_examples=50, phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        ))
    except Exception:  # noqa: BLE001 (no strategy for it, or nothing valid: generation reports it)
        return []
    return [value]


def _ints(node: mi.IntType) -> list[int]:
    bounds = []
    for b in (node.ge, node.le):
        if b is not None:
            bounds += [b, b + 1, b - 1]
    if node.gt is not None:
        bounds += [node.gt + 1, node.gt + 2]
    if node.lt is not None:
        bounds += [node.lt - 1, node.lt - 2]
    step = node.multiple_of
    if step:
        low = node.ge if node.ge is not None else (node.gt + 1 if node.gt is not None else None)
        high = node.le if node.le is not None else (node.lt - 1 if node.lt is not None else None)
        bounds += [step, -step] + ([-(-low // step) * step] if low is not None else []) + (
            [high // step * step] if high is not None else []
        )
    candidates = [*_INT_COMMON, *bounds, *_INT_EXTREMES]
    return [v for v in candidates if _int_ok(node, v)]


def _int_ok(node: mi.IntType, v: int) -> bool:
    return (
        _INT_RANGE[0] <= v <= _INT_RANGE[1]
        and (node.ge is None or v >= node.ge)
        and (node.gt is None or v > node.gt)
        and (node.le is None or v <= node.le)
        and (node.lt is None or v < node.lt)
        and (not node.multiple_of or v % node.multiple_of == 0)
    )


def _floats(node: mi.FloatType) -> list[Any]:
    import math

    bounds: list[float] = []
    for b in (node.ge, node.le):
        if b is not None:
            bounds += [float(b), math.nextafter(b, math.inf), math.nextafter(b, -math.inf)]
    if node.gt is not None:
        bounds += [math.nextafter(node.gt, math.inf)]
    if node.lt is not None:
        bounds += [math.nextafter(node.lt, -math.inf)]
    if node.multiple_of:
        bounds += [float(node.multiple_of), 0.0]
    candidates = [*_FLOAT_COMMON, *bounds, *_FLOAT_EXTREMES]
    return [v for v in candidates if _float_ok(node, v)]


def _float_ok(node: mi.FloatType, v: float) -> bool:
    import math

    f = float(v)
    return (
        math.isfinite(f)
        and (node.ge is None or f >= node.ge)
        and (node.gt is None or f > node.gt)
        and (node.le is None or f <= node.le)
        and (node.lt is None or f < node.lt)
        and (not node.multiple_of or math.fmod(f, node.multiple_of) == 0)
    )


def _strings(node: mi.StrType) -> list[str]:
    low, high = node.min_length or 0, node.max_length
    sized = ["𝄞" * low] + (["a" * high, "𝄞" * high] if high is not None and high < 10_000 else [])
    candidates = (["a" * low] if low else []) + [*_STR_CANDIDATES, *sized]
    pattern = re.compile(node.pattern) if node.pattern is not None else None
    return [
        s for s in candidates
        if low <= len(s) and (high is None or len(s) <= high) and (pattern is None or pattern.search(s))
    ]


def _bytes(node: mi.BytesType | mi.ByteArrayType | mi.MemoryViewType) -> list[str]:
    low, high = node.min_length or 0, node.max_length
    sizes = [n for n in (low, 1, 3, 64) if n >= low and (high is None or n <= high)]
    return [base64.b64encode(b"\x00" * n).decode() for n in sizes]


def _datetimes(node: mi.DateTimeType) -> list[str]:
    return {None: _DATETIMES + _AWARE_DATETIMES, True: _AWARE_DATETIMES, False: _DATETIMES}[node.tz]


def _times(node: mi.TimeType) -> list[str]:
    return {None: _TIMES + _AWARE_TIMES, True: _AWARE_TIMES, False: _TIMES}[node.tz]


def _sized(node: Any, items: list[Any], unique: bool = False) -> list[list[Any]]:
    """Collections of the first few item values, at the lengths the type allows (empty first)."""
    low, high = node.min_length or 0, node.max_length
    out = []
    for n in sorted({low, max(low, 1), max(low, 3)}):
        if high is not None and n > high:
            continue
        if unique:
            if n > len(items):
                continue
            out.append(items[:n])
        elif items or n == 0:
            out.append([items[i % len(items)] for i in range(n)] if items else [])
    return out


def _lists(node: mi.ListType | mi.VarTupleType) -> list[list[Any]]:
    items = _values(node.item_type)[:_MAX_NESTED]
    return _sized(node, items)


def _sets(node: mi.SetType | mi.FrozenSetType) -> list[list[Any]]:
    items = [v for v in _values(node.item_type) if not isinstance(v, (list, dict))][:_MAX_NESTED]
    return _sized(node, items, unique=True)


def _dicts(node: mi.DictType) -> list[dict[str, Any]]:
    # JSON object keys are strings: an int key is written as its digits, which msgspec reads back
    keys = [k for k in _values(node.key_type) if isinstance(k, (str, int)) and not isinstance(k, bool)]
    values = _values(node.value_type)
    if not values:
        return []
    unique_keys = list(dict.fromkeys(str(k) for k in keys))
    pairs = [(k, values[i % len(values)]) for i, k in enumerate(unique_keys)]
    return [dict(chosen) for chosen in _sized(node, pairs, unique=True)]


def _tuples(node: mi.TupleType) -> list[list[Any]]:
    per_item = [_values(t) for t in node.item_types]
    if any(not v for v in per_item):
        return []
    depth = min(max(len(v) for v in per_item), 3)
    return [[v[min(rank, len(v) - 1)] for v in per_item] for rank in range(depth)]


def _unions(node: mi.UnionType) -> list[Any]:
    members = [t for t in node.types if not isinstance(t, mi.RawType)]
    per_member = [_values(t) for t in members]
    none_first = [None] if any(isinstance(t, mi.NoneType) for t in members) else []
    out = list(none_first)
    for rank in range(max((len(v) for v in per_member), default=0)):
        out += [v[rank] for v in per_member if rank < len(v)]
    return out


def _structs(node: mi.StructType) -> list[Any]:
    return _struct_values(node, _MAX_NESTED)


def _typed_dicts(node: mi.TypedDictType) -> list[Any]:
    per_field = {f.encode_name: _values(f.type) for f in node.fields if f.required}
    if any(not v for v in per_field.values()):
        return []
    return [{k: v[0] for k, v in per_field.items()}]


def _named_tuples(node: mi.NamedTupleType) -> list[Any]:
    per_field = [_values(f.type) for f in node.fields]
    if any(not v for v in per_field):
        return []
    return [[v[0] for v in per_field]]


_BUILDERS: dict[type[mi.Type], Callable[[Any], list[Any]]] = {
    mi.AnyType: lambda node: list(_ANY),
    mi.RawType: lambda node: list(_ANY),
    mi.NoneType: lambda node: [None],
    mi.BoolType: lambda node: [False, True],
    mi.IntType: _ints,
    mi.FloatType: _floats,
    mi.StrType: _strings,
    mi.BytesType: _bytes,
    mi.ByteArrayType: _bytes,
    mi.MemoryViewType: _bytes,
    mi.DateTimeType: _datetimes,
    mi.TimeType: _times,
    mi.DateType: lambda node: list(_DATES),
    mi.UUIDType: lambda node: list(_UUIDS),
    mi.DecimalType: lambda node: list(_DECIMALS),
    mi.EnumType: lambda node: [m.value for m in node.cls],
    mi.LiteralType: lambda node: list(node.values),
    mi.UnionType: _unions,
    mi.Metadata: lambda node: _values(node.type),
    mi.ListType: _lists,
    mi.VarTupleType: _lists,
    mi.SetType: _sets,
    mi.FrozenSetType: _sets,
    mi.TupleType: _tuples,
    mi.DictType: _dicts,
    mi.StructType: _structs,
    mi.DataclassType: _structs,
    mi.TypedDictType: _typed_dicts,
    mi.NamedTupleType: _named_tuples,
}
