"""Property checks of a whole upcaster registry, in one call.

For every ``(type, version)`` of the registry that has a schema, stored
events are generated (:func:`~eventmig.testing.events.stored_events`) and
each one must satisfy:

``upcasts``
    the chain runs without an exception;
``reaches heads``
    every output is at the head schema of its type and decodes as it;
``deterministic``
    upcasting the same event twice gives the same output bytes;
``stepwise``
    the compiled chain equals its first step followed by upcasting that
    step's outputs as events stored at their own schema versions (what a
    migration of a store that already holds such events would do);
``head unchanged``
    an event already at its head comes out as its canonical bytes;
``verifies``
    what ``migrate`` writes (msgspec's faster field-order encoding), read
    back and canonicalised as ``verify`` reads it, equals the canonical
    output ``verify`` compares it with: otherwise every migration of such
    events fails its verification.

Those say that the steps run; what their outputs should *be* comes from
three more sources (see :mod:`~eventmig.testing.laws`,
:mod:`~eventmig.testing.coverage` and :mod:`~eventmig.testing.cases`):

``example``
    every example (``registry.example(...)``, a file of cases) becomes
    exactly the head events it names;
``declarations``, ``targets``, ``unknown keys``, ``unchanged``, ``rule``, ``default``
    the laws each step's schemas and declarations imply;
``schemas``
    every step's output lands on a schema, every head schema is produced by
    something, and every upcast node can be generated.

The laws and ``schemas`` are the ``strict`` part, on by default.

Each node runs first on the boundary values of its schema (explicit
examples, the same on every run), then on ``examples`` generated events.
Hypothesis drives the generation and shrinks each failure to a minimal
example, which the report shows together with the chain that failed. All
entry points share one settings profile (:mod:`~eventmig.testing.profile`).
It is run programmatically, so the check works in any test runner, from
``eventmig check`` and from a plain script::

    from eventmig.testing.checks import assert_upcasters, check_upcasters

    def test_upcasters():
        assert_upcasters(registry, examples=200)      # AssertionError with the shrunk examples

    report = check_upcasters(registry)                # a msgspec Struct: report.ok, report.nodes
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import example as explicit_example
from hypothesis import given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import FailedHealthCheck, Flaky, Unsatisfiable

from eventmig.model.declared import Example
from eventmig.errors import UpcastError, first_line
from eventmig.model.events import RecordedEvent, canonical_json
from eventmig.model.chains import CompiledRegistry, Outcome
from eventmig.model.registry import Registry
from eventmig.model.steps import EventContext, Node
from eventmig.testing import laws
from eventmig.testing.cases import load_cases, run_example
from eventmig.testing.coverage import Gap, schema_gaps
from eventmig.testing.events import boundary_events, schema_for, stored_events
from eventmig.testing.profile import DEFAULT_EXAMPLES, check_settings

__all__ = ["CheckFailed", "Failure", "NodeReport", "RegistryReport", "assert_upcasters", "check_upcasters"]

PROPERTIES = (
    "upcasts", "reaches heads", "deterministic", "stepwise", "head unchanged", "verifies",
    "example", "schemas", "declarations", "targets", "unknown keys", "unchanged", "rule", "default",
)

_decode = msgspec.json.Decoder().decode
#: how the registry's chains word an output its schema refuses
_SCHEMA_MISMATCHES = ("does not match its head schema", "that its schema does not declare")


class Failure(msgspec.Struct):
    """One property that failed, with hypothesis's minimal failing event."""

    property: str  # one of PROPERTIES, or "generation" when no event could be generated
    message: str
    #: the shrunk event: stream, event_id, stored type, metadata and data (decoded JSON)
    example: dict[str, Any] | None = None
    #: the failure did not reproduce when hypothesis replayed the example
    flaky: bool = False
    #: more lines: an example's differences, the code that closes a schema gap
    details: list[str] = []


