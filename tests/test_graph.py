"""``eventmig plan --format mermaid|dot``: the upcaster graph, parsed back into nodes and edges."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pydot
import pytest

from eventmig import Registry, emit, new_event, open_store
from eventmig.model.graph import DROPPED, build, edge_label, step_kind, to_dot, to_mermaid

REPO = Path(__file__).resolve().parent.parent

# pydot's parser is written against an older pyparsing API, which warns about it
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def eventmig(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


# ----------------------------------------------------------------- parsers
_NODE = re.compile(r'^  (\w+)(\(\[|\[|\(\()"([^"]*)"(\]\)|\]|\)\))$')
_EDGE = re.compile(r'^  (\w+) -->\|"([^"]*)"\| (\w+)$')
_CLASS = re.compile(r"^  class ([\w,]+) (\w+)$")
_CLASSDEF = re.compile(r"^  classDef \w+ [\w:#,.-]+$")


def _unescape(text: str) -> str:
    for entity, char in (("#quot;", '"'), ("#lt;", "<"), ("#gt;", ">"), ("#amp;", "&")):
        text = text.replace(entity, char)
    return text


def parse_mermaid(text: str) -> tuple[dict[str, list[str]], set[tuple[str, str, str]], dict[str, set[str]]]:
    """(node id -> label lines, edges (source, target, label), class -> node ids); every line must parse."""
    lines = text.splitlines()
    assert lines[0] == "```mermaid" and lines[-1] == "```" and lines[1] == "flowchart LR", text
    nodes: dict[str, list[str]] = {}
    edges: set[tuple[str, str, str]] = set()
    classes: dict[str, set[str]] = {}
    for line in lines[2:-1]:
        if m := _NODE.match(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} defined twice"
            nodes[m.group(1)] = [_unescape(part) for part in m.group(3).split("<br/>")]
        elif m := _EDGE.match(line):
            edges.add((m.group(1), m.group(3), _unescape(m.group(2))))
        elif m := _CLASS.match(line):
            classes.setdefault(m.group(2), set()).update(m.group(1).split(","))
        else:
            assert _CLASSDEF.match(line), f"not Mermaid this renderer writes: {line!r}"
    for source, target, _ in edges:
        assert source in nodes and target in nodes, (source, target)
    return nodes, edges, classes


def parse_dot(text: str) -> tuple[dict[str, list[str]], set[tuple[str, str, str]], set[str]]:
    """(node id -> label lines, edges, heads), through pydot's parser of the DOT language."""
    (graph,) = pydot.graph_from_dot_data(text)

    def unquote(value: str) -> str:
        assert value.startswith('"') and value.endswith('"'), value
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")

    nodes, heads = {}, set()
    for node in graph.get_nodes():
        if node.get_name() in ("node", "edge"):  # the defaults' statements
            continue
        name = unquote(node.get_name())
        nodes[name] = unquote(node.get_label()).split("\\n")
        if node.get("peripheries") == "2":
            heads.add(name)
    edges = {(unquote(e.get_source()), unquote(e.get_destination()), unquote(e.get_label())) for e in graph.get_edges()}
    return nodes, edges, heads


def node_of(label: list[str]) -> tuple[str, int] | str:
    m = re.fullmatch(r"(.+) v(\d+)(?: \((head|no path|unknown)\))?", label[0])
    return (m.group(1), int(m.group(2))) if m else label[0]


# ------------------------------------------------------------------ shop
SHOP_EDGES = {
    (("OrderPlaced", 1), ("OrderPlaced", 2), "typed: order_total_in_cents"),
    (("OrderPlaced", 2), ("OrderPlaced", 3), "fields"),
    (("ItemAdded", 1), ("LineItemAdded", 1), "rename, typed: item_added_is_a_line_item"),
    (("OrderShipped", 1), ("OrderShipped", 2), "split, typed: address_out_of_shipment"),
    (("OrderShipped", 1), ("ShippingAddressRecorded", 1), "split, typed: address_out_of_shipment"),
    (("CustomerRegistered", 1), ("CustomerRegistered", 2), "fields"),
    (("CartViewed", 1), "dropped", "drop"),
}


def test_mermaid_of_the_shop_is_its_registry(shop_registry):
    result = eventmig("plan", "--format", "mermaid", "--no-store")
    assert result.returncode == 0, result.stderr
    nodes, edges, classes = parse_mermaid(result.stdout)
    named = {i: node_of(label) for i, label in nodes.items()}
    registry = shop_registry.registry
    expected = set(registry.schemas) | set(registry.steps) | {t for s in registry.steps.values() for t in s.targets}
    assert set(named.values()) == expected | {"dropped"}
    assert {(named[s], named[t], label) for s, t, label in edges} == SHOP_EDGES
    # the edges are the registry's steps, read off it independently
    assert {(named[s], named[t]) for s, t, _ in edges} == {
        (src, tgt) for src, step in registry.steps.items() for tgt in (step.targets or ["dropped"])}
    assert {named[i] for i in classes["head"]} == set(shop_registry.heads.items())
    assert all(len(label) == 1 for label in nodes.values())  # no store, no counts


@pytest.fixture
def shop_store(sqlite_url: str) -> str:
    seeded = eventmig("demo", "--seed-only", "--events", "3000", "--store", sqlite_url)
    assert seeded.returncode == 0, seeded.stderr
    return sqlite_url


