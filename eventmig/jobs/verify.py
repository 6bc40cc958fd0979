"""Verify a migration: digest(upcast(source)) against digest(target), stream by stream.

The source is upcast again here, with the same code path migrate used, up to
the run's checkpoint, and numbered as migrate numbers it; the target is read
back from the store. Both sides are hashed by the same function over
canonical bytes, then compared per stream and in counts per (type, version).
What is compared, per stream, is the sequence of events a reader sees:
stream version, type, schema version, payload, user metadata, event id and
record time (see :mod:`eventmig.model.checksums`). Streams whose digests differ
are read again on both sides to say where and in what
(:mod:`eventmig.jobs.differences`). Quarantined events must be accepted
explicitly before a migration counts as verified.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from eventmig.model.checksums import Malformed, StreamDigests, compare
from eventmig.jobs.differences import StreamDifference, explain_streams
from eventmig.errors import ConfigError
from eventmig.config import DEFAULT_BATCH_SIZE
from eventmig.jobs.migrate import check_batch_size, current_run
from eventmig.jobs.parallel import Workers, check_workers, slices
from eventmig.progress import SILENT, Progress, announce_run
from eventmig.ports import EventStore
from eventmig.model.records import Run
from eventmig.model.transform import DigestedBatch, Transformer
from eventmig.model.chains import CompiledRegistry

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
    #: worker processes started (at most one per slice); 0 when this process digested every slice
    processes: int = 0
    #: the first difference of each of ``differing_streams``: the stream version and the field
    differences: list[StreamDifference] = []
    #: target rows that are not readable events (each one's stream is among the differing ones)
    malformed_events: int = 0


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

    Stream digests are sums of event hashes weighed by stream versions (see
    :mod:`eventmig.model.checksums`), so a verification up to some positions can
    be extended with the events after them without reading anything twice:
    that is how a switch verifies the last events it catches up with,
    inside a short window, after one full verification. Worker processes
    upcast and hash slices of both sides and sum them per stream; this
    process only adds up one part per stream and slice.
    """

    def __init__(
        self, store: EventStore, compiled: CompiledRegistry, run: Run, *, batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None
    ) -> None:
        check_batch_size(batch_size)
        self.store, self.compiled, self.run = store, compiled, run
        self.batch_size, self.workers = batch_size, check_workers(workers)
        self.source = store.at_epoch(run.source_epoch)
        self.target = store.at_epoch(run.target_epoch)
        self.stream_map: dict[str, str] = dict(run.options.get("stream_map") or {})
        self.transformer = Transformer(compiled, self.stream_map or None, source_epoch=run.source_epoch)
        first = self.target.capabilities.first_stream_version
        self.expected, self.actual = StreamDigests(first), StreamDigests(first)
        self.source_failures: list[Malformed] = []  # source events that did not upcast: migrate quarantined them
        self.malformed = 0
        self.source_until: int | None = None  # positions digested so far, on each side
        self.target_until: int | None = None
        self.source_read = 0
        self.seconds = 0.0
        self.processes = 0

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
        with progress.task(label, total) as task, Workers(workers, sources, functions, tasks=len(tasks)) as pool:
            self.processes = max(self.processes, pool.processes)
            for (side, _function, _range), (read, _last, digested) in zip(tasks, pool.map(iter(tasks))):
                self._take(side, digested, read)
                task.advance(read)
        if source_until is not None:
            self.source_until = source_until
        if target_until is not None:
            self.target_until = target_until
        self.seconds += time.perf_counter() - started

    def add(self, source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]]) -> None:
        """Extend both sides with rows already read (in commit order, right after what was digested)."""
        self._take("source", self.transformer.digest_source(source_rows), len(source_rows))
        self._take("target", self.transformer.digest_target(target_rows), len(target_rows))
        if source_rows:
            self.source_until = source_rows[-1][2]
        if target_rows:
            self.target_until = target_rows[-1][2]

    def _take(self, side: str, digested: DigestedBatch, read: int) -> None:
        """Add a digested slice to its side; slices of the source must come in commit order."""
        if side == "source":
            self.expected.add_numbered(digested.streams)
            self.expected.counts.update(digested.counts)
            self.source_failures += digested.malformed
            self.source_read += read
        else:
            self.actual.add_versioned(digested.streams)
            self.actual.counts.update(digested.counts)
            self.actual.add_malformed(digested.malformed)
            self.malformed += len(digested.malformed)

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
        quarantined = self.store.quarantine(run.id)
        # a source event that does not upcast is expected in the quarantine, and nowhere in the target
        kept = {q.position for q in quarantined}
        lost = {self._target_stream(f.stream): f for f in self.source_failures if f.position not in kept}
        differing = sorted(set(comparison.differing_streams) | lost.keys())
        differences = self._explain(differing[:MAX_LISTED], lost)
        if differing:
            shown = ", ".join(_label(d) for d in differences[:5])
            problems.append(f"{len(differing)} stream(s) differ: {shown}" + (" ..." if len(differing) > 5 else ""))
        for bad in list(self.actual.malformed.values())[:5]:
            problems.append(f"malformed event in {bad.stream} at version {bad.version}, position {bad.position}: {bad.reason}")
        for stream, failure in list(lost.items())[:5]:
            problems.append(
                f"source event {failure.stream}@{failure.version} at position {failure.position} does not upcast and is "
                f"not in the quarantine of run {run.id} ({failure.reason}): {stream} cannot be verified"
            )
        for node, (e, a) in comparison.count_differences.items():
            problems.append(f"{node}: expected {e} events, target has {a}")
        unaccepted = [q for q in quarantined if not q.accepted]
        if unaccepted:
            first = unaccepted[0]
            problems.append(
                f"{len(unaccepted)} event(s) in quarantine are not accepted (the first: {first.stream}@{first.version} "
                f"at position {first.position}): inspect them with `eventmig quarantine`, "
                "fix the upcasters and migrate with --restart, or accept them with `eventmig quarantine --accept`"
            )
        advanced = self.source.count_events(after=run.checkpoint)
        total = self.source_read + self.actual.events
        return VerifyReport(
            ok=not problems, problems=problems, run_id=run.id, source_epoch=run.source_epoch,
            target_epoch=run.target_epoch, source_events=self.source_read, expected_events=self.expected.events,
            target_events=self.actual.events + self.malformed, expected_digest=comparison.expected_digest,
            target_digest=comparison.actual_digest, streams_compared=comparison.streams_compared,
            differing_streams=differing[:MAX_LISTED], differing_count=len(differing),
            count_differences=comparison.count_differences, quarantined=len(quarantined),
            unaccepted_quarantine=len(unaccepted), source_advanced_by=advanced, target_head=self.target_until,
            seconds=round(self.seconds, 3), events_per_second=round(total / self.seconds, 1) if self.seconds else 0.0,
            differences=differences, malformed_events=self.malformed, processes=self.processes,
        )

    def _target_stream(self, source_stream: str) -> str:
        return self.stream_map.get(source_stream, source_stream)

    def _explain(self, streams: list[str], lost: dict[str, Malformed]) -> list[StreamDifference]:
        """The first difference of each stream: read again on both sides (only streams whose digests differ)."""
        found = {
            stream: StreamDifference(stream, "malformed", None, f.position,
                                     f"source event {f.stream}@{f.version} does not upcast and is not in the quarantine")
            for stream, f in lost.items() if stream in streams
        }
        rest = [s for s in streams if s not in found]
        if rest:
            explained = explain_streams(
                rest, source=self.source, target=self.target, transformer=self.transformer,
                source_until=self.source_until, target_until=self.target_until,
                first_version=self.expected.first_version, stream_map=self.stream_map,
            )
            found.update((d.stream, d) for d in explained)
        return [found[s] for s in streams]


def _label(difference: StreamDifference) -> str:
    if difference.version is None:
        return f"{difference.stream} ({difference.field})"
    return f"{difference.stream} (version {difference.version}: {difference.field})"
