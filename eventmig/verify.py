"""Verify a migration: digest(upcast(source)) against digest(target), stream by stream.

The source is upcast again here, with the same code path migrate used, up to
the run's checkpoint; the target is read back from the store. Both sides are
hashed by the same function over canonical bytes, then compared per stream
and in counts per (type, version). Quarantined events must be accepted
explicitly before a migration counts as verified.
"""

from __future__ import annotations

import time

import msgspec

from .checksums import StreamDigests, compare
from .errors import ConfigError
from .migrate import current_run
from .parallel import Workers, default_workers, slices
from .progress import SILENT, Progress
from .stores.base import EventStore, Run
from .transform import Transformer
from .upcasting import CompiledRegistry

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
    workers: int | None = None,
    progress: Progress = SILENT,
    run: Run | None = None,
) -> VerifyReport:
    """Compare the current migration's target epoch with its upcast source.

    Worker processes upcast and hash slices of both sides; this process
    chains the hashes per stream in commit order and compares.
    """
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
    transformer = Transformer(compiled, run.options.get("stream_map") or None, source_epoch=run.source_epoch)
    started = time.perf_counter()

    target_head = target.head_position()
    expected, actual = StreamDigests(), StreamDigests()
    source_total = source.count_events(until=run.checkpoint) if run.checkpoint is not None else 0
    target_total = target.count_events(until=target_head) if target_head is not None else 0
    tasks: list[tuple[str, str, tuple[int | None, int]]] = []
    if run.checkpoint is not None:
        tasks += [("source", "expected", r) for r in slices(source, None, run.checkpoint, batch_size)]
    if target_head is not None:
        tasks += [("target", "actual", r) for r in slices(target, None, target_head, batch_size)]
    source_read = 0
    functions = {"expected": transformer.digest_source, "actual": transformer.digest_target}
    with progress.task(f"verify epochs {run.source_epoch} and {run.target_epoch}", source_total + target_total) as task, \
            Workers(workers or default_workers(), {"source": source.reopen, "target": target.reopen}, functions) as pool:
        for (source_name, _function, _range), (read, _last, digested) in zip(tasks, pool.map(iter(tasks))):
            side = expected if source_name == "source" else actual
            side.add_hashes(digested.hashes)
            side.counts.update(digested.counts)
            if source_name == "source":
                source_read += read
            task.advance(read)

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
