"""Turning source rows into target events: the CPU-bound core shared by migrate and verify.

Both jobs must treat every event identically, or verify would compare
against something migrate never wrote; so the per-event logic lives here
once. Its functions are pure functions of a batch of rows, which is what
lets them run in worker processes (see :mod:`eventmig.jobs.parallel`), and they
return compact tuples because results travel back to the parent.

A row is a tuple in :class:`~eventmig.model.events.RecordedEvent` field order:
``(stream, version, position, event_id, type, data, metadata, recorded_at)``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from eventmig.model.checksums import P, Malformed, weight, weights
from eventmig.errors import UpcastError
from eventmig.model.events import LINEAGE_KEY, canonical_json
from eventmig.model.nesting import too_deep
from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import EventContext, Node

Row = tuple[Any, ...]
StreamMap = Mapping[str, str] | Callable[[str], str] | None
#: an output ready to be numbered and written: (stream, event id, stored type, data, metadata, recorded at)
Prepared = tuple[str, str, str, bytes, bytes, int]

_decode = msgspec.json.Decoder().decode
_encode_fast = msgspec.json.Encoder().encode
_header = msgspec.json.Encoder().encode  # the header of an event's hash, as checksums.event_hash makes it
_blake2b = hashlib.blake2b


class SourceRef(msgspec.Struct, gc=False):
    """Where a migrated event came from, as its lineage metadata says (the same bytes as the
    equivalent dict, in this field order: a Struct is cheaper to build per event)."""

    epoch: int
    stream: str
    version: int
    position: int
    event_id: str


class Lineage(msgspec.Struct, gc=False):
    """The lineage a migrated event carries under :data:`~eventmig.model.events.LINEAGE_KEY`."""

    source: SourceRef
    chain: tuple[str, ...]


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
class PreparedBatch:
    """A batch upcast for writing: outputs in source commit order, failures to quarantine."""

    outputs: list[Prepared]
    failures: list[tuple[Row, str]]
    counts: BatchCounts
    #: streams of the batch that keep their name, which the stream map also gives to a renamed stream
    collisions: set[str] = field(default_factory=set)


#: an expected target event: (stream, type, schema version, canonical data, canonical user metadata,
#: event id, recorded at); the stream version is its place among its stream's
Expected = tuple[str, str, int, bytes, bytes, str, int]
#: a target event read back: (stream, stream version, position, type, schema version, canonical data,
#: canonical user metadata, event id, recorded at)
Actual = tuple[str, int, int, str, int, bytes, bytes, str, int]


@dataclass
class DigestedBatch:
    """A batch reduced to what verify compares.

    ``streams`` maps each stream to ``(sum, events)``: the sum of its events'
    hashes weighed by their stream versions (the target's, as stored; the
    expected side's numbered from 0 in this batch, see
    :class:`~eventmig.model.checksums.StreamDigests`), modulo ``P``.
    """

    streams: dict[str, tuple[int, int]]
    counts: Counter[Node]
    #: rows that could not be read: source events that do not upcast, target rows that are not events
    malformed: list[Malformed]


class Transformer:
    """Upcasts rows through a compiled registry and maps their stream names."""

    def __init__(self, compiled: CompiledRegistry, stream_map: StreamMap = None, source_epoch: int = 0) -> None:
        self.compiled = compiled
        self.location = compiled.version_location
        self.source_epoch = source_epoch
        self.owned_keys = (*self.location.metadata_keys, LINEAGE_KEY)
        #: new name -> old name, of the names a dict stream map gives to renamed streams that no other stream
        #: gives up: a stream of the source under one of them would merge with the renamed one
        self.renamed_onto: dict[str, str] = {}
        if stream_map is None:
            self.map_stream: Callable[[str], str] | None = None
        elif callable(stream_map):
            self.map_stream = stream_map
        else:
            mapping = dict(stream_map)
            self.map_stream = lambda s: mapping.get(s, s)
            self.renamed_onto = {new: old for old, new in mapping.items() if new not in mapping and new != old}

    def _upcast_rows(
        self, rows: list[Row], counts: BatchCounts, failures: list[tuple[Row, str]], canonical: bool = True
    ) -> Iterator[tuple[Row, dict[str, Any], list[tuple[str, int, bytes, tuple[str, ...]]]]]:
        """Yield ``(row, user metadata, outputs)`` per event that upcast; collect the rest.

        Each stored ``(type, version)`` is looked up once per batch (its
        :class:`~eventmig.model.plans.UpcastPlans` plan), not per event.
        """
        read_version, plan_of = self.location.read, self.compiled.plans.plan
        needs_context, owned = self.compiled.needs_context, self.owned_keys
        before, reasons = counts.before, counts.reasons
        plans: dict[tuple[str, int], tuple[str, Any]] = {}
        get_plan, decode = plans.get, _decode
        for row in rows:
            try:
                meta = decode(row[6]) if row[6] else {}
                if meta.__class__ is not dict:
                    raise UpcastError("metadata is not a JSON object")
                node = read_version(row[4], meta)
                found = get_plan(node)
                if found is None:
                    found = plans[node] = plan_of(node[0], node[1], canonical)
                before[node] += 1
                context = EventContext(row[0], node[0], node[1], meta, row[3], row[7]) if needs_context else None
                events = found[1](row[5], context)
            except (UpcastError, ValueError, msgspec.DecodeError) as exc:
                reason = str(exc) if isinstance(exc, UpcastError) else f"unreadable event: {exc}"
                failures.append((row, reason))
                reasons[reason.split(":", 1)[0]] += 1
                continue
            except RecursionError:  # the metadata: the plans word the payload's own
                reason = f"unreadable event: {too_deep('metadata', row[6])}"
                failures.append((row, reason))
                reasons[reason.split(":", 1)[0]] += 1
                continue
            if not events:
                counts.dropped += 1
                continue
            if found[0] == "unknown":
                counts.unknown += 1
            for key in owned:
                meta.pop(key, None)
            yield row, meta, events

    def prepare(self, rows: list[Row]) -> PreparedBatch:
        """Upcast rows for writing: target metadata (with lineage) encoded, ids assigned.

        The hottest loop of a migration, hence written flat, with locals bound up front.
        """
        counts = BatchCounts(read=len(rows))
        failures: list[tuple[Row, str]] = []
        outputs: list[Prepared] = []
        append, after = outputs.append, counts.after
        write_version, map_stream, epoch = self.location.write, self.map_stream, self.source_epoch
        taken, collisions = self.renamed_onto, set()
        # what is written need not be canonical: verify canonicalises what it reads back
        encode, lineage_key = _encode_fast, LINEAGE_KEY
        for row, meta, events in self._upcast_rows(rows, counts, failures, canonical=False):
            stream, source_version, position, event_id, _, _, _, recorded_at = row
            source = SourceRef(epoch, stream, source_version, position, event_id)
            if map_stream:
                target_stream = map_stream(stream)
                if stream in taken:
                    collisions.add(stream)
            else:
                target_stream = stream
            if len(events) == 1:
                type_, version, data, chain = events[0]
                stored_type = write_version(type_, version, meta)
                meta[lineage_key] = Lineage(source, chain)
                append((target_stream, event_id, stored_type, data, encode(meta), recorded_at))
                after[(type_, version)] += 1
                continue
            count = len(events)
            for index, (type_, version, data, chain) in enumerate(events):
                out_meta = dict(meta)
                stored_type = write_version(type_, version, out_meta)
                out_meta[lineage_key] = Lineage(source, chain)
                append((target_stream, target_event_id(event_id, index, count), stored_type, data,
                        encode(out_meta), recorded_at))
                after[(type_, version)] += 1
        counts.written = len(outputs)
        counts.quarantined = len(failures)
        return PreparedBatch(outputs, failures, counts, collisions)

    def survey(self, rows: list[Row]) -> PreparedBatch:
        """What :meth:`prepare` would count for these rows, without making the rows: the dry run's work.

        Every event is upcast and checked against its head schema as for
        writing, so the counts (and quarantine reasons) are the real run's;
        but no metadata is encoded, and neither outputs nor failed rows are
        sent back to the parent, which only adds up counts.
        """
        counts = BatchCounts(read=len(rows))
        failures: list[tuple[Row, str]] = []
        after, taken = counts.after, self.renamed_onto
        collisions: set[str] = set()
        written = 0
        for row, _meta, events in self._upcast_rows(rows, counts, failures, canonical=False):
            if taken and row[0] in taken:
                collisions.add(row[0])
            written += len(events)
            for type_, version, _data, _chain in events:
                after[(type_, version)] += 1
        counts.written = written
        counts.quarantined = len(failures)
        return PreparedBatch([], [], counts, collisions)

    def merge_problems(self, streams: Iterable[str], epoch: int) -> list[str]:
        """Why the stream map cannot be applied to these colliding streams of epoch ``epoch``, one line each."""
        return [
            f"stream map renames {self.renamed_onto[s]!r} onto {s!r}, a stream of epoch {epoch} that keeps its name "
            "(two histories would merge into one stream)"
            for s in sorted(streams)
        ]

    def expected(self, rows: list[Row], counts: BatchCounts, failures: list[tuple[Row, str]]) -> Iterator[Expected]:
        """The events migrate writes for these rows, in the form verify compares them: the one
        description of the expected side, shared by the digests and the explanation of a difference."""
        map_stream, derived_id = self.map_stream, target_event_id
        after = counts.after
        for row, meta, events in self._upcast_rows(rows, counts, failures):
            stream = map_stream(row[0]) if map_stream else row[0]
            meta_bytes = canonical_json(meta)
            event_id, recorded_at, count = row[3], row[7], len(events)
            for index, (type_, version, data, _chain) in enumerate(events):
                after[(type_, version)] += 1
                yield stream, type_, version, data, meta_bytes, event_id if count == 1 else derived_id(
                    event_id, index, count), recorded_at

    def digest_source(self, rows: list[Row]) -> DigestedBatch:
        """What verify expects the target to hold for these source rows, numbered from 0 in each stream.

        :meth:`expected` and :func:`~eventmig.model.checksums.event_hash`, written
        flat: the hottest loop of a verification.
        """
        counts = BatchCounts(read=len(rows))
        failures: list[tuple[Row, str]] = []
        parts: dict[str, list[int]] = {}  # stream -> [sum, events]
        get, after, map_stream, derived_id = parts.get, counts.after, self.map_stream, target_event_id
        header, blake2b, from_bytes, join = _header, _blake2b, int.from_bytes, b"\n".join
        low = weights()
        for row, meta, events in self._upcast_rows(rows, counts, failures):
            stream = map_stream(row[0]) if map_stream else row[0]
            meta_bytes = canonical_json(meta)
            event_id, recorded_at, count = row[3], row[7], len(events)
            part = get(stream)
            if part is None:
                part = parts[stream] = [0, 0]
            for index, (type_, version, data, _chain) in enumerate(events):
                after[(type_, version)] += 1
                if count > 1:
                    event_id = derived_id(row[3], index, count)
                h = from_bytes(blake2b(join((header((type_, version, event_id, recorded_at)), data, meta_bytes)),
                                       digest_size=16).digest(), "big")
                n = part[1]
                part[0] += h * (low[n] if n < len(low) else weight(n))
                part[1] = n + 1
        streams = {s: (part[0] % P, part[1]) for s, part in parts.items()}
        return DigestedBatch(streams, counts.after, [_malformed(row, reason) for row, reason in failures])

    def actual(self, row: Row) -> Actual:
        """A target row as verify compares it; raises one of :data:`MALFORMED` when it is not a readable event."""
        stream, stream_version, position, event_id, stored_type, data, metadata, recorded_at = row
        if type(stream_version) is not int:
            raise ValueError(f"stream version {stream_version!r} is not an integer")
        meta = _decode(metadata) if metadata else {}
        if type(meta) is not dict:
            raise ValueError("metadata is not a JSON object")
        type_, version = self.location.read(stored_type, meta)
        for key in self.owned_keys:
            meta.pop(key, None)
        return (stream, stream_version, position, type_, version, canonical_json(_decode(data)), canonical_json(meta),
                event_id, recorded_at)

    def digest_target(self, rows: list[Row]) -> DigestedBatch:
        """What the target holds, hashed the same way as :meth:`digest_source`, weighed by the stored versions.

        :meth:`actual` and :func:`~eventmig.model.checksums.event_hash`, written
        flat. A row that is not a readable event (a truncated payload, a
        schema version that is not an int, metadata that is not an object)
        is no reason to stop: it is counted as malformed, and its stream
        differs.
        """
        parts: dict[str, list[int]] = {}  # stream -> [sum, events]
        counts: Counter[Node] = Counter()
        malformed: list[Malformed] = []
        get, read_version, owned = parts.get, self.location.read, self.owned_keys
        header, blake2b, from_bytes, join, decode, canonical = _header, _blake2b, int.from_bytes, b"\n".join, _decode, canonical_json
        low = weights()
        for row in rows:
            stream, v, _position, event_id, stored_type, data, metadata, recorded_at = row
            try:
                if type(v) is not int:
                    raise ValueError(f"stream version {v!r} is not an integer")
                meta = decode(metadata) if metadata else {}
                if type(meta) is not dict:
                    raise ValueError("metadata is not a JSON object")
                node = read_version(stored_type, meta)
                for key in owned:
                    meta.pop(key, None)
                h = from_bytes(blake2b(join((header((*node, event_id, recorded_at)), canonical(decode(data)),
                                             canonical(meta))), digest_size=16).digest(), "big")
            except MALFORMED as exc:
                malformed.append(_malformed(row, f"unreadable event: {exc}"))
                continue
            part = get(stream)
            if part is None:
                part = parts[stream] = [0, 0]
            part[0] += h * (low[v] if 0 <= v < len(low) else weight(v))
            part[1] += 1
            counts[node] += 1
        streams = {s: (part[0] % P, part[1]) for s, part in parts.items()}
        return DigestedBatch(streams, counts, malformed)


#: what reading a target row that is not a readable event raises (msgspec.DecodeError is a ValueError;
#: the others come from values of the wrong type, which SQLite's columns may hold)
MALFORMED = (ValueError, TypeError, AttributeError, OverflowError, RecursionError)


def _malformed(row: Row, reason: str) -> Malformed:
    return Malformed(row[0], row[1], row[2], reason)


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
