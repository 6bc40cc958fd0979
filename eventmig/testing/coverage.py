"""Which schemas the checks cannot cover, and what to write so that they can.

A step's output that lands on a ``(type, version)`` with no schema is never
validated, and an event with no schema is never generated: a typo in a
``rename_type`` target passes every property that way, while the real head
schema is produced by nothing. ``eventmig check`` is strict by default: each
such gap is a failure (the ``schemas`` property), named with the step that
made it, the schema it probably meant (by edit distance), and the code that
closes it. Without ``strict`` the same findings are notes.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import msgspec
import msgspec.structs

from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import is_rename
from eventmig.model.steps import Node, Step

__all__ = ["Gap", "edit_distance", "schema_code", "schema_gaps"]


@dataclass(frozen=True)
class Gap:
    """A node the checks cannot cover: why, and what to add (lines of code or advice)."""

    node: Node
    message: str
    details: tuple[str, ...] = ()


def schema_gaps(compiled: CompiledRegistry) -> list[Gap]:
    """Every schema gap of the registry, in node order."""
    reg = compiled.registry
    schemas, steps = reg.schemas, reg.steps
    produced = {t for s in steps.values() for t in s.targets}
    gaps: list[Gap] = []
    missing_targets: dict[Node, Step] = {}
    for step in steps.values():
        for target in step.targets:
            if target not in schemas and target not in missing_targets:
                missing_targets[target] = step
    orphans = [n for n in schemas if compiled.is_head(n) and n not in produced and n not in steps]
    for target, step in sorted(missing_targets.items()):
        gaps.append(_missing_target(compiled, target, step, orphans))
    for node, step in sorted(steps.items()):
        if step.targets and node not in schemas and step.input_type is None:
            gaps.append(Gap(
                node,
                f"{_name(node)} has no schema, so its events are never generated and {step.name} is never "
                f"checked; add its schema:",
                tuple(schema_code(node, None)),
            ))
    for head in sorted(orphans):
        gap = _orphan(compiled, head, missing_targets)
        if gap is not None:
            gaps.append(gap)
    return gaps


def _missing_target(compiled: CompiledRegistry, target: Node, step: Step, orphans: list[Node]) -> Gap:
    reg = compiled.registry
    message = f"{step.name} emits {_name(target)}, which has no schema: what it emits there is never validated"
    meant = _closest(target[0], [t for t, _ in reg.schemas])
    details: list[str] = []
    if meant is not None:
        message += f"; did you mean {meant}?"
        head = (meant, compiled.heads.get(meant, 1))
        details.append(f"{_name(head)} has a schema{' and no step produces it' if head in orphans else ''}: "
                       f"if {target[0]} is a typo, correct it in {step.name}")
    like = reg.schemas.get(step.source) if is_rename(step) else None
    what = "the rename target" if like is not None else "it"
    details.append(f"otherwise add a schema for {what}:")
    details.extend(schema_code(target, like))
    return Gap(target, message, tuple(details))


def _orphan(compiled: CompiledRegistry, head: Node, missing: dict[Node, Step]) -> Gap | None:
    """A head schema produced by nothing is fine at v1 (a type that never changed), unless a
    step emits a near-miss of its name; above v1 its previous version's step went elsewhere."""
    reg = compiled.registry
    near = [(t, s) for t, s in missing.items() if edit_distance(t[0], head[0]) <= _tolerance(head[0])]
    if near:
        (target, step), *_ = near
        return Gap(head, f"{_name(head)} is a head schema that no step produces, while {step.name} emits "
                         f"{_name(target)}, which has none: a misspelt step?")
    if head[1] == 1:
        return None
    before = reg.steps.get((head[0], head[1] - 1))
    went = f": {before.name} emits {', '.join(map(_name, before.targets)) or 'nothing'} instead" if before else ""
    return Gap(head, f"{_name(head)} is a head schema that no step produces{went}")


def schema_code(node: Node, like: type | None) -> list[str]:
    """The lines that register a schema for ``node``, with the fields of ``like`` if given."""
    type_, version = node
    name = "".join(part[:1].upper() + part[1:] for part in type_.replace("-", "_").split("_")) or "Event"
    lines = [f'@registry.schema("{type_}", {version})', f"class {name}(msgspec.Struct):"]
    if like is None:
        return [*lines, "    ...  # the fields of its payload"]
    written = getattr(like, "__annotations__", {})
    for f in msgspec.structs.fields(like):
        annotation = written.get(f.name)
        text = annotation if isinstance(annotation, str) else _annotation(f.type)
        default = "" if f.required else (f" = {f.default!r}" if f.default is not msgspec.NODEFAULT else " = ...")
        lines.append(f"    {f.name}: {text}{default}")
    return lines


def _annotation(tp: typing.Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp).replace("typing.", "")


def _closest(name: str, candidates: list[str]) -> str | None:
    scored = sorted((edit_distance(name, c), c) for c in set(candidates) if c != name)
    if scored and scored[0][0] <= _tolerance(name):
        return scored[0][1]
    return None


def _tolerance(name: str) -> int:
    return max(1, len(name) // 5)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _name(node: Node) -> str:
    return f"{node[0]} v{node[1]}"
