"""Examples of what the chains must produce: running them, a file of cases, and recording new ones.

An example is an event at an old version and the head events it must
become (:class:`~eventmig.model.declared.Example`). Service code registers them
next to its steps with ``registry.example(...)``; a file of cases holds more
(``upcaster-cases.json`` next to ``pyproject.toml``, or ``cases = "..."`` in
``[tool.eventmig]``)::

    {"cases": [
      {"name": "12.29 euros",
       "given": {"type": "MoneyDeposited", "version": 1, "data": {"account_id": "a", "amount": 12.29, ...}},
       "becomes": [{"type": "MoneyDeposited", "version": 2, "data": {"account_id": "a", "amount_cents": 1229, ...}}]}
    ]}

Recording, as snapshot tools do it, makes adoption cheap: ``eventmig check
--record`` upcasts sampled stored events (or generated ones, without a
store) with the current steps and writes what they become to a pending file
beside the cases (``upcaster-cases.json.new``), printing each for review;
``eventmig check --accept`` moves them into the cases file. Nothing recorded
counts until accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
import msgspec.structs

from eventmig.model.declared import Example
from eventmig.errors import ConfigError, UpcastError
from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import EventContext, Node

__all__ = [
    "CASES_FILE",
    "accept_pending",
    "dump_cases",
    "load_cases",
    "pending_path",
    "record_examples",
    "run_example",
]

CASES_FILE = "upcaster-cases.json"
PENDING_SUFFIX = ".new"

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class _Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    type: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    data: Any
    metadata: dict[str, Any] = {}


class _Case(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    given: _Event
    becomes: list[_Event]


class _CasesFile(msgspec.Struct, forbid_unknown_fields=True):
    cases: list[_Case]


# ------------------------------------------------------------------ the file
def load_cases(path: str | Path) -> list[Example]:
    """The examples of a cases file; a file that is not one is a configuration error (exit 2)."""
    path = Path(path)
    try:
        parsed = msgspec.json.decode(path.read_bytes(), type=_CasesFile)
    except FileNotFoundError:
        raise ConfigError(f"cases file {path} does not exist") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path} is not a file of upcaster cases: {exc}") from None
    return [
        Example(
            c.given.type, c.given.version, c.given.data,
            tuple((o.type, o.version, o.data) for o in c.becomes),
            c.name, f"{path.name} #{i}", c.given.metadata,
        )
        for i, c in enumerate(parsed.cases, 1)
    ]


def dump_cases(examples: Iterable[Example]) -> bytes:
    """A cases file holding ``examples``, indented for review in a diff."""
    cases = [
        _Case(e.name, _Event(e.type, e.version, e.data, dict(e.metadata)),
              [_Event(t, v, d) for t, v, d in e.becomes])
        for e in examples
    ]
    return msgspec.json.format(_encode(_CasesFile(cases)), indent=2) + b"\n"


def pending_path(path: str | Path) -> Path:
    """Where recorded cases wait for review: beside the cases file, with ``.new`` added."""
    path = Path(path)
    return path.with_name(path.name + PENDING_SUFFIX)


def accept_pending(path: str | Path) -> list[Example]:
    """Move the recorded cases of ``path``'s pending file into ``path``; returns those accepted."""
    path = Path(path)
    pending = pending_path(path)
    if not pending.exists():
        raise ConfigError(f"nothing to accept: {pending} does not exist (record cases with eventmig check --record)")
    recorded = load_cases(pending)
    kept = load_cases(path) if path.exists() else []
    known = {_given_key(e) for e in kept}
    accepted = [e for e in recorded if _given_key(e) not in known]
    path.write_bytes(dump_cases(_unique_names([*kept, *accepted])))
    pending.unlink()
    return accepted