class NodeReport(msgspec.Struct):
    """What was checked for one ``(type, version)``."""

    type: str
    version: int
    role: str  # "head" | "upcast" | "dropped"
    #: each route to a head, e.g. "OrderPlaced v1 -> OrderPlaced v2 via upcasters.orders.order_total_in_cents"
    chain: list[str]
    generated: bool
    examples: int = 0  # test cases run, boundary values and shrinking included
    #: examples (registered, or from a file of cases) run from this node
    cases: int = 0
    note: str = ""
    failures: list[Failure] = []

    @property
    def name(self) -> str:
        return f"{self.type} v{self.version}"


class RegistryReport(msgspec.Struct):
    """The outcome of :func:`check_upcasters`: one entry per ``(type, version)`` of the registry."""

    ok: bool
    examples: int  # the most examples tried per node
    nodes: list[NodeReport]
    #: nodes whose events could not be generated (no schema), named with the reason
    not_generated: list[str] = []
    #: whether the laws and schema gaps were checked (the default)
    strict: bool = True

    @property
    def failures(self) -> list[tuple[NodeReport, Failure]]:
        return [(n, f) for n in self.nodes for f in n.failures]

    def format(self) -> str:
        """A readable account: every failure with its chain and minimal example, then what was skipped."""
        lines: list[str] = []
        for node, failure in self.failures:
            lines.append(f"{node.name}: property {failure.property!r} failed{' (flaky)' if failure.flaky else ''}")
            lines.append(f"  {failure.message}")
            lines.extend(f"    {line}" for line in failure.details)
            for route in node.chain:
                lines.append(f"  chain: {route}")
            if failure.example is not None:
                lines.append("  minimal example:")
                lines.extend(f"    {k}: {_short(v)}" for k, v in failure.example.items())
        checked = sum(n.generated for n in self.nodes)
        failed = len({id(n) for n, _ in self.failures})
        cases = sum(n.cases for n in self.nodes)
        summary = f"{checked} schema(s) checked with boundary values and {self.examples} generated examples each"
        summary += f", {cases} example(s) of outputs" + ("" if self.strict else ", not strict")
        lines.append(f"{summary}: {'all properties hold' if self.ok else f'{failed} failed'}")
        for item in self.not_generated:
            lines.append(f"not generated: {item}")
        return "\n".join(lines)


class CheckFailed(AssertionError):
    """Raised by :func:`assert_upcasters`; carries the report."""

    def __init__(self, report: RegistryReport) -> None:
        super().__init__(report.format())
        self.report = report


def assert_upcasters(registry: Registry | CompiledRegistry, **options: Any) -> RegistryReport:
    """:func:`check_upcasters`, raising :class:`CheckFailed` (an AssertionError) if a property fails."""
    report = check_upcasters(registry, **options)
    if not report.ok:
        raise CheckFailed(report)
    return report


def check_upcasters(
    registry: Registry | CompiledRegistry,
    *,
    examples: int = DEFAULT_EXAMPLES,
    derandomize: bool = True,
    seed: int | None = None,
    nodes: Iterable[Node] | None = None,
    on_node: Callable[[NodeReport], None] | None = None,
    strict: bool = True,
    cases: str | Path | Sequence[Example] | None = None,
    include_examples: bool = True,
    include_properties: bool = True,
) -> RegistryReport:
    """Run the checks on every ``(type, version)`` of ``registry`` (or only ``nodes``).

    ``examples`` is hypothesis's ``max_examples`` per node, generated after
    the boundary values. By default the generation is derandomized, so a CI
    gate gives the same verdict on every run of the same code; pass
    ``derandomize=False`` to explore anew each time, or a ``seed`` to
    reproduce a particular run. ``strict`` (the default) adds the laws and
    the schema gaps. The registry's examples run with those of ``cases`` (a
    file of cases, or examples); ``include_examples=False`` leaves all out,
    ``include_properties=False`` runs nothing else. ``on_node`` is called
    with each node's report as soon as it is checked (progress). Raises
    :class:`~eventmig.errors.RegistryError` if the registry does not compile.
    """
    compiled = registry.compile() if isinstance(registry, Registry) else registry
    reg = compiled.registry
    if examples < 1:
        raise ValueError("examples must be at least 1")
    every = set(reg.schemas) | set(reg.steps) | {t for s in reg.steps.values() for t in s.targets}
    given_examples = all_examples(compiled, cases) if include_examples else []
    by_node: dict[Node, list[Example]] = {}
    for e in given_examples:
        by_node.setdefault(e.node, []).append(e)
    chosen = (every | set(by_node)) if nodes is None else set(nodes)
    wanted = sorted(n for n in chosen if n in every or n in by_node)
    config = check_settings(examples, derandomize=derandomize and seed is None)
    gaps: dict[Node, list[Gap]] = {}
    for gap in schema_gaps(compiled):
        gaps.setdefault(gap.node, []).append(gap)
    reports: list[NodeReport] = []
    not_generated: list[str] = []
    for node in wanted:
        report = _check_node(
            compiled, node, config, seed, strict=strict, gaps=gaps.get(node, []),
            examples=by_node.get(node, []), properties=include_properties and node in every,
        )
        if not report.generated and not report.failures and report.note:
            not_generated.append(f"{report.name}: {report.note}")
        reports.append(report)
        if on_node is not None:
            on_node(report)
    ok = not any(r.failures for r in reports)
    return RegistryReport(ok, examples, reports, not_generated, strict)


