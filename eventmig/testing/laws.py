"""Laws of a step, derived from its schemas and what it declares, and checked on every generated event.

A step from ``(type, version)`` to its targets must say what it does to
values; everything it does not declare must hold:

``declarations`` (read from the registry, no event needed)
    a field of the input that appears in no output is declared removed or
    renamed; a field an output requires that the input lacks is declared
    (a default, or a conversion with its rule); a narrowing type change of a
    field (float to int, str to an enum, a tighter bound...) is declared
    with its rule, a callable; and what is declared names fields and targets
    that exist.
``targets``
    a split emits each declared target exactly once, in the declared
    order, unless declared ``optional`` (at most once) or ``repeated``
    (one after another); a single-target step emits exactly one event
    unless optional.
``unknown keys``
    an output holds no key its schema does not have. The upcast itself
    refuses a dict with such keys for a schema'd target (the event is
    quarantined, and the check reports it under "reaches heads" first);
    the law still holds a single step to it when it is checked alone.
``unchanged``
    a field with the same name (or a declared new name) in the input and the
    output arrives unchanged (converted to the new type when that widens).
``rule``
    a field declared converted with a callable rule holds what the rule
    makes of its input value.
``default``
    a new field holds its declared default, or else its schema default.

These laws know nothing of what a value *should* be beyond that; examples
(``registry.example``, files of cases) say so for particular events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect as mi
import msgspec.structs

from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.model.steps import Node, Step

__all__ = ["Broken", "FieldPlan", "StepPlan", "check_outputs", "plan_step", "same"]

_decode = msgspec.json.Decoder().decode


class Broken(Exception):
    """A law that does not hold for one event: its property and a readable reason."""

    def __init__(self, prop: str, message: str) -> None:
        super().__init__(message)
        self.prop, self.message = prop, message


@dataclass(frozen=True)
class Field:
    """One field of a schema, by its JSON key."""

    key: str
    attr: str
    type: Any  # the Python annotation, for msgspec.convert
    info: mi.Type
    required: bool
    default: Any  # msgspec.NODEFAULT when required


@dataclass(frozen=True)
class FieldPlan:
    """How one field of one target must come about."""

    key: str
    how: str  # "kept" | "rule" | "described" | "default" | "schema default"
    source: str | None = None  # the input field it comes from
    rule: Any = None  # the callable rule, or the default value


@dataclass
class StepPlan:
    """What the laws check for one step: the plan per target field, and what its declarations lack."""

    step: Step
    input_schema: type | None
    inputs: dict[str, Field] = field(default_factory=dict)
    outputs: dict[Node, dict[str, Field]] = field(default_factory=dict)
    plans: dict[Node, list[FieldPlan]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def schema_fields(schema: type) -> dict[str, Field]:
    """The fields of a Struct schema by JSON key."""
    infos = mi.type_info(schema).fields  # type: ignore[attr-defined]
    out = {}
    for info, spec in zip(infos, msgspec.structs.fields(schema), strict=True):
        default = spec.default
        if spec.default_factory is not msgspec.NODEFAULT:
            default = spec.default_factory
        out[spec.encode_name] = Field(spec.encode_name, spec.name, spec.type, info.type, spec.required, default)
    return out


# ------------------------------------------------------------------- the plan
def plan_step(registry: Registry, step: Step) -> StepPlan:
    """Read the step's schemas and declarations: each output field's plan, and what is undeclared."""
    source_schema = registry.schemas.get(step.source) or step.input_type
    plan = StepPlan(step, source_schema)
    if source_schema is None or not step.targets:
        return plan
    said = step.declared
    plan.inputs = inputs = schema_fields(source_schema)
    for target in step.targets:
        schema = registry.schemas.get(target)
        if schema is not None:
            plan.outputs[target] = schema_fields(schema)
    everywhere = {key for fields in plan.outputs.values() for key in fields}
    complete = len(plan.outputs) == len(step.targets)  # a target without a schema is reported elsewhere
    _check_names(plan, everywhere, complete)
    renamed_to = {new: old for old, new in said.rename.items() if old in inputs}  # a typo is reported above
    gone = [k for k in inputs if k not in everywhere and k not in said.rename and k not in said.remove]
    for target, fields in plan.outputs.items():
        plan.plans[target] = [p for f in fields.values() if (p := _plan_field(plan, target, f, renamed_to, gone))]
    if complete:
        for key in gone:
            plan.problems.append(
                f"{step.name}: field {key} of {_name(step.source)} is in none of its outputs; "
                f"declare remove=[{key!r}], or rename={{{key!r}: ...}} if it lives on under another name"
            )
    return plan


def _plan_field(
    plan: StepPlan, target: Node, f: Field, renamed_to: Mapping[str, str], gone: list[str]
) -> FieldPlan | None:
    said, step = plan.step.declared, plan.step
    source = renamed_to.get(f.key)
    if source is None and f.key in plan.inputs and f.key not in said.remove:
        source = f.key
    where = f"{_name(target)}.{f.key}"
    if f.key in said.convert:
        rule = said.convert[f.key]
        if isinstance(rule, str):
            if source is not None and not widens(plan.inputs[source].info, f.info):
                plan.problems.append(
                    f"{step.name}: {_change(plan.inputs[source], f, where)} narrows; its declaration needs "
                    f"the rule, a callable: convert={{{f.key!r}: rule}}"
                )
            return FieldPlan(f.key, "described", source)
        return FieldPlan(f.key, "rule", source, rule)
    if source is not None:
        if not widens(plan.inputs[source].info, f.info):
            plan.problems.append(
                f"{step.name}: {_change(plan.inputs[source], f, where)} narrows and is not declared; "
                f"declare it with its rule: convert={{{f.key!r}: rule}}"
            )
            return None
        return FieldPlan(f.key, "kept", source)
    if f.key in said.defaults:
        return FieldPlan(f.key, "default", None, said.defaults[f.key])
    if not f.required:
        return FieldPlan(f.key, "schema default", None, f.default)
    old = repr(gone[0]) if len(gone) == 1 else "'old'"
    plan.problems.append(
        f"{step.name}: {where} is new and required, and nothing declares where it comes from; declare "
        f"rename={{{old}: {f.key!r}}} if it is an old field under a new name (with convert={{{f.key!r}: rule}} if "
        f"its value changes), or defaults={{{f.key!r}: value}}"
    )
    return None


def _check_names(plan: StepPlan, everywhere: set[str], complete: bool) -> None:
    """Declarations that name no field or target are typos: say so."""
    said, step, source = plan.step.declared, plan.step, _name(plan.step.source)
    for old in [*said.rename, *sorted(said.remove)]:
        if old not in plan.inputs:
            plan.problems.append(f"{step.name}: declares {old!r} renamed or removed, but {source} has no field {old}")
    if complete:
        for new in [*said.rename.values(), *said.convert, *said.defaults]:
            if new not in everywhere:
                plan.problems.append(f"{step.name}: declares field {new!r}, which none of its outputs has")
    for node in sorted(said.optional | said.repeated):
        if node not in step.targets:
            plan.problems.append(f"{step.name}: declares {_name(node)} optional or repeated, but does not emit it")


def _change(old: Field, new: Field, where: str) -> str:
    named = f"{old.key} -> {where}" if old.key != new.key else where
    return f"{named} ({describe(old.info)} to {describe(new.info)})"


# ----------------------------------------------------------------- the checks
def check_outputs(
    plan: StepPlan, compiled: CompiledRegistry, data: bytes, outputs: list[tuple[Node, Any]]
) -> None:
    """Raise :class:`Broken` if one of the laws fails for these outputs of the step on ``data``."""
    step = plan.step
    _check_targets(step, [node for node, _ in outputs])
    if plan.input_schema is None:
        return
    typed_in = msgspec.json.decode(data, type=plan.input_schema)
    seen_by_step = (
        msgspec.json.decode(data, type=step.input_type) if step.input_type is not None else _decode(data)
    )
    for node, obj in outputs:
        fields = plan.outputs.get(node)
        if fields is None:
            continue
        written = msgspec.to_builtins(obj, enc_hook=_raw_json)
        if isinstance(written, dict):
            allowed = set(fields) | _tag_keys(compiled.registry.schemas[node])
            extra = sorted(k for k in written if k not in allowed)
            if extra:
                raise Broken("unknown keys", f"{step.name}: emits {_name(node)} with keys its schema does not have: "
                                             f"{', '.join(extra)}")
        try:
            typed_out = msgspec.convert(written, compiled.registry.schemas[node])
        except msgspec.ValidationError:
            continue  # not a valid event of its schema: the chain's own properties report that
        for p in plan.plans.get(node, ()):
            _check_field(plan, node, p, typed_in, seen_by_step, typed_out)


def _check_targets(step: Step, emitted: list[Node]) -> None:
    """Each declared target once, in order; optional ones at most once, repeated ones in a row."""
    said, i = step.declared, 0
    for target in step.targets:
        n = 0
        while i < len(emitted) and emitted[i] == target:
            n, i = n + 1, i + 1
        low = 0 if target in said.optional else 1
        if n < low or (n > 1 and target not in said.repeated):
            break
    else:
        if i == len(emitted):
            return
    shown = ", ".join(map(_name, emitted)) or "nothing"
    wanted = ", ".join(
        _name(t) + (" (optional)" if t in said.optional else "") + (" (repeated)" if t in said.repeated else "")
        for t in step.targets
    )
    raise Broken("targets", f"{step.name}: emitted [{shown}] but declares [{wanted}], each once and in this order")


def _check_field(plan: StepPlan, node: Node, p: FieldPlan, typed_in: Any, seen_by_step: Any, typed_out: Any) -> None:
    step, out_field = plan.step, plan.outputs[node][p.key]
    got = getattr(typed_out, out_field.attr)
    where = f"{step.name}: {_name(node)}.{p.key}"
    if p.how == "described":
        return
    if p.how == "kept":
        in_field = plan.inputs[p.source]  # type: ignore[index]
        expected = _as(getattr(typed_in, in_field.attr), out_field)
        if not same(got, expected):
            came = f"{p.source} of {_name(step.source)}" if p.source != p.key else f"{_name(step.source)}.{p.source}"
            raise Broken("unchanged", f"{where} is {_show(got)}, but {came} was {_show(expected)} and no "
                                      f"declaration says it changes (convert={{{p.key!r}: rule}})")
        return
    if p.how == "rule":
        if p.source is not None:
            if isinstance(seen_by_step, dict):
                if p.source not in seen_by_step:
                    return  # absent in the stored payload: a dict step has nothing to convert
                argument = seen_by_step[p.source]
            else:
                argument = getattr(seen_by_step, plan.inputs[p.source].attr)
        else:
            argument = seen_by_step
        try:
            made = p.rule(argument)
        except Exception as exc:  # noqa: BLE001 (the declared rule is service code)
            raise Broken("rule", f"{where}: its declared rule {_rule_name(p.rule)} raised "
                                 f"{type(exc).__name__}: {exc}") from None
        expected = _as(made, out_field)
        if not same(got, expected):
            of = f"({p.source}={_show(argument)})" if p.source is not None else "(the input)"
            raise Broken("rule", f"{where} is {_show(got)}, but its declared rule {_rule_name(p.rule)}{of} "
                                 f"gives {_show(expected)}")
        return
    default = p.rule() if p.how == "schema default" and callable(p.rule) else p.rule
    expected = _as(default, out_field)
    if not same(got, expected):
        whose = "its declared default" if p.how == "default" else "its schema's default"
        raise Broken("default", f"{where} is new and is {_show(got)}, but {whose} is {_show(expected)}")


def _as(value: Any, f: Field) -> Any:
    """``value`` as the output field's type (a widening conversion), or as it is if it will not convert."""
    try:
        return msgspec.convert(msgspec.to_builtins(value, enc_hook=_raw_json), f.type)
    except (msgspec.ValidationError, TypeError):
        return value