# ------------------------------------------------------------------- running
def run_example(compiled: CompiledRegistry, example: Example) -> tuple[str, list[str]] | None:
    """Upcast the example's event; None if it becomes what it should, else a message and a diff."""
    context = EventContext("example", example.type, example.version, dict(example.metadata))
    where = f"example {example.name!r} ({example.origin})" if example.origin else f"example {example.name!r}"
    try:
        outcome = compiled.upcast(example.type, example.version, _encode(example.data), context)
    except UpcastError as exc:
        return f"{where}: upcasting it failed: {exc}", []
    got = [(t, v, _decode(data)) for t, v, data, _ in outcome.events]
    diff = diff_outputs(compiled, list(example.becomes), got)
    if not diff:
        return None
    return f"{where}: {example.type} v{example.version} does not become what it should", diff


def diff_outputs(
    compiled: CompiledRegistry, expected: Sequence[tuple[str, int, Any]], got: Sequence[tuple[str, int, Any]]
) -> list[str]:
    """Readable differences, output by output and field by field; [] when equal.

    Payloads compare as the JSON written, where a field left out equals its
    schema default (``0`` is not ``0.0``, and ``-0.0`` is not ``0.0``).
    """
    from eventmig.testing.laws import same

    lines: list[str] = []
    for i in range(max(len(expected), len(got))):
        want = expected[i] if i < len(expected) else None
        have = got[i] if i < len(got) else None
        if have is None:
            lines.append(f"- output {i + 1}: {_name(want)} {_short(want[2])} is missing")  # type: ignore[index]
            continue
        if want is None:
            lines.append(f"+ output {i + 1}: {_name(have)} {_short(have[2])} was not expected")
            continue
        if (want[0], want[1]) != (have[0], have[1]):
            lines.append(f"  output {i + 1}: expected {_name(want)} {_short(want[2])}")
            lines.append(f"  {' ' * len(str(i + 1))}        got {_name(have)} {_short(have[2])}")
            continue
        a, b = _filled(compiled, want), _filled(compiled, have)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys()):
                if key not in b:
                    lines.append(f"  output {i + 1} {_name(have)}.{key}: expected {_short(a[key])}, missing")
                elif key not in a:
                    lines.append(f"  output {i + 1} {_name(have)}.{key}: {_short(b[key])} was not expected")
                elif not same(a[key], b[key]):
                    lines.append(f"  output {i + 1} {_name(have)}.{key}: expected {_short(a[key])}, got {_short(b[key])}")
        elif not same(a, b):
            lines.append(f"  output {i + 1} {_name(have)}: expected {_short(a)}, got {_short(b)}")
    return lines


def _filled(compiled: CompiledRegistry, event: tuple[str, int, Any]) -> Any:
    """The payload with every absent defaulted field of its schema filled in, as a reader sees it."""
    schema = compiled.registry.schemas.get((event[0], event[1]))
    data = event[2]
    if schema is None or not isinstance(data, dict):
        return data
    filled = dict(data)
    for f in msgspec.structs.fields(schema):
        if not f.required and f.encode_name not in filled:
            value = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
            if value is not msgspec.UNSET:
                filled[f.encode_name] = msgspec.to_builtins(value)
    return filled


# ----------------------------------------------------------------- recording
def record_examples(
    compiled: CompiledRegistry,
    inputs: Iterable[tuple[str, int, Any, dict[str, Any], str]],
    known: Iterable[Example] = (),
) -> tuple[list[Example], list[str]]:
    """Upcast each ``(type, version, data, metadata, name)`` and record what it becomes.

    Returns the new examples (none for an input a known example already
    has) and, for inputs that fail to upcast, why they were not recorded.
    """
    seen = {_given_key(e) for e in known}
    recorded: list[Example] = []
    skipped: list[str] = []
    for t, v, data, metadata, name in inputs:
        key = (t, v, _encode(data))
        if key in seen:
            continue
        seen.add(key)
        try:
            outcome = compiled.upcast(t, v, _encode(data), EventContext("example", t, v, metadata))
        except UpcastError as exc:
            skipped.append(f"{name}: not recorded, it does not upcast: {exc}")
            continue
        becomes = tuple((ot, ov, _decode(d)) for ot, ov, d, _ in outcome.events)
        recorded.append(Example(t, v, data, becomes, name, "recorded", metadata))
    return recorded, skipped


