"""The upcaster graph as a picture: ``eventmig plan --format mermaid|dot``.

Each (type, version) is a node, each step an edge labelled with its kind,
heads are marked, and with a store each node shows how many events it
holds. Mermaid comes as a fenced ```mermaid block, which GitHub draws in a
pull request or any Markdown file, so a reviewer sees what a change does to
history; DOT is for Graphviz. The graph is data first (:class:`Graph`,
built by :func:`build` from a compiled registry), drawn by two small
renderers.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import Node, Step

#: the id of the node every drop leads to
DROPPED = "dropped"

#: a step's kind, decided in this order: what it does to the event's type and count first
KINDS = ("drop", "split", "rename", "fields", "typed", "dict")


class GraphNode(msgspec.Struct):
    id: str
    type: str
    version: int
    #: "head" | "upcast" (has a step) | "no path" (a stored version nothing leads on from) | "unknown" (no schema, no step)
    status: str
    #: events stored at this (type, version), when a store was scanned
    stored: int | None = None


class GraphEdge(msgspec.Struct):
    source: str
    target: str
    #: one of :data:`KINDS`
    kind: str
    #: "helper" (registry.fields, rename_type, split, drop), "typed" (Structs in and out) or "dict"
    how: str
    step: str


class Graph(msgspec.Struct):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


def step_kind(step: Step) -> tuple[str, str]:
    """(kind, how) of a step: what it does, and whether a helper, a typed or a dict function does it."""
    qualname = getattr(step.fn, "__qualname__", "")
    helper = getattr(step.fn, "__module__", "") == "eventmig.model.registry" and (
        qualname in ("_identity", "_drop", "Registry.fields.<locals>.evolve_fields")
    ) or step.name.startswith("split ")
    how = "helper" if helper else ("typed" if step.input_type is not None else "dict")
    if not step.targets:
        kind = "drop"
    elif len(step.targets) > 1 or step.name.startswith("split "):
        kind = "split"
    elif step.targets[0][0] != step.source[0]:
        kind = "rename"
    elif how == "helper":
        kind = "fields"
    else:
        kind = how
    return kind, how


def edge_label(edge: GraphEdge) -> str:
    """``fields`` for a helper's step; the function's name for the others (``rename, typed: item_added``)."""
    if edge.how == "helper":
        return edge.kind
    name = edge.step.rsplit(".", 1)[-1]
    return f"{edge.kind}: {name}" if edge.kind == edge.how else f"{edge.kind}, {edge.how}: {name}"


def build(compiled: CompiledRegistry, stored: Mapping[Node, int] | None = None) -> Graph:
    """The graph of ``compiled``'s steps, with the counts of ``stored`` events per node if given."""
    registry = compiled.registry
    steps = registry.steps
    nodes_at = set(registry.schemas) | set(steps) | {t for s in steps.values() for t in s.targets} | set(stored or {})
    ids = {node: f"n{i}" for i, node in enumerate(sorted(nodes_at))}
    nodes = [
        GraphNode(ids[node], node[0], node[1], _status(compiled, node),
                  None if stored is None else stored.get(node, 0))
        for node in sorted(nodes_at)
    ]
    edges = []
    for source in sorted(steps):
        step = steps[source]
        kind, how = step_kind(step)
        for target in step.targets or [None]:
            edges.append(GraphEdge(ids[source], DROPPED if target is None else ids[target], kind, how, step.name))
    return Graph(nodes, edges)


def _status(compiled: CompiledRegistry, node: Node) -> str:
    if compiled.is_head(node):
        return "head"
    if node in compiled.registry.steps:
        return "upcast"
    if not compiled.knows(node[0]):
        return "unknown"
    return "no path"


def _node_lines(node: GraphNode) -> list[str]:
    lines = [f"{node.type} v{node.version}"]
    if node.status != "upcast":
        lines[0] += f" ({node.status})"
    if node.stored is not None:
        lines.append(f"{node.stored:,} stored")
    return lines


# ------------------------------------------------------------------- mermaid
def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: entities for what Mermaid or HTML would read as syntax."""
    for char, entity in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, entity)
    return text


def to_mermaid(graph: Graph) -> str:
    """A fenced ```mermaid flowchart: paste it into a pull request or a Markdown file."""
    out = ["```mermaid", "flowchart LR"]
    for node in graph.nodes:
        label = "<br/>".join(_mermaid_text(line) for line in _node_lines(node))
        out.append(f'  {node.id}(["{label}"])' if node.status == "head" else f'  {node.id}["{label}"]')
    if any(e.target == DROPPED for e in graph.edges):
        out.append(f'  {DROPPED}(("dropped"))')
    for edge in graph.edges:
        out.append(f'  {edge.source} -->|"{_mermaid_text(edge_label(edge))}"| {edge.target}')
    out += [
        "  classDef head stroke-width:3px",
        "  classDef nopath stroke:#d00,stroke-width:2px,stroke-dasharray:4",
        "  classDef unknown stroke-dasharray:2",
    ]
    for status, cls in (("head", "head"), ("no path", "nopath"), ("unknown", "unknown")):
        members = [n.id for n in graph.nodes if n.status == status]
        if members:
            out.append(f"  class {','.join(members)} {cls}")
    out.append("```")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------- dot
def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph (``dot -Tsvg``): heads drawn bold with a double border."""
    out = ["digraph upcasters {", "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="Helvetica"];',
           '  edge [fontname="Helvetica", fontsize=10];']
    styles = {"head": ', style="rounded,bold", peripheries=2', "no path": ", color=red, style=\"rounded,dashed\"",
              "unknown": ', style="rounded,dotted"', "upcast": ""}
    for node in graph.nodes:
        label = "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in _node_lines(node))
        out.append(f'  {_dot_text(node.id)} [label="{label}"{styles[node.status]}];')
    if any(e.target == DROPPED for e in graph.edges):
        out.append(f"  {_dot_text(DROPPED)} [label=\"dropped\", shape=plaintext];")
    for edge in graph.edges:
        out.append(f"  {_dot_text(edge.source)} -> {_dot_text(edge.target)} [label={_dot_text(edge_label(edge))}];")
    out.append("}")
    return "\n".join(out) + "\n"


RENDERERS = {"mermaid": to_mermaid, "dot": to_dot}
