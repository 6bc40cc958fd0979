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
from .migrate import DEFAULT_BATCH_SIZE, current_run
from .parallel import Workers, default_workers, slices
from .progress import SILENT, Progress, announce_run
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
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    progress: Progress = SILENT,
    run: Run | None = None,
) -> VerifyReport:
    """Compare the current migration's target epoch with its upcast source."""
    run = run or current_run(store)
    if run is None:
        raise ConfigError("nothing to verify: the active epoch has no migration; run `eventmig migrate` first")
    announce_run(progress, run.id, f"verify epochs {run.source_epoch} and {run.target_epoch}")
    verification = Verification(store, compiled, run, batch_size=batch_size, workers=workers)
    verification.source.refresh_statistics()
    verification.target.refresh_statistics()
    verification.extend(run.checkpoint, store.at_epoch(run.target_epoch).head_position(), progress=progress)
    return verification.report()


class Verification:
    """Digests of both sides of a migration, extendable as both sides grow.

    Stream digests chain event hashes, so a verification up to some
    positions can be extended with the events after them without reading
    anything twice: that is how a switch verifies the last events it
    catches up with, inside a short window, after one full verification.
    Worker processes upcast and hash slices of both sides; this process
    chains the hashes per stream in commit order.
    """

    def __init__(
        self, store: EventStore, compiled: CompiledRegistry, run: Run, *, batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None
    ) -> None:
        self.store, self.compiled, self.run = store, compiled, run
        self.batch_size, self.workers = batch_size, workers or default_workers()
        self.source = store.at_epoch(run.source_epoch)
        self.target = store.at_epoch(run.target_epoch)
        self.transformer = Transformer(compiled, run.options.get("stream_map") or None, source_epoch=run.source_epoch)
        self.expected, self.actual = StreamDigests(), StreamDigests()
        self.source_until: int | None = None  # positions digested so far, on each side
        self.target_until: int | None = None
        self.source_read = 0
        self.seconds = 0.0

    def extend(self, source_until: int | None, target_until: int | None, *, progress: Progress = SILENT) -> None:
        """Digest source events up to ``source_until`` and target events up to ``target_until``."""
        started = time.perf_counter()
        tasks: list[tuple[str, str, tuple[int | None, int]]] = []
        total = 0
        if source_until is not None and source_until != self.source_until:
            tasks += [("source", "expected", r) for r in slices(self.source, self.source_until, source_until, self.batch_size)]
            total += self.source.count_events(after=self.source_until, until=source_until)
        if target_until is not None and target_until != self.target_until:
            tasks += [("target", "actual", r) for r in slices(self.target, self.target_until, target_until, self.batch_size)]
            total += self.target.count_events(after=self.target_until, until=target_until)
        functions = {"expected": self.transformer.digest_source, "actual": self.transformer.digest_target}
        sources = {"source": self.source.reopen, "target": self.target.reopen}
        workers = self.workers if total > self.batch_size else 1  # a small delta is not worth forking for
        label = f"verify epochs {self.run.source_epoch} and {self.run.target_epoch}"
        with progress.task(label, total) as task, Workers(workers, sources, functions) as pool:
            for (side_name, _function, _range), (read, _last, digested) in zip(tasks, pool.map(iter(tasks))):
                side = self.expected if side_name == "source" else self.actual
                side.add_hashes(digested.hashes)
                side.counts.update(digested.counts)
                if side_name == "source":
                    self.source_read += read
                task.advance(read)
        if source_until is not None:
            self.source_until = source_until
        if target_until is not None:
            self.target_until = target_until
        self.seconds += time.perf_counter() - started

    def add(self, source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]]) -> None:
        """Extend both sides with rows already read (in commit order, right after what was digested)."""
        expected = self.transformer.digest_source(source_rows)
        actual = self.transformer.digest_target(target_rows)
        self.expected.add_hashes(expected.hashes)
        self.expected.counts.update(expected.counts)
        self.actual.add_hashes(actual.hashes)
        self.actual.counts.update(actual.counts)
        self.source_read += len(source_rows)
        if source_rows:
            self.source_until = source_rows[-1][2]
        if target_rows:
            self.target_until = target_rows[-1][2]

    def report(self) -> VerifyReport:
        """Compare what has been digested, and say everything that stands in the way of a switch."""
        run, problems = self.run, []
        if run.status != "completed":
            problems.append(f"run {run.id} is {run.status}, not completed: run `eventmig migrate` to finish it")
        if run.fingerprint != self.compiled.registry.fingerprint():
            problems.append(f"the upcasters changed since run {run.id}: migrate again with --restart")
        if self.source_until != run.checkpoint:
            problems.append(f"verified epoch {run.source_epoch} up to position {self.source_until}, "
                            f"but run {run.id} migrated it up to {run.checkpoint}")
        comparison = compare(self.expected, self.actual)
        if not comparison.ok:
            differing = comparison.differing_streams
            problems.append(
                f"{len(differing)} stream(s) differ: " + ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
            )
            for node, (e, a) in comparison.count_differences.items():
                problems.append(f"{node}: expected {e} events, target has {a}")
        quarantined = self.store.quarantine(run.id)
        unaccepted = sum(1 for q in quarantined if not q.accepted)
        if unaccepted:
            problems.append(
                f"{unaccepted} event(s) in quarantine are not accepted: inspect them with `eventmig quarantine`, "
                "fix the upcasters and migrate with --restart, or accept them with `eventmig quarantine --accept`"
            )
        advanced = self.source.count_events(after=run.checkpoint)
        total = self.source_read + self.actual.events
        return VerifyReport(
            ok=not problems, problems=problems, run_id=run.id, source_epoch=run.source_epoch,
            target_epoch=run.target_epoch, source_events=self.source_read, expected_events=self.expected.events,
            target_events=self.actual.events, expected_digest=comparison.expected_digest,
            target_digest=comparison.actual_digest, streams_compared=comparison.streams_compared,
            differing_streams=comparison.differing_streams[:MAX_LISTED],
            differing_count=len(comparison.differing_streams), count_differences=comparison.count_differences,
            quarantined=len(quarantined), unaccepted_quarantine=unaccepted, source_advanced_by=advanced,
            target_head=self.target_until, seconds=round(self.seconds, 3),
            events_per_second=round(total / self.seconds, 1) if self.seconds else 0.0,
        )