def all_examples(compiled: CompiledRegistry, cases: str | Path | Sequence[Example] | None) -> list[Example]:
    """The registry's examples, then those of ``cases`` (a cases file's path, or examples)."""
    extra: Sequence[Example] = () if cases is None else (
        load_cases(cases) if isinstance(cases, (str, Path)) else cases
    )
    return [*compiled.registry.examples, *extra]


# --------------------------------------------------------------------- one node
class _PropertyFailed(Exception):
    """Raised inside the hypothesis test; the last one raised carries the shrunk example."""

    def __init__(self, prop: str, message: str, event: RecordedEvent) -> None:
        super().__init__(f"{prop}: {message}")
        self.prop, self.message, self.event = prop, message, event


def _check_node(
    compiled: CompiledRegistry, node: Node, config: settings, seed: int | None, *,
    strict: bool, gaps: list[Gap], examples: list[Example], properties: bool,
) -> NodeReport:
    reg = compiled.registry
    step = reg.steps.get(node)
    role = "head" if compiled.is_head(node) else ("dropped" if step is not None and not step.targets else "upcast")
    if not compiled.knows(node[0]):
        role = "unknown"
    report = NodeReport(node[0], node[1], role, _routes(compiled, node), generated=False)
    for e in examples:
        report.cases += 1
        found = run_example(compiled, e)
        if found is not None:
            given = {"name": e.name, "type": e.type, "version": e.version, "data": e.data}
            report.failures.append(Failure("example", found[0], given, details=found[1]))
    if not properties:
        return report
    for gap in gaps:
        if strict:
            report.failures.append(Failure("schemas", gap.message, details=list(gap.details)))
        else:
            report.note = "; ".join([*filter(None, [report.note]), gap.message, *gap.details])
    plan = laws.plan_step(reg, step) if strict and step is not None else None
    if plan is not None:
        report.failures.extend(Failure("declarations", problem) for problem in plan.problems)
    if schema_for(compiled, *node) is None:
        if gaps and strict:
            return report
        if role == "head":
            report.note = report.note or "no schema to generate from; outputs reaching this head are not validated"
        elif role == "dropped":
            report.note = f"cannot generate without a schema; {step.name} drops it, so nothing reaches the new epoch"
        else:
            report.note = report.note or f"cannot generate without a schema: {step.name if step else 'its step'} takes plain dicts"
        return report
    _run_properties(compiled, node, config, seed, plan, report)
    return report


