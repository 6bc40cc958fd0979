"""The checks a registry's graph passes before it compiles: no gaps, no dead ends, no cycles."""

from __future__ import annotations

from collections.abc import Mapping

from eventmig.model.steps import Node, Step, format_node


def all_nodes(steps: Mapping[Node, Step], schemas: Mapping[Node, type]) -> set[Node]:
    """Every node the registry names: schemas, step sources and step targets."""
    nodes = set(schemas) | set(steps)
    for step in steps.values():
        nodes.update(step.targets)
    return nodes


def validate(steps: Mapping[Node, Step], schemas: Mapping[Node, type]) -> list[str]:
    """Every problem with the graph, so one run of ``eventmig plan`` shows them all."""
    problems: list[str] = []
    nodes = all_nodes(steps, schemas)
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
                    f"upcaster {step.name} goes from {format_node(step.source)} back to {format_node(target)}"
                )

    for cycle in _cycles(steps):
        problems.append("cycle: " + " -> ".join(map(format_node, cycle)))
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
