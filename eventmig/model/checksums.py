"""Digests of events, streams and whole stores, and their comparison.

What a digest covers is what ``verify`` promises (see the README):

* event: blake2b over the canonical bytes of its type, schema version,
  event id, record time, payload as sorted-key JSON and metadata as
  sorted-key JSON without the keys eventmig owns (lineage, and the schema
  version, which is hashed as itself): :func:`event_hash`, a 128-bit int;
* stream: the sum, modulo the prime ``P = 2**127 - 1``, of each event's
  hash times ``R ** v``, where ``v`` is the event's stream version and
  ``R`` a primitive root of ``P``. The version weighs the hash, so order is
  part of the digest: two swapped versions, a renumbered one, a duplicate,
  a deletion or an event moved to another stream change it, while the
  commit order of events that read the same does not. And since the sum of
  a run of events can be moved by whole versions later (times ``R ** k``),
  a worker digests a slice of events numbering them from 0 in each stream,
  and the parent shifts each stream's part to where its numbering really
  starts: one multiplication per stream and slice, not one hash per event;
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

from eventmig.model.events import canonical_json

_MOD = 1 << 128
#: the prime stream digests are computed modulo (a Mersenne prime: 2**127 - 1)
P = (1 << 127) - 1
#: a primitive root of P (its powers take every nonzero value before repeating, so no two versions
#: below P - 1 weigh alike); found from a hash, so it has no structure of its own
R = 0x6C0967F1FDC4528D0926022239F7BB0B
_blake2b = hashlib.blake2b
_header = msgspec.json.Encoder().encode

# R ** v mod P for v < 2**16 (LOW, grown as versions need it) and R ** (v * 2**16) (HIGH): any version
# below 2**32 weighs two lookups and a multiplication, where pow() would cost fifty times more
_LOW: list[int] = [1]
_HIGH: list[int] = [1]
_SPLIT = 16
_LOW_SIZE = 1 << _SPLIT


def event_hash(type_: str, version: int, event_id: Any, recorded_at: Any, data: bytes, metadata: bytes) -> int:
    """Hash of one event, as an int of 128 bits. ``data`` and ``metadata`` must be canonical JSON bytes.

    Canonical JSON never holds a raw newline, so newline separators make the
    encoding unambiguous.
    """
    header = _header((type_, version, event_id, recorded_at))
    return int.from_bytes(_blake2b(b"\n".join((header, data, metadata)), digest_size=16).digest(), "big")


def weight(version: int) -> int:
    """``R ** version mod P``: what an event's hash is multiplied by at that stream version."""
    if 0 <= version < len(_LOW):
        return _LOW[version]
    if 0 <= version < 1 << (2 * _SPLIT):
        low, high = version & (_LOW_SIZE - 1), version >> _SPLIT
        _grow(_LOW, min(max(low + 1, 2 * len(_LOW)), _LOW_SIZE), R)
        if high:
            _grow(_HIGH, high + 1, pow(R, _LOW_SIZE, P))
            return _LOW[low] * _HIGH[high] % P
        return _LOW[low]
    return pow(R, version, P)  # a version no stream reaches; a tampered row may hold anything


def _grow(table: list[int], size: int, step: int) -> None:
    last = table[-1]
    for _ in range(len(table), size):
        last = last * step % P
        table.append(last)


def weights() -> list[int]:
    """The table behind :func:`weight` for small versions, for hot loops: ``w[v] if 0 <= v < len(w)``
    (it only grows, so a length read once stays valid)."""
    weight(4095)
    return _LOW


def metadata_bytes(metadata: Mapping[str, Any]) -> bytes:
    return canonical_json(metadata)


class Malformed(msgspec.Struct, frozen=True, array_like=True):
    """An event that could not be read as an event: where it is and why."""

    stream: str
    version: Any
    position: int
    reason: str


class StreamDigests:
    """Accumulates per-stream digests, event counts and (type, version) counts for one side.

    Parts come from workers as ``{stream: (sum, events)}``: either already
    weighed by the versions the events carry (:meth:`add_versioned`, the
    target), or numbered from 0 within the part, to be numbered on from
    what came before (:meth:`add_numbered`, the expected side: parts must
    then come in commit order). ``malformed`` keeps the first malformed
    event of each stream: such a stream differs whatever its sum.
    """

    __slots__ = ("sums", "lengths", "counts", "events", "malformed", "first_version")

    def __init__(self, first_version: int = 1) -> None:
        self.sums: dict[str, int] = {}
        self.lengths: dict[str, int] = {}
        self.counts: Counter[tuple[str, int]] = Counter()
        self.events = 0
        self.malformed: dict[str, Malformed] = {}
        self.first_version = first_version

    def add_versioned(self, parts: Mapping[str, tuple[int, int]]) -> None:
        sums, lengths = self.sums, self.lengths
        n = 0
        for stream, (total, events) in parts.items():
            sums[stream] = (sums.get(stream, 0) + total) % P
            lengths[stream] = lengths.get(stream, 0) + events
            n += events
        self.events += n

    def add_numbered(self, parts: Mapping[str, tuple[int, int]]) -> None:
        sums, lengths, first = self.sums, self.lengths, self.first_version
        low = _LOW
        n = 0
        for stream, (total, events) in parts.items():
            done = lengths.get(stream, 0)
            at = first + done
            w = low[at] if 0 <= at < len(low) else weight(at)
            sums[stream] = (sums.get(stream, 0) + total * w) % P
            lengths[stream] = done + events
            n += events
        self.events += n

    def add_malformed(self, rows: Iterable[Malformed]) -> None:
        for row in rows:
            self.malformed.setdefault(row.stream, row)
            # the stream's digest changes too, so the store's digest says so as well
            self.sums[row.stream] = (self.sums.get(row.stream, 0) + event_hash("", 0, row.position, None, b"", b"")) % P

    def digest(self, stream: str) -> bytes:
        return self.sums[stream].to_bytes(16, "big")

    def store_digest(self) -> str:
        return combine((s, self.digest(s)) for s in self.sums)


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
    different: list[str] = field(default_factory=list)  # both sides, digests differ (or a row is malformed)
    count_differences: dict[str, tuple[int, int]] = field(default_factory=dict)  # "T vN": (expected, actual)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different or self.count_differences)

    @property
    def differing_streams(self) -> list[str]:
        return sorted(self.missing + self.unexpected + self.different)


def compare(expected: StreamDigests, actual: StreamDigests) -> Comparison:
    exp, act = expected.sums, actual.sums
    result = Comparison(expected.store_digest(), actual.store_digest(), len(exp.keys() | act.keys()))
    result.missing = sorted(exp.keys() - act.keys())
    result.unexpected = sorted(act.keys() - exp.keys())
    result.different = sorted(
        s for s in exp.keys() & act.keys()
        if exp[s] != act[s] or s in actual.malformed or s in expected.malformed
    )
    for node in sorted(expected.counts.keys() | actual.counts.keys()):
        e, a = expected.counts.get(node, 0), actual.counts.get(node, 0)
        if e != a:
            result.count_differences[f"{node[0]} v{node[1]}"] = (e, a)
    return result