def test_dot_of_the_shop_with_a_store_counts_the_events_of_each_node(shop_store: str):
    result = eventmig("plan", "--format", "dot", "--store", shop_store)
    assert result.returncode == 0, result.stderr
    nodes, edges, heads = parse_dot(result.stdout)
    named = {i: node_of(label) for i, label in nodes.items()}
    assert {(named[s], named[t], label) for s, t, label in edges} == SHOP_EDGES
    stored = json.loads(eventmig("plan", "--json", "--store", shop_store).stdout)["stored"]
    counts = {(p["type"], p["version"]): p["events"] for p in stored}
    for i, label in nodes.items():
        if i != DROPPED:
            assert label[1] == f"{counts.get(named[i], 0):,} stored", label
    assert sum(counts.values()) == 3000
    assert {named[i] for i in heads} == {(t, v) for t, v in [("OrderPlaced", 3), ("LineItemAdded", 1), ("OrderShipped", 2),
                                                             ("ShippingAddressRecorded", 1), ("CustomerRegistered", 2),
                                                             ("OrderCancelled", 1), ("PaymentCaptured", 1)]}


def test_mermaid_and_dot_draw_the_same_graph(shop_store: str):
    m_nodes, m_edges, m_classes = parse_mermaid(eventmig("plan", "--format", "mermaid", "--store", shop_store).stdout)
    d_nodes, d_edges, d_heads = parse_dot(eventmig("plan", "--format", "dot", "--store", shop_store).stdout)
    assert m_nodes == d_nodes and m_edges == d_edges and m_classes["head"] == d_heads


# --------------------------------------------------------- kinds and names
class A1(msgspec.Struct):
    x: int


class A2(msgspec.Struct):
    x: int
    y: int = 0


def odd_registry() -> Registry:
    registry = Registry()
    registry.schema("A", 1)(A1)
    registry.schema("A", 2)(A2)

    @registry.upcaster
    def typed(e: A1) -> A2:
        return A2(e.x)

    registry.rename_type("Old", 1, to="New")
    registry.fields("New", 1, defaults={"z": 1})

    @registry.upcaster('Odd "quoted" <T> & co', 1, to=("Even", 1))
    def odd_to_even(data):
        return data

    @registry.upcaster("Many", 1, to=[("Many", 2), ("Part", 1)])
    def fan_out(data):
        return [emit("Many", 2, data), emit("Part", 1, data)]

    @registry.upcaster("Plain", 1, to=("Plain", 2))
    def plain(data):
        return data

    registry.split("Whole", 1, into=[("Half", 1)], fn=lambda d: [emit("Half", 1, d)])
    registry.drop("Noise", 1)
    return registry


def test_each_step_is_labelled_with_its_kind():
    compiled = odd_registry().compile()
    kinds = {step.source: step_kind(step) for step in compiled.registry.steps.values()}
    assert kinds == {
        ("A", 1): ("typed", "typed"),
        ("Old", 1): ("rename", "helper"),
        ("New", 1): ("fields", "helper"),
        ('Odd "quoted" <T> & co', 1): ("rename", "dict"),
        ("Many", 1): ("split", "dict"),
        ("Plain", 1): ("dict", "dict"),
        ("Whole", 1): ("split", "helper"),
        ("Noise", 1): ("drop", "helper"),
    }
    labels = {e.source: edge_label(e) for e in build(compiled).edges}
    assert set(labels.values()) == {"typed: typed", "rename", "fields", "rename, dict: odd_to_even", "split, dict: fan_out",
                                    "dict: plain", "split", "drop"}


def test_names_with_quotes_and_brackets_survive_both_formats():
    graph = build(odd_registry().compile(), {('Odd "quoted" <T> & co', 1): 7, ("Stray", 2): 1})
    for nodes in (parse_mermaid(to_mermaid(graph))[0], parse_dot(to_dot(graph))[0]):
        labels = {tuple(label) for label in nodes.values()}
        assert ('Odd "quoted" <T> & co v1', "7 stored") in labels
        assert ("Stray v2 (unknown)", "1 stored") in labels  # stored, but neither schema nor step
        assert ("Noise v1", "0 stored") in labels
    assert html.escape("<T>") not in to_mermaid(graph)  # Mermaid's entities, not HTML's


def test_a_stored_version_without_a_path_is_drawn_and_exits_1(sqlite_url: str, tmp_path: Path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text(textwrap.dedent('''
        from eventmig import Registry
        registry = Registry()
        registry.fields("T", 1, defaults={"b": 0})
    '''))
    (tmp_path / "pyproject.toml").write_text(f'[tool.eventmig]\nstore = "{sqlite_url}"\nupcasters = "svc:registry"\n')
    with open_store(sqlite_url, create=True) as store:
        store.append("s", [new_event("T", {"a": 1}, {"schema_version": 3})])
    result = eventmig("plan", "--format", "mermaid", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "no path to a head: T v3"
    nodes, edges, classes = parse_mermaid(result.stdout)
    (nopath,) = classes["nopath"]
    assert nodes[nopath] == ["T v3 (no path)", "1 stored"]
    assert not any(nopath in (s, t) for s, t, _ in edges)


def test_format_and_json_are_one_or_the_other():
    result = eventmig("plan", "--format", "dot", "--json", "--no-store")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith("--format dot draws the graph and --json prints")
