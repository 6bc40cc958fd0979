"""Digests of events, streams and whole stores, and their comparison.

* event: blake2b over the canonical bytes of (type, schema version, payload
  as sorted-key JSON, metadata as sorted-key JSON without the keys eventmig
  owns: lineage and the schema version, which is hashed as itself);
* stream: the event hashes chained in stream order, so a reordering shows;
* store or table: the stream (or row) digests combined by addition modulo
  2**128, independent of order, so two sides read in different orders, or
  in parallel, compare equal.

The same functions hash both sides of every comparison: that is the point.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .events import canonical_json

_MOD = 1 << 128
_blake2b = hashlib.blake2b
_header = msgspec.json.Encoder().encode


def event_hash(type_: str, version: int, data: bytes, metadata: bytes) -> bytes:
    """Hash of one event. ``data`` and ``metadata`` must be canonical JSON bytes.

    Canonical JSON never holds a raw newline, so newline separators make the
    encoding unambiguous.
    """
    return _blake2b(_header((type_, version)) + b"\n" + data + b"\n" + metadata, digest_size=16).digest()


def metadata_bytes(metadata: Mapping[str, Any]) -> bytes:
    return canonical_json(metadata)


class StreamDigests:
    """Accumulates per-stream chained digests and (type, version) counts for one side.

    Event hashes must be added in stream order (commit order will do).
    """

    __slots__ = ("streams", "counts", "events")

    def __init__(self) -> None:
        self.streams: dict[str, bytes] = {}
        self.counts: Counter[tuple[str, int]] = Counter()
        self.events = 0

    def add(self, stream: str, type_: str, version: int, data: bytes, metadata: bytes) -> None:
        self.add_hashes([(stream, event_hash(type_, version, data, metadata))])
        self.counts[(type_, version)] += 1

    def add_hashes(self, hashes: Iterable[tuple[str, bytes]]) -> None:
        """Chain already computed event hashes into their streams' digests."""
        streams, get = self.streams, self.streams.get
        n = 0
        for stream, h in hashes:
            streams[stream] = _blake2b(get(stream, b"") + h, digest_size=16).digest()
            n += 1
        self.events += n

    def store_digest(self) -> str:
        return combine(self.streams.items())


def combine(items: Iterable[tuple[str, bytes]]) -> str:
    """Order-independent digest of named digests (streams, or rows keyed by primary key)."""
    total = 0
    for name, digest in items:
        total += int.from_bytes(_blake2b(name.encode() + b"\n" + digest, digest_size=16).digest(), "big")
    return f"{total % _MOD:032x}"


@dataclass
class Comparison:
    """Where two sides differ, stream by stream and in counts per (type, version)."""

    expected_digest: str
    actual_digest: str
    streams_compared: int
    missing: list[str] = field(default_factory=list)  # expected, not in target
    unexpected: list[str] = field(default_factory=list)  # in target, not expected
    different: list[str] = field(default_factory=list)  # both sides, digests differ
    count_differences: dict[str, tuple[int, int]] = field(default_factory=dict)  # "T vN": (expected, actual)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different or self.count_differences)

    @property
    def differing_streams(self) -> list[str]:
        return sorted(self.missing + self.unexpected + self.different)


def compare(expected: StreamDigests, actual: StreamDigests) -> Comparison:
    exp, act = expected.streams, actual.streams
    result = Comparison(expected.store_digest(), actual.store_digest(), len(exp.keys() | act.keys()))
    result.missing = sorted(exp.keys() - act.keys())
    result.unexpected = sorted(act.keys() - exp.keys())
    result.different = sorted(s for s in exp.keys() & act.keys() if exp[s] != act[s])
    for node in sorted(expected.counts.keys() | actual.counts.keys()):
        e, a = expected.counts.get(node, 0), actual.counts.get(node, 0)
        if e != a:
            result.count_differences[f"{node[0]} v{node[1]}"] = (e, a)
    return result
