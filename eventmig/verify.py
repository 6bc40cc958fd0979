"""Verify a migration: digest(upcast(source)) against digest(target), stream by stream.

The source is upcast again here, with the same code path migrate used, up to
the run's checkpoint; the target is read back from the store. Both sides are
hashed by the same function over canonical bytes, then compared per stream
and in counts per (type, version). Quarantined events must be accepted
explicitly before a migration counts as verified.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .checksums import StreamDigests, compare
from .errors import ConfigError
from .events import canonical_json
from .migrate import current_run
from .progress import SILENT, Progress
from .stores.base import EventStore, Run
from .transform import Transformer
from .upcasting import CompiledRegistry

_decode = msgspec.json.Decoder().decode
MAX_LISTED = 50


class VerifyReport(msgspec.Struct):
    ok: bool
    problems: list[str]
    run_id: str
    source_epoch: int
    target_epoch: int
    source_events: int
    expected_events: int
    target_events: int
    expected_digest: str
    target_digest: str
    streams_compared: int
    differing_streams: list[str]  # the first MAX_LISTED
    differing_count: int
    count_differences: dict[str, tuple[int, int]]
    quarantined: int
    unaccepted_quarantine: int
    source_advanced_by: int
    target_head: int | None
    seconds: float
    events_per_second: float


def verify(
    store: EventStore,
    compiled: CompiledRegistry,
    *,
    batch_size: int = 5000,
    progress: Progress = SILENT,
    run: Run | None = None,
) -> VerifyReport:
    """Compare the current migration's target epoch with its upcast source."""
    run = run or current_run(store)
    if run is None:
        raise ConfigError("nothing to verify: the active epoch has no migration; run `eventmig migrate` first")
    problems: list[str] = []
    if run.status != "completed":
        problems.append(f"run {run.id} is {run.status}, not completed: run `eventmig migrate` to finish it")
    if run.fingerprint != compiled.registry.fingerprint():
        problems.append(f"the upcasters changed since run {run.id}: migrate again with --restart")
    source = store.at_epoch(run.source_epoch)
    target = store.at_epoch(run.target_epoch)
    transformer = Transformer(compiled, run.options.get("stream_map") or None)
    started = time.perf_counter()

    target_head = target.head_position()
    expected = StreamDigests()
    actual = StreamDigests()
    source_total = source.count_events(until=run.checkpoint) if run.checkpoint is not None else 0
    source_read = 0
    with progress.task(f"verify epoch {run.source_epoch} (upcast)", source_total) as task:
        if run.checkpoint is not None:
            for rows in source.read_all_rows(None, until=run.checkpoint, batch_size=batch_size):
                _digest_expected(expected, transformer, rows)
                source_read += len(rows)
                task.advance(len(rows))
    target_total = target.count_events(until=target_head) if target_head is not None else 0
    with progress.task(f"verify epoch {run.target_epoch} (stored)", target_total) as task:
        if target_head is not None:
            owned = transformer.owned_keys
            location = compiled.version_location
            for rows in target.read_all_rows(None, until=target_head, batch_size=batch_size):
                _digest_actual(actual, rows, location, owned)
                task.advance(len(rows))

    comparison = compare(expected, actual)
    if not comparison.ok:
        differing = comparison.differing_streams
        problems.append(
            f"{len(differing)} stream(s) differ: " + ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        )
        for node, (e, a) in comparison.count_differences.items():
            problems.append(f"{node}: expected {e} events, target has {a}")
    quarantined = store.quarantine(run.id)
    unaccepted = sum(1 for q in quarantined if not q.accepted)
    if unaccepted:
        problems.append(
            f"{unaccepted} event(s) in quarantine are not accepted: inspect them with `eventmig quarantine`, "
            "fix the upcasters and migrate with --restart, or accept them with `eventmig quarantine --accept`"
        )
    advanced = source.count_events(after=run.checkpoint) if run.checkpoint is not None else source.count_events()
    seconds = time.perf_counter() - started
    total = source_read + actual.events
    return VerifyReport(
        ok=not problems, problems=problems, run_id=run.id, source_epoch=run.source_epoch,
        target_epoch=run.target_epoch, source_events=source_read, expected_events=expected.events,
        target_events=actual.events, expected_digest=comparison.expected_digest,
        target_digest=comparison.actual_digest, streams_compared=comparison.streams_compared,
        differing_streams=comparison.differing_streams[:MAX_LISTED],
        differing_count=len(comparison.differing_streams), count_differences=comparison.count_differences,
        quarantined=len(quarantined), unaccepted_quarantine=unaccepted, source_advanced_by=advanced,
        target_head=target_head, seconds=round(seconds, 3),
        events_per_second=round(total / seconds, 1) if seconds else 0.0,
    )


def _digest_expected(digests: StreamDigests, transformer: Transformer, rows: list[Any]) -> None:
    result = transformer.transform(rows)
    add = digests.add
    for up in result.upcasts:
        if up.outputs:
            meta = canonical_json(up.user_metadata)
            for type_, version, data, _chain in up.outputs:
                add(up.stream, type_, version, data, meta)


def _digest_actual(digests: StreamDigests, rows: list[Any], location: Any, owned: frozenset[str]) -> None:
    add = digests.add
    for stream, _version, _position, _event_id, stored_type, data, metadata, _recorded_at in rows:
        meta = _decode(metadata) if metadata else {}
        type_, version = location.read(stored_type, meta)
        user_meta = {k: v for k, v in meta.items() if k not in owned}
        add(stream, type_, version, canonical_json(_decode(data)), canonical_json(user_meta))

