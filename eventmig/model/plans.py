"""Upcast plans: per stored ``(type, version)``, one function from payload bytes to encoded head events.

:meth:`CompiledRegistry.upcast <eventmig.model.chains.CompiledRegistry.upcast>`
and the per-event loops of migrate and verify all go through these, so an
event is treated the same wherever it is upcast. What ``upcast`` used to
work out for every event (which decoder, which chain, which encoder, whether
the head holds sets or ``msgspec.Raw``, which head schema validates the
output) is worked out once per node and bound into a closure: a migration
sees a handful of nodes and millions of events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from eventmig.errors import UpcastError
from eventmig.model.events import canonical_json
from eventmig.model.events import encode_json as _encode_sorted
from eventmig.model.nesting import too_deep
from eventmig.model.steps import EventContext, Node, format_node

if TYPE_CHECKING:
    from eventmig.model.chains import CompiledRegistry

_json_decode = msgspec.json.Decoder().decode
_encode_fast = msgspec.json.Encoder().encode

#: an output: (type, version, encoded payload, step names)
Output = tuple[str, int, bytes, tuple[str, ...]]
#: how one stored node is upcast: its kind ("unknown", "head" or "upcast": "dropped" when it gives
#: nothing) and the function from payload bytes (and context) to outputs; raises UpcastError
Plan = tuple[str, Callable[[bytes, "EventContext | None"], list[Output]]]


class UpcastPlans:
    """The plans of one compiled registry, in canonical and in fast encoding, built on first use."""

    def __init__(self, compiled: CompiledRegistry) -> None:
        self.compiled = compiled
        self._plans: dict[tuple[str, int, bool], Plan] = {}

    def plan(self, type: str, version: int, canonical: bool) -> Plan:
        """How to upcast a stored ``(type, version)``; outputs canonical JSON or msgspec's field order."""
        key = (type, version, canonical)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._build((type, version), canonical)
        return plan

    def _build(self, node: Node, canonical: bool) -> Plan:
        compiled = self.compiled
        entry = compiled._entries.get(node)
        if entry is not None:
            return "upcast", self._chain_plan(node, entry, canonical)
        if not compiled.knows(node[0]):
            def unknown(data: bytes, context: EventContext | None) -> list[Output]:
                return [(node[0], node[1], _canonical(data, node), ())]
            return "unknown", unknown
        if not compiled.is_head(node):
            reason = compiled.why_no_path(node)

            def no_path(data: bytes, context: EventContext | None) -> list[Output]:
                raise UpcastError(reason)
            return "unknown", no_path
        validate = _validator(compiled._head_decoders.get(node), node)

        def head(data: bytes, context: EventContext | None) -> list[Output]:
            payload = _canonical(data, node)
            validate(payload, ())
            return [(node[0], node[1], payload, ())]
        return "head", head

    def _chain_plan(self, node: Node, entry: tuple[Callable[[bytes], Any], Any], canonical: bool) -> Callable[..., list[Output]]:
        compiled = self.compiled
        decode, chain = entry
        input_type = compiled.registry.steps[node].input_type
        shown = format_node(node)
        targets: dict[Node, tuple[Callable[[Any], bytes], bool, Callable[[bytes], Any] | None]] = {}

        def target(t: str, v: int) -> tuple[Callable[[Any], bytes], bool, Callable[[bytes], Any] | None]:
            head = (t, v)
            found = targets.get(head)
            if found is None:
                # the fast encoding writes a set in iteration order, which no reader can canonicalise: sorted
                encode = _encode_sorted if canonical or head in compiled._set_heads else _encode_fast
                # msgspec.Raw keeps its bytes, key order and all: canonical bytes need a decode and re-encode
                resort = canonical and head in compiled._raw_heads
                found = targets[head] = (encode, resort, compiled._head_decoders.get(head))
            return found

        def upcast(data: bytes, context: EventContext | None) -> list[Output]:
            try:
                try:
                    payload = decode(data)
                except msgspec.ValidationError as exc:
                    raise UpcastError(f"{shown} payload does not match {input_type.__qualname__}: {exc}") from None
                except msgspec.DecodeError as exc:
                    raise UpcastError(f"{shown} payload is not valid JSON: {exc}") from None
                out = []
                for t, v, obj, path in chain(payload, context):
                    encode, resort, head_decoder = targets.get((t, v)) or target(t, v)
                    try:
                        encoded = encode(obj)
                    except (TypeError, msgspec.EncodeError) as exc:
                        raise UpcastError(f"output of {' -> '.join(path)} cannot be encoded: {exc}") from None
                    if resort:
                        encoded = canonical_json(_json_decode(encoded))
                    if head_decoder is not None:
                        try:
                            head_decoder(encoded)
                        except msgspec.ValidationError as exc:
                            raise UpcastError(
                                f"{format_node((t, v))} payload does not match its head schema "
                                f"(after {' -> '.join(path)}): {exc}"
                            ) from None
                    out.append((t, v, encoded, path))
                return out
            except RecursionError:  # decoding or encoding the payload: a step's own errors are UpcastErrors by now
                raise UpcastError(f"{shown} {too_deep('payload', data)}") from None

        return upcast


def _validator(decoder: Callable[[bytes], Any] | None, node: Node) -> Callable[[bytes, tuple[str, ...]], None]:
    """Checks that encoded output matches the head schema of ``node`` (nothing to check without one)."""
    if decoder is None:
        return _no_check

    def validate(encoded: bytes, path: tuple[str, ...]) -> None:
        try:
            decoder(encoded)
        except msgspec.ValidationError as exc:
            via = f" (after {' -> '.join(path)})" if path else ""
            raise UpcastError(f"{format_node(node)} payload does not match its head schema{via}: {exc}") from None

    return validate


def _no_check(encoded: bytes, path: tuple[str, ...]) -> None:
    return None


def _canonical(data: bytes, node: Node) -> bytes:
    try:
        return canonical_json(_json_decode(data))
    except msgspec.DecodeError as exc:
        raise UpcastError(f"{format_node(node)} payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise UpcastError(f"{format_node(node)} {too_deep('payload', data)}") from None
