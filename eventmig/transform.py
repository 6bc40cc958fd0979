"""Turning source rows into target events: the CPU-bound core shared by migrate and verify.

Both jobs must treat every event identically, or verify would compare
against something migrate never wrote; so the per-event logic lives here
once. It is a pure function of a batch of rows, which is also what lets it
run in worker processes.

A row is a tuple in :class:`~eventmig.events.RecordedEvent` field order:
``(stream, version, position, event_id, type, data, metadata, recorded_at)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .errors import UpcastError
from .events import LINEAGE_KEY, canonical_json
from .upcasting import CompiledRegistry, EventContext, Node

Row = tuple[Any, ...]
StreamMap = Mapping[str, str] | Callable[[str], str] | None

_decode = msgspec.json.Decoder().decode
_blake2b = hashlib.blake2b


@dataclass
class Upcast:
    """One source event brought to its head schema(s), before it gets a target stream version."""

    row: Row
    stream: str
    user_metadata: dict[str, Any]
    outputs: list[tuple[str, int, bytes, tuple[str, ...]]]  # (type, version, canonical data, chain)


@dataclass
class BatchCounts:
    """What a batch held and became; merged across batches into a run's report."""

    read: int = 0
    written: int = 0
    unknown: int = 0
    dropped: int = 0
    quarantined: int = 0
    before: Counter[Node] = field(default_factory=Counter)
    after: Counter[Node] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def merge(self, other: BatchCounts) -> None:
        self.read += other.read
        self.written += other.written
        self.unknown += other.unknown
        self.dropped += other.dropped
        self.quarantined += other.quarantined
        self.before.update(other.before)
        self.after.update(other.after)
        self.reasons.update(other.reasons)

    def as_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "written": self.written,
            "unknown": self.unknown,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "before": {f"{t} v{v}": n for (t, v), n in sorted(self.before.items())},
            "after": {f"{t} v{v}": n for (t, v), n in sorted(self.after.items())},
            "reasons": dict(self.reasons.most_common()),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchCounts:
        def nodes(d: Mapping[str, int]) -> Counter[Node]:
            return Counter({(k.rsplit(" v", 1)[0], int(k.rsplit(" v", 1)[1])): n for k, n in d.items()})

        return cls(
            read=data.get("read", 0),
            written=data.get("written", 0),
            unknown=data.get("unknown", 0),
            dropped=data.get("dropped", 0),
            quarantined=data.get("quarantined", 0),
            before=nodes(data.get("before", {})),
            after=nodes(data.get("after", {})),
            reasons=Counter(data.get("reasons", {})),
        )


@dataclass
class BatchResult:
    upcasts: list[Upcast]
    failures: list[tuple[Row, str]]  # (row, reason): to quarantine
    counts: BatchCounts


class Transformer:
    """Upcasts rows through a compiled registry and maps their stream names."""

    def __init__(self, compiled: CompiledRegistry, stream_map: StreamMap = None) -> None:
        self.compiled = compiled
        self.location = compiled.version_location
        self.owned_keys = frozenset((*self.location.metadata_keys, LINEAGE_KEY))
        if stream_map is None:
            self.map_stream: Callable[[str], str] = _same
        elif callable(stream_map):
            self.map_stream = stream_map
        else:
            mapping = dict(stream_map)
            self.map_stream = lambda s: mapping.get(s, s)

    def transform(self, rows: list[Row]) -> BatchResult:
        counts = BatchCounts(read=len(rows))
        upcasts: list[Upcast] = []
        failures: list[tuple[Row, str]] = []
        compiled, location, owned = self.compiled, self.location, self.owned_keys
        upcast, needs_context, map_stream = compiled.upcast, compiled.needs_context, self.map_stream
        before, after = counts.before, counts.after
        for row in rows:
            stream, _version, _position, event_id, stored_type, data, metadata, recorded_at = row
            try:
                meta = _decode(metadata) if metadata else {}
                if type(meta) is not dict:
                    raise UpcastError("metadata is not a JSON object")
                type_, version = location.read(stored_type, meta)
                before[(type_, version)] += 1
                context = (
                    EventContext(stream, type_, version, meta, event_id, recorded_at) if needs_context else None
                )
                outcome = upcast(type_, version, data, context)
            except (UpcastError, ValueError, msgspec.DecodeError) as exc:
                reason = str(exc) if isinstance(exc, UpcastError) else f"unreadable event: {exc}"
                failures.append((row, reason))
                counts.reasons[_reason_kind(reason)] += 1
                continue
            if outcome.kind == "unknown":
                counts.unknown += 1
            elif outcome.kind == "dropped":
                counts.dropped += 1
            for t, v, _, _ in outcome.events:
                after[(t, v)] += 1
            counts.written += len(outcome.events)
            user_meta = {k: v for k, v in meta.items() if k not in owned} if owned & meta.keys() else meta
            upcasts.append(Upcast(row, map_stream(stream), user_meta, outcome.events))
        counts.quarantined = len(failures)
        return BatchResult(upcasts, failures, counts)


def target_event_id(source_event_id: str, index: int, count: int) -> str:
    """The id of output ``index`` of ``count`` produced from one source event.

    A one-to-one upcast keeps the source id: consumers that deduplicate by
    event id keep recognising the event. Splits derive ids by hashing, so
    every retry of a batch produces the same ids.
    """
    if count == 1:
        return source_event_id
    h = _blake2b(f"{source_event_id}/{index}".encode(), digest_size=16).hexdigest()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def target_metadata(
    upcast: Upcast, type_: str, version: int, chain: tuple[str, ...], location: Any, source_epoch: int
) -> tuple[str, bytes]:
    """The stored type name and metadata bytes of one output, with its lineage."""
    stream, source_version, position, event_id = upcast.row[:4]
    meta = dict(upcast.user_metadata)
    stored_type = location.write(type_, version, meta)
    meta[LINEAGE_KEY] = {
        "source": {"epoch": source_epoch, "stream": stream, "version": source_version, "position": position, "event_id": event_id},
        "chain": list(chain),
    }
    return stored_type, canonical_json(meta)


def _same(stream: str) -> str:
    return stream


def _reason_kind(reason: str) -> str:
    """Group quarantine reasons for the report: the text before the first colon."""
    return reason.split(":", 1)[0]