def same(a: Any, b: Any) -> bool:
    """Equal as stored JSON: 0.0 is not -0.0, 1 is not 1.0 nor True, key order aside."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, msgspec.Struct):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__struct_fields__)
    return bool(a == b)


# ------------------------------------------------------------- type changes
def widens(a: mi.Type, b: mi.Type) -> bool:
    """Whether every value of type ``a`` is a valid value of ``b`` (so a copy needs no rule)."""
    if isinstance(a, mi.Metadata):
        return widens(a.type, b)
    if isinstance(b, mi.Metadata):
        return widens(a, b.type)
    if isinstance(b, mi.AnyType) or _identity(a) == _identity(b):
        return True
    if isinstance(a, mi.UnionType):
        return all(widens(m, b) for m in a.types)
    if isinstance(b, mi.UnionType):
        return any(widens(a, m) for m in b.types)
    if isinstance(a, (mi.LiteralType, mi.EnumType)):
        values = a.values if isinstance(a, mi.LiteralType) else [m.value for m in a.cls]
        if isinstance(b, mi.LiteralType):
            return set(values) <= set(b.values)
        return not isinstance(b, mi.EnumType) and all(_fits(v, b) for v in values)
    check = _WIDENS.get((type(a), type(b)))
    return bool(check and check(a, b))


def _fits(value: Any, b: mi.Type) -> bool:
    if isinstance(b, mi.StrType):
        return isinstance(value, str) and _within_lengths(len(value), b)
    if isinstance(b, (mi.IntType, mi.FloatType)):
        return isinstance(value, int) and not isinstance(value, bool) and _bounded(value, b)
    return False


def _within_lengths(n: int, b: Any) -> bool:
    return (b.min_length is None or n >= b.min_length) and (b.max_length is None or n <= b.max_length)


def _bounded(v: float, b: Any) -> bool:
    return (
        (b.ge is None or v >= b.ge) and (b.gt is None or v > b.gt)
        and (b.le is None or v <= b.le) and (b.lt is None or v < b.lt)
        and (not b.multiple_of or math.fmod(v, b.multiple_of) == 0)
    )


def _range(t: Any) -> tuple[float, float]:
    low = max(x for x in (-math.inf, t.ge, t.gt) if x is not None)
    high = min(x for x in (math.inf, t.le, t.lt) if x is not None)
    return low, high


def _numbers(a: Any, b: Any) -> bool:
    (alow, ahigh), (blow, bhigh) = _range(a), _range(b)
    strict_low = b.gt is not None and (a.gt is None and alow <= b.gt)
    strict_high = b.lt is not None and (a.lt is None and ahigh >= b.lt)
    multiple = not b.multiple_of or (a.multiple_of is not None and math.fmod(a.multiple_of, b.multiple_of) == 0)
    return alow >= blow and ahigh <= bhigh and not strict_low and not strict_high and multiple


def _lengths(a: Any, b: Any) -> bool:
    return (b.min_length is None or (a.min_length or 0) >= b.min_length) and (
        b.max_length is None or (a.max_length is not None and a.max_length <= b.max_length)
    )


def _strings(a: mi.StrType, b: mi.StrType) -> bool:
    return _lengths(a, b) and (b.pattern is None or b.pattern == a.pattern)


def _items(a: Any, b: Any) -> bool:
    return _lengths(a, b) and widens(a.item_type, b.item_type)


def _dicts(a: mi.DictType, b: mi.DictType) -> bool:
    return _lengths(a, b) and widens(a.key_type, b.key_type) and widens(a.value_type, b.value_type)


def _structs(a: mi.StructType, b: mi.StructType) -> bool:
    if a.cls is b.cls:
        return True
    a_fields = {f.encode_name: f for f in a.fields}
    b_fields = {f.encode_name: f for f in b.fields}
    if b.forbid_unknown_fields and set(a_fields) - set(b_fields):
        return False
    return all(
        (k in a_fields and widens(a_fields[k].type, f.type)) if f.required else
        (k not in a_fields or widens(a_fields[k].type, f.type))
        for k, f in b_fields.items()
    )


_SEQUENCES = (mi.ListType, mi.VarTupleType)
_WIDENS: dict[tuple[type, type], Callable[[Any, Any], bool]] = {
    (mi.IntType, mi.IntType): _numbers,
    (mi.IntType, mi.FloatType): _numbers,
    (mi.FloatType, mi.FloatType): _numbers,
    (mi.StrType, mi.StrType): _strings,
    (mi.BoolType, mi.BoolType): lambda a, b: True,
    (mi.NoneType, mi.NoneType): lambda a, b: True,
    (mi.DateTimeType, mi.DateTimeType): lambda a, b: b.tz is None or a.tz == b.tz,
    (mi.TimeType, mi.TimeType): lambda a, b: b.tz is None or a.tz == b.tz,
    (mi.DictType, mi.DictType): _dicts,
    (mi.StructType, mi.StructType): _structs,
    **{(x, y): _items for x in _SEQUENCES for y in _SEQUENCES},
    **{(x, y): _items for x in (mi.SetType, mi.FrozenSetType) for y in (mi.SetType, mi.FrozenSetType, *_SEQUENCES)},
}


def describe(t: mi.Type) -> str:
    """A type as a reader would write it: ``float (ge=0)``, ``str | None``, ``list[int]``."""
    if isinstance(t, mi.Metadata):
        return describe(t.type)
    if isinstance(t, mi.UnionType):
        return " | ".join(describe(m) for m in t.types)
    if isinstance(t, mi.LiteralType):
        return f"Literal[{', '.join(map(repr, t.values))}]"
    cls = getattr(t, "cls", None)
    if cls is not None:
        return cls.__qualname__
    if isinstance(t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return f"{_KIND[type(t)]}[{describe(t.item_type)}]"
    if isinstance(t, mi.DictType):
        return f"dict[{describe(t.key_type)}, {describe(t.value_type)}]"
    name = type(t).__name__.removesuffix("Type").lower()
    limits = [f"{k}={getattr(t, k)!r}" for k in ("ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length",
                                                   "pattern") if getattr(t, k, None) is not None]
    return f"{name} ({', '.join(limits)})" if limits else name


_KIND = {mi.ListType: "list", mi.VarTupleType: "tuple", mi.SetType: "set", mi.FrozenSetType: "frozenset"}


def _identity(t: mi.Type) -> Any:
    from eventmig.testing.strategies import _identity as identity

    return identity(t)


# ---------------------------------------------------------------- helpers
def _tag_keys(schema: type) -> set[str]:
    tag_field = getattr(schema.__struct_config__, "tag_field", None)
    return {tag_field} if tag_field else set()


def _raw_json(value: Any) -> Any:
    if isinstance(value, msgspec.Raw):
        return _decode(value)
    raise TypeError(f"Encoding objects of type {type(value).__qualname__} is unsupported")


def _rule_name(rule: Any) -> str:
    return getattr(rule, "__qualname__", None) or repr(rule)


def _name(node: Node) -> str:
    return f"{node[0]} v{node[1]}"


def _show(value: Any) -> str:
    try:
        text = msgspec.json.encode(msgspec.to_builtins(value, enc_hook=_raw_json)).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