def _run_properties(
    compiled: CompiledRegistry, node: Node, config: settings, seed: int | None,
    plan: laws.StepPlan | None, report: NodeReport,
) -> None:
    """The hypothesis run of one node: its boundary events first, then generated ones."""
    calls = 0

    def property_holds(event: RecordedEvent) -> None:
        nonlocal calls
        calls += 1
        _check_event(compiled, node, event, plan)

    try:
        events = stored_events(compiled, *node)
    except TypeError as exc:  # a field type with no strategy, e.g. a custom type msgspec handles through hooks
        report.failures.append(Failure("generation", f"could not generate events: {exc}"))
        return
    report.generated = True
    run: Callable[..., None] = property_holds
    for event in reversed(boundary_events(compiled, *node)):  # hypothesis runs the last one added first
        run = explicit_example(event)(run)
    test: Callable[[], None] = config(given(events)(run))
    if seed is not None:
        test = hypothesis_seed(seed)(test)
    try:
        test()
    except _PropertyFailed as exc:
        report.failures.append(_failure(exc))
    except (FailedHealthCheck, Unsatisfiable) as exc:
        report.failures.append(Failure("generation", f"could not generate events: {first_line(exc)}"))
    except BaseExceptionGroup as group:  # several distinct failures, or a flaky one
        found = _leaves(group)
        if not found or any(not isinstance(e, _PropertyFailed) for e in found):
            raise
        flaky = _is_flaky(group)
        seen: set[str] = set()
        for exc in found:  # one per property: boundary values fail in order, the simplest first
            assert isinstance(exc, _PropertyFailed)
            if exc.prop not in seen:
                seen.add(exc.prop)
                report.failures.append(_failure(exc, flaky=flaky))
    except Exception as exc:  # noqa: BLE001 (the properties wrap all they run: this came from generation)
        # e.g. constraints no value meets (min_length above max_length), or a
        # registered strategy whose values msgspec cannot turn into JSON
        report.failures.append(
            Failure("generation", f"could not generate events: {type(exc).__name__}: {first_line(exc)}")
        )
    report.examples = calls


def _check_event(compiled: CompiledRegistry, node: Node, event: RecordedEvent, plan: laws.StepPlan | None) -> None:
    """Every property for one generated event; raises _PropertyFailed on the first that fails."""
    metadata = _decode(event.metadata)
    context = EventContext(event.stream, node[0], node[1], metadata, event.event_id, event.recorded_at)

    try:
        first = compiled.upcast(node[0], node[1], event.data, context)
    except UpcastError as exc:
        # the chain validates its outputs against the head schemas itself
        prop = "reaches heads" if any(m in str(exc) for m in _SCHEMA_MISMATCHES) else "upcasts"
        raise _PropertyFailed(prop, str(exc), event) from None
    except Exception as exc:  # noqa: BLE001 (not wrapped by the chain: the engine itself or an encoder failed)
        raise _PropertyFailed("upcasts", f"{type(exc).__name__}: {exc}", event) from None

    _check_heads(compiled, first, event)
    try:
        second = compiled.upcast(node[0], node[1], event.data, context)
    except Exception as exc:  # noqa: BLE001 (whatever the service code raises is the finding)
        raise _PropertyFailed("deterministic", f"failed the second time only: {exc}", event) from None
    if _produced(first.events) != _produced(second.events):
        raise _PropertyFailed(
            "deterministic",
            f"the same event upcast twice gave different outputs: {_show(first.events)} then {_show(second.events)}",
            event,
        )

    if compiled.is_head(node):
        expected = [(node[0], node[1], canonical_json(_decode(event.data)))]
        if first.kind != "head" or _produced(first.events) != expected:
            raise _PropertyFailed("head unchanged", f"an event at its head came out as {_show(first.events)}", event)
        return

    written = _written(compiled, node, event, context)
    if written != _produced(first.events):
        raise _PropertyFailed(
            "verifies",
            f"migrate writes what reads back as {_show(written)} but verify expects {_show(first.events)}",
            event,
        )

    step = compiled.registry.steps.get(node)
    if step is None or not step.targets:
        return
    stepwise = _stepwise(compiled, node, event, metadata)
    if stepwise != _produced(first.events):
        raise _PropertyFailed(
            "stepwise",
            f"the chain gave {_show(first.events)} but {step.name} followed by upcasting its outputs "
            f"from their own versions gave {_show(stepwise)}",
            event,
        )
    if plan is not None:
        try:
            laws.check_outputs(plan, compiled, event.data, compiled.apply_step(node, event.data, context))
        except laws.Broken as broken:
            raise _PropertyFailed(broken.prop, broken.message, event) from None