def generated_inputs(compiled: CompiledRegistry, per_node: int) -> list[tuple[str, int, Any, dict[str, Any], str]]:
    """Inputs to record where no store holds events: per upcast node with a schema, its simplest
    boundary payload and the first generated ones (derandomized: the same on every run)."""
    from hypothesis import Phase, given, settings

    from eventmig.testing.boundaries import boundary_payloads
    from eventmig.testing.events import payloads, schema_for
    from eventmig.testing.profile import check_settings

    inputs = []
    for node, step in sorted(compiled.registry.steps.items()):
        schema = schema_for(compiled, *node)
        if schema is None or not step.targets:
            continue
        found: list[Any] = boundary_payloads(schema)[:1]
        run = settings(check_settings(per_node * 3), phases=(Phase.generate,))
        run(given(payloads(compiled, *node))(_collector(found, per_node)))()
        decode = msgspec.json.Decoder(schema).decode
        for i, payload in enumerate(found, 1):
            inputs.append((node[0], node[1], _readable(payload, i, decode), {}, f"{node[0]} v{node[1]} recorded {i}"))
    return inputs


def _readable(payload: Any, i: int, decode: Any) -> Any:
    """The payload with its text fields named after their keys ("reference 2"), each where the
    schema allows it: generated text is hard to review, and an example's strings rarely matter."""
    if not isinstance(payload, dict):
        return payload
    named = dict(payload)
    for key, value in payload.items():
        if isinstance(value, str):
            candidate = {**named, key: f"{key} {i}"}
            if _valid(decode, candidate):
                named = candidate
    return named


def _valid(decode: Any, payload: Any) -> bool:
    try:
        decode(_encode(payload))
    except Exception:  # noqa: BLE001 (a ValidationError, or a __post_init__ of the service's)
        return False
    return True


def _collector(found: list[Any], wanted: int) -> Any:
    def collect(payload: Any) -> None:
        if len(found) < wanted and all(_encode(payload) != _encode(f) for f in found):
            found.append(payload)

    return collect


def stored_inputs(compiled: CompiledRegistry, rows: Iterable[tuple[Any, ...]]) -> list[tuple[str, int, Any, dict[str, Any], str]]:
    """Inputs to record from sampled store rows, for the (type, version)s a step upcasts."""
    inputs = []
    location = compiled.version_location
    for stream, stream_version, _position, _event_id, stored_type, data, metadata, _at in rows:
        try:
            meta = _decode(metadata) if metadata else {}
            node: Node = location.read(stored_type, meta if isinstance(meta, dict) else {})
            payload = _decode(data)
        except (ValueError, msgspec.DecodeError):
            continue
        step = compiled.registry.steps.get(node)
        if step is None or not step.targets:
            continue
        user_meta = {k: v for k, v in meta.items() if k not in location.metadata_keys}
        inputs.append((node[0], node[1], payload, user_meta, f"{node[0]} v{node[1]} from {stream}@{stream_version}"))
    return inputs


def _given_key(example: Example) -> tuple[str, int, bytes]:
    return (example.type, example.version, _encode(example.data))


def _unique_names(examples: list[Example]) -> list[Example]:
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        n = seen.get(e.name, 0) + 1
        seen[e.name] = n
        out.append(e if n == 1 else Example(e.type, e.version, e.data, e.becomes, f"{e.name} ({n})", e.origin,
                                            e.metadata))
    return out


def _name(event: tuple[str, int, Any] | None) -> str:
    return "nothing" if event is None else f"{event[0]} v{event[1]}"


def _short(value: Any, limit: int = 200) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