def _check_heads(compiled: CompiledRegistry, outcome: Outcome, event: RecordedEvent) -> None:
    """Every output is at its type's head and decodes as its schema."""
    for t, v, data, path in outcome.events:
        via = f" (after {' -> '.join(path)})" if path else ""
        if compiled.knows(t) and not compiled.is_head((t, v)):
            head = compiled.heads.get(t)
            raise _PropertyFailed("reaches heads", f"produced {t} v{v}, which is not the head (v{head}){via}", event)
        schema = compiled.registry.schemas.get((t, v))
        if schema is not None:
            try:
                msgspec.json.decode(data, type=schema)
            except msgspec.ValidationError as exc:
                raise _PropertyFailed(
                    "reaches heads", f"{t} v{v} does not match its head schema {schema.__qualname__}{via}: {exc}", event
                ) from None


def _written(
    compiled: CompiledRegistry, node: Node, event: RecordedEvent, context: EventContext
) -> list[tuple[str, int, bytes]]:
    """The outputs as migrate writes them, canonicalised as verify reads them back."""
    try:
        outcome = compiled.upcast(node[0], node[1], event.data, context, canonical=False)
        return [(t, v, canonical_json(_decode(data))) for t, v, data, _ in outcome.events]
    except Exception as exc:  # noqa: BLE001 (whatever the service code raises is the finding)
        raise _PropertyFailed(
            "verifies", f"upcasting as migrate writes failed: {type(exc).__name__}: {exc}", event
        ) from None


def _stepwise(
    compiled: CompiledRegistry, node: Node, event: RecordedEvent, metadata: dict[str, Any]
) -> list[tuple[str, int, bytes]]:
    """Run only the first step, encode its outputs, and upcast each as an event stored at its node."""
    reg = compiled.registry
    step = reg.steps[node]
    location = compiled.version_location
    context = EventContext(event.stream, node[0], node[1], metadata, event.event_id, event.recorded_at)
    try:
        outputs = compiled.apply_step(node, event.data, context)
        produced: list[tuple[str, int, bytes]] = []
        for (t, v), obj in outputs:
            data = canonical_json(obj)
            meta = {k: val for k, val in metadata.items() if k not in location.metadata_keys}
            location.write(t, v, meta)
            target_context = EventContext(event.stream, t, v, meta, event.event_id, event.recorded_at)
            produced.extend(_produced(compiled.upcast(t, v, data, target_context).events))
    except Exception as exc:  # noqa: BLE001 (whatever the service code raises is the finding)
        raise _PropertyFailed(
            "stepwise", f"{step.name} followed by upcasting its outputs from their own versions failed: "
            f"{type(exc).__name__}: {exc}", event,
        ) from None
    return produced


# ------------------------------------------------------------------- reporting
def _routes(compiled: CompiledRegistry, node: Node) -> list[str]:
    steps = compiled.registry.steps
    routes = []
    for path in compiled.paths(node):
        names = [f"{t} v{v}" if t != "(dropped)" else "dropped" for t, v in path]
        via = [steps[n].name for n in path if n in steps]
        routes.append(" -> ".join(names) + (f" via {', '.join(via)}" if via else " (head)"))
    return routes


def _failure(exc: _PropertyFailed, *, flaky: bool = False) -> Failure:
    e = exc.event
    try:
        metadata: Any = _decode(e.metadata)
        data: Any = _decode(e.data)
    except (msgspec.DecodeError, RecursionError):
        metadata, data = e.metadata.decode(errors="replace"), e.data.decode(errors="replace")
    example = {"stream": e.stream, "event_id": e.event_id, "type": e.type, "metadata": metadata, "data": data}
    return Failure(exc.prop, exc.message, example, flaky)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _is_flaky(group: BaseExceptionGroup) -> bool:
    return isinstance(group, Flaky)


def _produced(events: list[tuple[str, int, bytes, tuple[str, ...]]] | list[tuple[str, int, bytes]]) -> list[tuple[str, int, bytes]]:
    return [(e[0], e[1], e[2]) for e in events]


def _show(events: Iterable[tuple[Any, ...]]) -> str:
    shown = [f"{e[0]} v{e[1]} {_short(e[2].decode(errors='replace'))}" for e in events]
    return "[" + ", ".join(shown) + "]" if shown else "nothing"


def _short(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
