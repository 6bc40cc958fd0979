"""One function per CLI command, taking :class:`~eventmig.config.Settings` and returning a report.

The CLI (``cli.py``) only parses flags, calls these and prints what they
return; anything a command does can be done from Python the same way, with
the same names, as with Alembic's ``command`` module.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from eventmig.jobs import cutover
from eventmig.jobs import migrate as _migrate
from eventmig.jobs import rebuild as _rebuild
from eventmig.jobs import verify as _verify
from eventmig.config import Settings, import_object, load_projections, load_registry
from eventmig.jobs.seed import seed
from eventmig.errors import ConfigError, UpcastError
from eventmig.model.nesting import too_deep
from eventmig.model.graph import Graph
from eventmig.model.graph import build as build_graph
from eventmig.jobs.timeline import TimelineEntry
from eventmig.jobs.timeline import build as build_timeline
from eventmig.progress import SILENT, Progress
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.ports import EventStore
from eventmig.urls import mask_url
from eventmig.backends import open_store
from eventmig.model.records import EpochInfo, Run, Switch
from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import EventContext
from eventmig.retry import retry_policy
from eventmig.jobs import follow as _follow
from eventmig.jobs.follow_segment import lag_of
from eventmig.backends.sql.following import FollowerDB, FollowerRow

_decode = msgspec.json.Decoder().decode


def open_configured_store(
    settings: Settings, *, create: bool = False, read_only: bool = False, init: bool = False
) -> EventStore:
    """The configured event store; a SQLite file must already exist unless ``create``.

    A mistyped path should be an error, not a new empty store that every
    command then reports on. The commands that only look open it
    ``read_only``: they work with a connection that cannot write, and write
    nothing themselves. ``init``: set eventmig up even in a database that
    holds other tables and no eventmig state (otherwise refused).
    """
    if settings.target:
        from eventmig.backends.pair import open_pair

        return open_pair(settings.store, settings.target, table=settings.events_table, read_only=read_only)
    return open_store(settings.store, table=settings.events_table, create=create, read_only=read_only, init=init,
                      layout=store_layout(settings))


def store_layout(settings: Settings) -> Any:
    """The events table's :class:`~eventmig.backends.sql.layouts.Layout` (ConfigError if the settings name none)."""
    from eventmig.backends.sql.layouts import resolve

    layout = resolve(settings.layout, settings.columns,
                     load=lambda spec: import_object(spec, settings.root, "layout"))
    where = settings.where_versions_live
    if where and where.startswith("data:"):  # in the payload: the store lifts it out for the registry
        layout = msgspec.structs.replace(layout, version_location=where)
    return layout


def nothing_read(settings: Settings, url: str) -> str:
    """The warning of a command that found no event at all: never to be taken for a clean run."""
    return (f"read 0 events from table {settings.events_table!r} of {url}: if the store should hold events, check "
            "store and events_table (`eventmig inspect URL` lists what the database holds)")


# ------------------------------------------------------------------------ plan
class StoredPair(msgspec.Struct):
    type: str
    #: None for events whose schema version cannot be read (treatment "unreadable", the reason in ``detail``)
    version: int | None
    events: int
    treatment: str  # "head" | "upcast" | "dropped" | "unknown" | "no path" | "unreadable"
    detail: str = ""


class PlanReport(msgspec.Struct):
    ok: bool
    heads: dict[str, int]
    chains: dict[str, list[str]]
    store: str | None
    epoch: int | None
    stored: list[StoredPair]
    uncovered: list[str]
    #: why no store was scanned (``--no-store``, or a SQLite file that does not exist yet)
    store_skipped: str | None = None
    #: what is not an error but should not pass for success either (a store that holds no event)
    warnings: list[str] = []


def plan(settings: Settings, *, scan_store: bool = True, progress: Progress = SILENT) -> PlanReport:
    """The registered chains, and what the store holds of each (type, version).

    A SQLite store whose file does not exist yet holds nothing: the plan of a
    service just scaffolded by ``init`` shows its chains, and creates no file.
    """
    compiled = load_registry(settings)
    chains = {
        f"{t} v{v}": [" -> ".join(f"{nt} v{nv}" if nt != "(dropped)" else "dropped" for nt, nv in path) for path in compiled.paths((t, v))]
        for t, v in sorted(compiled.registry.steps)
    }
    stored: list[StoredPair] = []
    store_url = epoch = None
    skipped = "not requested (--no-store)" if not scan_store else _missing_sqlite(settings.store)
    if skipped is None:
        with open_configured_store(settings, read_only=True) as store:
            store_url, epoch = store.url, store.epoch
            stored = stored_versions(store, compiled, progress=progress).pairs(compiled)
    uncovered = [f"{p.type} v{p.version}" for p in stored if p.treatment == "no path"]
    ok = not uncovered and not any(p.treatment == "unreadable" for p in stored)
    warnings = [nothing_read(settings, store_url)] if store_url is not None and not stored else []
    return PlanReport(ok, dict(sorted(compiled.heads.items())), chains, store_url, epoch, stored, uncovered, skipped,
                      warnings)


#: JSON's names for what msgspec decodes into
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


class StoredCounts:
    """Stored events per (type, schema version), and per (type, reason) of those whose version cannot be read.

    An event whose metadata is not a JSON object, or holds a version that is
    not one, is never "version 0" of its type: ``migrate`` quarantines it,
    and what the store holds says so, with the reason and the first such
    event.
    """

    def __init__(self, compiled: CompiledRegistry) -> None:
        self.location = compiled.version_location
        self.versions: Counter[tuple[str, int]] = Counter()
        #: (type, reason) -> [events, the reason as the first of them gives it, and where it is]
        self.unreadable: dict[tuple[str, str], list[Any]] = {}

    @property
    def events(self) -> int:
        return sum(self.versions.values()) + sum(n for n, _ in self.unreadable.values())

    def add(self, row: tuple[Any, ...]) -> tuple[str, int | str]:
        """Count one stored row; return its group: (type, version), or (type, reason) if its version is unreadable."""
        try:
            meta = _decode(row[6]) if row[6] else {}
        except msgspec.DecodeError as exc:
            return self._unreadable(row, "metadata is not valid JSON", f"metadata is not valid JSON ({exc})")
        except RecursionError:
            return self._unreadable(row, "metadata nested too deeply", "metadata nested too deeply to decode")
        if type(meta) is not dict:
            kind = _JSON_KINDS.get(type(meta), type(meta).__name__)
            return self._unreadable(row, "metadata is not a JSON object", f"metadata is {kind}, not a JSON object")
        try:
            node = self.location.read(row[4], meta)
        except ValueError as exc:  # the version location says what it expected, and what it got
            return self._unreadable(row, str(exc).split(", got ", 1)[0], str(exc))
        self.versions[node] += 1
        return node

    def _unreadable(self, row: tuple[Any, ...], reason: str, detail: str) -> tuple[str, str]:
        group = (row[4], reason)
        counted = self.unreadable.setdefault(group, [0, f"{detail}; the first at {row[0]}@{row[1]}"])
        counted[0] += 1
        return group

    def pairs(self, compiled: CompiledRegistry) -> list[StoredPair]:
        """What the store holds of each (type, version), then the events whose version cannot be read."""
        pairs = [_treatment(compiled, t, v, n) for (t, v), n in sorted(self.versions.items())]
        pairs += [StoredPair(t, None, n, "unreadable", f"schema version unreadable: {detail}")
                  for (t, _reason), (n, detail) in sorted(self.unreadable.items())]
        return pairs


def plan_graph(settings: Settings, *, scan_store: bool = True, progress: Progress = SILENT) -> tuple[PlanReport, Graph]:
    """The plan, and the upcaster graph it describes (with the stored counts when a store was scanned)."""
    report = plan(settings, scan_store=scan_store, progress=progress)
    stored = {(p.type, p.version): p.events for p in report.stored if p.version is not None} if report.store is not None else None
    return report, build_graph(load_registry(settings), stored)


def stored_versions(store: EventStore, compiled: CompiledRegistry, *, progress: Progress = SILENT) -> StoredCounts:
    """Count the active epoch's events per (type, schema version): a full scan, in batches."""
    counts = StoredCounts(compiled)
    head = store.head_position()
    if head is None:
        return counts
    with progress.task("scan stored versions", store.count_events(until=head)) as task:
        for rows in store.read_all_rows(None, until=head, batch_size=10_000):
            for row in rows:
                counts.add(row)
            task.advance(len(rows))
    return counts


def _treatment(compiled: CompiledRegistry, t: str, v: int, n: int) -> StoredPair:
    if not compiled.knows(t):
        return StoredPair(t, v, n, "unknown", "no schema or upcaster: copied unchanged")
    if compiled.is_head((t, v)):
        return StoredPair(t, v, n, "head")
    step = compiled.registry.steps.get((t, v))
    if step is None:
        return StoredPair(t, v, n, "no path", compiled.why_no_path((t, v)))
    if not step.targets:
        return StoredPair(t, v, n, "dropped", step.name)
    return StoredPair(t, v, n, "upcast", " | ".join(" -> ".join(f"{a} v{b}" for a, b in p) for p in compiled.paths((t, v))))


# ----------------------------------------------------------------------- check
class SampledFailure(msgspec.Struct):
    """A stored event that failed to upcast in the dry run of ``check``."""

    stream: str
    stream_version: int
    event_id: str
    type: str
    reason: str


class StoreCheck(msgspec.Struct):
    """What ``check`` found in the store: every stored (type, version) and a dry run of a sample."""

    url: str
    epoch: int
    events: int
    stored: list[StoredPair]
    uncovered: list[str]
    sample_per_version: int
    sampled: int
    failed: list[SampledFailure]


class CheckReport(msgspec.Struct):
    ok: bool
    #: the property checks of the registry (an ``eventmig.testing.checks.RegistryReport``)
    properties: Any
    store: StoreCheck | None
    #: why no store was checked (``--no-store``, or a SQLite file that does not exist)
    store_skipped: str | None = None
    #: recorded cases waiting for review, if any
    pending_cases: str | None = None


def check(
    settings: Settings,
    *,
    examples: int | None = None,
    sample: int = 100,
    scan_store: bool = True,
    seed: int | None = None,
    strict: bool = True,
    progress: Progress = SILENT,
) -> CheckReport:
    """The CI gate: the registry compiles, its checks hold, its examples come true, and the store is covered.

    The property checks run the boundary values and ``examples`` generated
    events per schema (``check_examples`` of ``[tool.eventmig]`` by default;
    derandomized unless ``seed`` is given), the registry's examples and those
    of the cases file, and, ``strict`` (the default), the laws of the steps
    and the schema gaps. With a store, every stored (type, version) must
    have a path to a head, and up to ``sample`` events of each are upcast as
    ``migrate`` would, writing nothing. A SQLite store whose file does not
    exist is not a store to check (and is not created).
    """
    examples = settings.check_examples if examples is None else examples
    if examples < 1 or sample < 0:
        raise ConfigError("--examples must be at least 1 and --sample at least 0")
    compiled = load_registry(settings)
    check_upcasters = _testing().check_upcasters
    cases = settings.cases_file if settings.cases_file.exists() else None
    registry = compiled.registry
    nodes = set(registry.schemas) | set(registry.steps) | {t for s in registry.steps.values() for t in s.targets}
    with progress.task("property checks", len(nodes)) as task:
        properties = check_upcasters(
            compiled, examples=examples, derandomize=seed is None, seed=seed, strict=strict, cases=cases,
            on_node=lambda _: task.advance(1),
        )
    store_check = None
    skipped = "not requested (--no-store)" if not scan_store else _missing_sqlite(settings.store)
    if skipped is None:
        with open_configured_store(settings, read_only=True) as store:
            store_check = _check_store(store, compiled, sample, progress)
    ok = properties.ok and (store_check is None or not (
        store_check.uncovered or store_check.failed or any(p.treatment == "unreadable" for p in store_check.stored)))
    pending = _pending_note(settings)
    return CheckReport(ok, properties, store_check, skipped, pending)


def _testing() -> Any:
    """eventmig.testing.checks, or a configuration error saying how to install it."""
    try:
        from eventmig.testing import checks
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ConfigError("eventmig check needs hypothesis: pip install 'eventmig[test]'") from None
    return checks


def _pending_note(settings: Settings) -> str | None:
    from eventmig.testing.cases import pending_path

    pending = pending_path(settings.cases_file)
    if not pending.exists():
        return None
    return f"recorded cases await review in {pending}: accept them with eventmig check --accept, or delete the file"


class RecordReport(msgspec.Struct):
    """What ``eventmig check --record`` recorded, for review before ``--accept``."""

    pending: str
    #: where the inputs came from: "store" (sampled stored events) or "generated"
    source: str
    recorded: list[Any]  # eventmig.model.declared.Example, one per recorded case
    skipped: list[str]


def record_cases(
    settings: Settings, *, per_node: int = 3, scan_store: bool = True, progress: Progress = SILENT
) -> RecordReport:
    """Upcast sampled stored events (generated ones without a store) and write what they become,
    as cases pending review beside the cases file; nothing counts until :func:`accept_cases`."""
    if per_node < 1:
        raise ConfigError("--record needs at least 1 case per (type, version)")
    compiled = load_registry(settings)
    _testing()
    from eventmig.testing import cases

    inputs: list[Any] = []
    source = "generated"
    if scan_store and _missing_sqlite(settings.store) is None:
        with open_configured_store(settings, read_only=True) as store:
            _, rows = sample_stored(store, compiled, per_node, progress=progress)
        inputs = cases.stored_inputs(compiled, rows)
        source = "store"
    if not inputs:
        inputs, source = cases.generated_inputs(compiled, per_node), "generated"
    known = cases.load_cases(settings.cases_file) if settings.cases_file.exists() else []
    recorded, skipped = cases.record_examples(compiled, inputs, [*compiled.registry.examples, *known])
    pending = cases.pending_path(settings.cases_file)
    if recorded:
        pending.write_bytes(cases.dump_cases(recorded))
    return RecordReport(str(pending), source, recorded, skipped)


class AcceptReport(msgspec.Struct):
    cases_file: str
    accepted: list[Any]  # eventmig.model.declared.Example


def accept_cases(settings: Settings) -> AcceptReport:
    """Move the cases ``record_cases`` wrote into the cases file, after review."""
    _testing()
    from eventmig.testing.cases import accept_pending

    return AcceptReport(str(settings.cases_file), accept_pending(settings.cases_file))


def _missing_sqlite(url: str) -> str | None:
    """Why a SQLite URL names no store to check, or None for any other store."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):].split("?", 1)[0]
    if not path or path == ":memory:":
        return f"{url} is an in-memory database: nothing is stored there"
    if not os.path.exists(path):
        return f"{url} does not exist (yet): no events are stored there"
    return None


def _check_store(store: EventStore, compiled: CompiledRegistry, sample: int, progress: Progress) -> StoreCheck:
    counts, rows = sample_stored(store, compiled, sample, progress=progress)
    stored = counts.pairs(compiled)
    uncovered = [f"{p.type} v{p.version}" for p in stored if p.treatment == "no path"]
    failed = []
    for row in rows:
        reason = _upcast_failure(compiled, row)
        if reason is not None:
            failed.append(SampledFailure(row[0], row[1], row[3], row[4], reason))
    return StoreCheck(store.url, store.epoch, counts.events, stored, uncovered, sample, len(rows), failed)


def _upcast_failure(compiled: CompiledRegistry, row: tuple[Any, ...]) -> str | None:
    """Why one stored row would be quarantined by ``migrate`` (read and upcast as it does), or None."""
    stream, _version, _position, event_id, stored_type, data, metadata, recorded_at = row
    try:
        meta = _decode(metadata) if metadata else {}
        if type(meta) is not dict:
            return "metadata is not a JSON object"
        type_, version = compiled.version_location.read(stored_type, meta)
        context = EventContext(stream, type_, version, meta, event_id, recorded_at)
        compiled.upcast(type_, version, data, context)
    except UpcastError as exc:
        return str(exc)
    except (ValueError, msgspec.DecodeError) as exc:
        return f"unreadable event: {exc}"
    except RecursionError:  # the metadata: upcast() words the payload's own
        return f"unreadable event: {too_deep('metadata', metadata)}"
    return None


def sample_stored(
    store: EventStore, compiled: CompiledRegistry, per_version: int, *, progress: Progress = SILENT
) -> tuple[StoredCounts, list[tuple[Any, ...]]]:
    """Count the active epoch's events per (type, version), as :func:`stored_versions`, and
    sample up to ``per_version`` rows of each, uniformly (reservoir sampling, fixed seed).

    Sampling per version rather than overall keeps the rare old versions,
    the ones most likely to break, in the sample. Events whose version
    cannot be read are sampled per reason.
    """
    import random

    rng = random.Random(0)
    counts = StoredCounts(compiled)
    seen: Counter[tuple[str, int | str]] = Counter()
    reservoirs: dict[tuple[str, int | str], list[tuple[Any, ...]]] = {}
    head = store.head_position()
    if head is None:
        return counts, []
    with progress.task("scan and sample stored events", store.count_events(until=head)) as task:
        for rows in store.read_all_rows(None, until=head, batch_size=10_000):
            for row in rows:
                group = counts.add(row)
                seen[group] += 1
                if per_version:
                    kept = reservoirs.setdefault(group, [])
                    if len(kept) < per_version:
                        kept.append(row)
                    else:
                        j = rng.randrange(seen[group])
                        if j < per_version:
                            kept[j] = row
            task.advance(len(rows))
    order = sorted(reservoirs, key=lambda g: (g[0], isinstance(g[1], str), g[1]))
    return counts, [row for group in order for row in reservoirs[group]]


# --------------------------------------------------------------------- migrate
def migrate(
    settings: Settings,
    *,
    dry_run: bool = False,
    restart: bool = False,
    stream_map: str | Path | None = None,
    init: bool = False,
    progress: Progress = SILENT,
) -> _migrate.MigrateReport:
    """Copy the active epoch through the upcasters into a new epoch.

    ``init``: set eventmig up in a database that holds other tables and no
    eventmig state, which is otherwise refused. A run that reads no event at
    all (none resumed either) says so in its warnings.
    """
    compiled = load_registry(settings)
    mapping = load_stream_map(stream_map) if stream_map else None
    with open_configured_store(settings, init=init) as store:
        report = _migrate.migrate(
            store, compiled, batch_size=settings.batch_size, stream_map=mapping, dry_run=dry_run,
            restart=restart, workers=settings.workers, retry=retry_policy(settings), progress=progress,
        )
        if report.events_read == 0 and report.resumed_from is None:
            report.warnings.append(nothing_read(settings, store.url))
        return report


def load_stream_map(path: str | Path) -> dict[str, str]:
    """Read a JSON object ``{"old stream": "new stream", ...}``."""
    try:
        mapping = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"stream map {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"stream map {path} is not valid JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"stream map {path} must be a JSON object of old name -> new name")
    return mapping


def verify(settings: Settings, *, progress: Progress = SILENT) -> _verify.VerifyReport:
    compiled = load_registry(settings)
    with open_configured_store(settings, read_only=True) as store:
        return _verify.verify(store, compiled, batch_size=settings.batch_size, workers=settings.workers, progress=progress)


def switch(
    settings: Settings, *, catch_up: bool = True, attempts: int = 5, progress: Progress = SILENT
) -> cutover.SwitchReport:
    compiled = load_registry(settings)
    with open_configured_store(settings) as store:
        return cutover.switch(store, compiled, batch_size=settings.batch_size, workers=settings.workers,
                              catch_up=catch_up, attempts=attempts, retry=retry_policy(settings), progress=progress)


def rollback(
    settings: Settings, *, force: bool = False, read_models: bool = False, names: list[str] | None = None,
    progress: Progress = SILENT,
) -> cutover.SwitchReport | cutover.ReadModelRollbackReport:
    """Undo the last switch of epochs or, with ``read_models``, the last swap of read-model tables.

    A SQLite read-model database that does not exist is an error, not a new
    empty database: a mistyped path must not look like "nothing to roll back".
    An epoch rollback takes the read models built from the epoch it leaves
    back to tables built from the one it restores, where there are such
    tables, and names the others stale (:func:`cutover.rollback`).
    """
    if read_models:
        with ReadModelDB(settings.read_models_url, create=False) as db:
            return cutover.rollback_read_models(db, names)
    if names:
        raise ConfigError("projection names are for `eventmig rollback --read-models`; an epoch rollback takes none")
    with open_configured_store(settings) as store:
        return cutover.rollback(store, force=force, read_models=settings.read_models_url, retry=retry_policy(settings),
                                progress=progress)


# --------------------------------------------------------------------- rebuild
def rebuild(
    settings: Settings,
    *,
    names: list[str] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    accept_changes: bool = False,
    swap: bool = True,
    restart: bool = False,
    progress: Progress = SILENT,
    share: bool = False,
    lease_s: float = _rebuild.DEFAULT_LEASE_S,
) -> _rebuild.RebuildReport:
    """Replay the active epoch into the projections' shadow tables, verify them, swap them in."""
    compiled = load_registry(settings)
    projections = load_projections(settings)
    with open_configured_store(settings) as store:
        return _rebuild.rebuild(
            store, projections, registry=compiled, read_models=settings.read_models_url, names=names,
            workers=workers or settings.workers, batch_size=batch_size or settings.rebuild_batch_size,
            accept_changes=accept_changes, swap=swap, restart=restart, retry=retry_policy(settings), progress=progress,
            share=share, lease_s=lease_s,
        )


def join_rebuild(settings: Settings, run_id: str, *, batch_size: int | None = None,
                 lease_s: float = _rebuild.DEFAULT_LEASE_S) -> _rebuild.JoinReport:
    """Take partitions of a running shared rebuild run until all are folded."""
    with open_configured_store(settings) as store:
        return _rebuild.join_rebuild(
            store, load_projections(settings), run_id, registry=load_registry(settings),
            read_models=settings.read_models_url, batch_size=batch_size or settings.rebuild_batch_size, lease_s=lease_s,
        )


def follow(
    settings: Settings,
    *,
    names: list[str] | None = None,
    once: bool = False,
    batch_size: int | None = None,
    poll_s: float = _follow.DEFAULT_POLL_S,
    gap_wait_s: float = _follow.DEFAULT_GAP_WAIT_S,
    lease_s: float = _follow.DEFAULT_LEASE_S,
    stop: Callable[[], bool] = lambda: False,
    on_status: Callable[[_follow.FollowStatus], None] | None = None,
) -> _follow.FollowReport:
    """Keep the projections' live read models current from the active epoch (``once``: catch up and return)."""
    compiled = load_registry(settings)
    projections = load_projections(settings)
    with open_configured_store(settings) as store:
        return _follow.follow(
            store, projections, registry=compiled, read_models=settings.read_models_url, names=names, once=once,
            batch_size=batch_size or _follow.DEFAULT_BATCH_SIZE, poll_s=poll_s, gap_wait_s=gap_wait_s,
            lease_s=lease_s, stop=stop, on_status=on_status,
        )


# ---------------------------------------------------------------------- status
class FollowerStatus(msgspec.Struct):
    """A projection segment's follower: where it is, how far behind the active epoch, who holds it."""

    projection: str
    segment: int
    epoch: int | None
    checkpoint: int | None
    #: events of the active epoch after the checkpoint now (None: it follows another epoch)
    lag_events: int | None
    #: seconds since the oldest of them was recorded
    lag_seconds: float | None
    holder: str | None  # None, or a holder whose lease expired: nobody follows it now
    lease_expired: bool
    events: int
    gaps: int
    error: str | None


class EpochStatus(msgspec.Struct):
    epoch: int
    status: str
    source_epoch: int | None
    events: int
    created_at: float


class RunStatus(msgspec.Struct):
    id: str
    kind: str
    source_epoch: int
    target_epoch: int
    status: str
    checkpoint: int | None
    read: int
    written: int
    quarantined: int
    unaccepted_quarantine: int
    started_at: float
    updated_at: float


class ReadModelStatus(msgspec.Struct):
    projection: str
    version: int | None  # of the live tables; None if never swapped in
    live_run: str | None
    last_rebuild: str | None  # id and status of the latest rebuild run
    last_rebuild_status: str | None
    rollback_available: bool
    #: the epoch the live tables were built from (None: not built by eventmig, or never swapped in)
    epoch: int | None = None
    #: why the live tables are stale (built from an epoch that is not the active one), None if they are not
    stale: str | None = None


class StatusReport(msgspec.Struct):
    store: str
    active_epoch: int
    epochs: list[EpochStatus]
    runs: list[RunStatus]
    switches: list[Switch]
    pending_events: int | None  # source events after the current run's checkpoint
    read_models: list[ReadModelStatus] = []
    #: epochs, runs, switches, rollbacks, rebuilds and swaps, oldest first
    timeline: list[TimelineEntry] = []
    followers: list[FollowerStatus] = []


def status(settings: Settings) -> StatusReport:
    with open_configured_store(settings, read_only=True) as store:
        active = store.active_epoch()
        epochs = [_epoch_status(store, e) for e in store.epochs()]
        quarantine = Counter[str]()
        unaccepted = Counter[str]()
        for q in store.quarantine():
            quarantine[q.run_id] += 1
            unaccepted[q.run_id] += not q.accepted
        runs = [_run_status(r, quarantine[r.id], unaccepted[r.id]) for r in store.runs()]
        current = _migrate.current_run(store)
        pending = None
        if current is not None:
            pending = store.at_epoch(current.source_epoch).count_events(after=current.checkpoint)
        switches = store.switches()
        live, rebuilds, swaps, followers = _read_model_bookkeeping(settings)
        history = build_timeline(store.epochs(), store.runs(), switches, rebuilds, swaps)
        return StatusReport(store.url, active, epochs, runs, switches, pending,
                            _read_model_status(live, rebuilds, active, switches), history,
                            _follower_status(store, active, followers))


def _read_model_bookkeeping(settings: Settings) -> tuple[dict[str, Any], list[Any], list[Any], list[FollowerRow]]:
    """Live read models, rebuild runs, swaps and followers of the read-model database, read once through a
    read-only handle; all empty when it does not exist yet or eventmig never rebuilt into it."""
    try:
        db = ReadModelDB(settings.read_models_url, create=False, read_only=True)
    except ConfigError:  # no read-model database yet
        return {}, [], [], []
    with db:
        if not db.table_exists("eventmig_read_models"):  # one eventmig never rebuilt into
            return {}, [], [], []
        return db.live_models(), db.runs(), db.swaps(), FollowerDB(db).followers()


def _follower_status(store: EventStore, active: int, followers: list[FollowerRow]) -> list[FollowerStatus]:
    """Each follower's checkpoint, and its lag measured now against the active epoch's head."""
    source = store.at_epoch(active)
    now = time.time()  # leases are by the database's clock; a host's is close enough to say "expired"
    out = []
    for f in followers:
        lag: tuple[int | None, float | None] = (None, None)
        if f.epoch == active:
            lag = lag_of(source, f.checkpoint)
        out.append(FollowerStatus(
            f.projection, f.segment, f.epoch, f.checkpoint, lag[0], lag[1], f.holder,
            f.holder is not None and (f.lease_until or 0) < now, f.events, f.gaps, f.error,
        ))
    return out


def _read_model_status(
    live: dict[str, Any], runs: list[Any], active: int, switches: list[Switch]
) -> list[ReadModelStatus]:
    """Live read models and their latest rebuilds, and which are stale."""
    latest = {run.projection: run for run in runs}
    built = {r.id: r.epoch for r in runs}
    out = []
    for name in sorted(live.keys() | latest.keys()):
        epoch = built.get(live[name].run_id) if name in live else None
        out.append(ReadModelStatus(
            name,
            live[name].version if name in live else None,
            live[name].run_id if name in live else None,
            latest[name].id if name in latest else None,
            latest[name].status if name in latest else None,
            bool(name in live and live[name].previous_run_id),
            epoch,
            _staleness(epoch, active, switches),
        ))
    return out


def _staleness(epoch: int | None, active: int, switches: list[Switch]) -> str | None:
    """Why tables built from ``epoch`` are stale while ``active`` is the active epoch (None: they are not)."""
    if epoch is None or epoch == active:
        return None
    left = [s for s in switches if s.from_epoch == epoch and s.to_epoch == active]
    how = f" since the {left[-1].kind} from it" if left else ""
    return f"built from epoch {epoch}; epoch {active} is active{how}: `eventmig rebuild` rebuilds it"


def _epoch_status(store: EventStore, e: EpochInfo) -> EpochStatus:
    return EpochStatus(e.epoch, e.status, e.source_epoch, store.at_epoch(e.epoch).count_events(), e.created_at)


def _run_status(r: Run, quarantined: int, unaccepted: int) -> RunStatus:
    return RunStatus(
        r.id, r.kind, r.source_epoch, r.target_epoch, r.status, r.checkpoint, r.stats.get("read", 0),
        r.stats.get("written", 0), quarantined, unaccepted, r.started_at, r.updated_at,
    )


# ------------------------------------------------------------------ quarantine
class QuarantineEntry(msgspec.Struct):
    id: int | None
    run_id: str
    stream: str
    version: int
    event_id: str
    type: str
    reason: str
    accepted: bool
    data: str


class QuarantineReport(msgspec.Struct):
    run_id: str | None
    entries: list[QuarantineEntry]
    accepted_now: int = 0


def quarantine(settings: Settings, *, accept: bool = False, ids: list[int] | None = None) -> QuarantineReport:
    """List the current run's quarantined events; ``accept`` marks them knowingly left behind."""
    with open_configured_store(settings, read_only=not accept) as store:
        run = _migrate.current_run(store)
        if run is None:
            return QuarantineReport(None, [])
        if accept and ids:
            held = {q.id for q in store.quarantine(run.id)}
            unknown = sorted(set(ids) - held)
            if unknown:
                raise ConfigError(
                    f"no quarantined event with id {', '.join(map(str, unknown))} in run {run.id}; "
                    "`eventmig quarantine` lists them"
                )
        accepted_now = store.accept_quarantine(run.id, ids) if accept else 0
        entries = [
            QuarantineEntry(q.id, q.run_id, q.stream, q.version, q.event_id, q.type, q.reason, q.accepted,
                            q.data.decode("utf-8", "replace"))
            for q in store.quarantine(run.id)
        ]
        return QuarantineReport(run.id, entries, accepted_now)


# ------------------------------------------------------------------------ init
PYPROJECT_TABLE = """
[tool.eventmig]
store = "sqlite:///eventmig.db"
upcasters = "upcasters:registry"
projections = "projections:projections"
"""

UPCASTERS_TEMPLATE = '''"""Upcasters of this service: one msgspec Struct per schema version, and the steps between them."""

from typing import Annotated

import msgspec

from eventmig import Registry

registry = Registry(version_location="metadata:schema_version")

# @registry.schema("OrderPlaced", 1)
# class OrderPlacedV1(msgspec.Struct):
#     order_id: str
#     total: Annotated[float, msgspec.Meta(ge=0, le=1e9)]  # what the old code really stored
#
# @registry.schema("OrderPlaced", 2)
# class OrderPlaced(msgspec.Struct):
#     order_id: str
#     total_cents: int
#
# def euros_to_cents(euros: float) -> int:
#     return round(euros * 100)
#
# # what the step does, declared for `eventmig check`: total lives on as total_cents, by this rule
# @registry.upcaster(rename={"total": "total_cents"}, convert={"total_cents": euros_to_cents})
# def total_in_cents(e: OrderPlacedV1) -> OrderPlaced:
#     return OrderPlaced(e.order_id, euros_to_cents(e.total))
#
# # what an old event must become
# registry.example(OrderPlacedV1("o-1", 12.29), becomes=OrderPlaced("o-1", 1229))
'''

PROJECTIONS_TEMPLATE = '''"""Projections of this service: read models and aggregate snapshots rebuilt from the events."""

projections: list = []
'''


class InitReport(msgspec.Struct):
    created: list[str]
    skipped: list[str]
    #: the example written (``init --example NAME``), None for the empty scaffold
    example: str | None = None


def init(directory: str | Path = ".", *, example: str | None = None, store: str | None = None) -> InitReport:
    """Scaffold ``[tool.eventmig]``, ``upcasters/`` and ``projections/`` in a service; never overwrite.

    ``example`` writes one of the example services eventmig carries
    (``shop``, the reference service ``eventmig demo`` runs) instead of the
    empty packages. ``store``: the service's existing database. Its events
    table, if :func:`inspect` recognises one, is what ``[tool.eventmig]``
    points at, with its layout; otherwise eventmig's own store is set up in
    that database, beside whatever tables it has.
    """
    from eventmig import scaffold

    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    if example is not None:
        scaffold.files(example)  # an unknown name fails before anything is written
    table = PYPROJECT_TABLE
    if store is not None:
        table = "\n" + _store_table(store)
    created: list[str] = []
    skipped: list[str] = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text() if pyproject.exists() else ""
    if "[tool.eventmig]" in text:
        skipped.append(f"{pyproject} (already has [tool.eventmig])")
    else:
        pyproject.write_text(text + ("\n" if text and not text.endswith("\n") else "") + table.lstrip("\n" if not text else ""))
        created.append(f"{pyproject} [tool.eventmig]")
    if example is not None:
        written, kept = scaffold.write(root, example)
        return InitReport(created + written, skipped + kept, example)
    for package, template in (("upcasters", UPCASTERS_TEMPLATE), ("projections", PROJECTIONS_TEMPLATE)):
        target = root / package / "__init__.py"
        if target.exists():
            skipped.append(str(target))
            continue
        target.parent.mkdir(exist_ok=True)
        target.write_text(template)
        created.append(str(target))
    return InitReport(created, skipped)


# --------------------------------------------------------------------- inspect
class InspectReport(msgspec.Struct):
    """What a database holds: its tables, the layouts they look like, their events by (type, version)."""

    store: str
    dialect: str
    tables: list[Any]
    #: the events table eventmig would most likely be pointed at, None if none was recognised
    events_table: str | None
    #: the ``[tool.eventmig]`` settings for it ("" when there is none)
    snippet: str


def inspect(url: str) -> InspectReport:
    """List the tables of the database at ``url``, recognise the known layouts, count their events; write nothing."""
    from .backends.sql import survey

    masked, dialect, tables = survey.survey(url)
    chosen = survey.best(tables)
    return InspectReport(masked, dialect, tables, chosen.table if chosen else None,
                         survey.snippet(masked, chosen) if chosen else "")


# ------------------------------------------------------------------------ demo
class DemoStep(msgspec.Struct):
    step: str
    events: int | None  # None for steps that handle tables, not events (verifying and swapping read models)
    seconds: float
    events_per_second: float | None
    result: str


class DemoReport(msgspec.Struct):
    store: str
    steps: list[DemoStep]
    ok: bool


DEFAULT_DEMO_STORE = "sqlite:///eventmig-demo.db"


def _store_table(url: str) -> str:
    """``[tool.eventmig]`` for an existing database: its recognised events table, or a new eventmig store in it."""
    found = inspect(url)
    if found.snippet:
        return found.snippet
    open_store(url, create=False, init=True).close()  # nothing to adopt: eventmig's own tables, asked for
    return PYPROJECT_TABLE.lstrip("\n").replace('"sqlite:///eventmig.db"', f'"{found.store}"')


def demo(
    settings: Settings,
    *,
    events: int = 100_000,
    seed_only: bool = False,
    store_url: str | None = None,
    progress: Progress = SILENT,
) -> DemoReport:
    """Seed a fresh store with the shop's legacy history and run the pipeline on it.

    The default demo store is recreated on every run; any other store given
    must be empty, so a demo never mixes with real events.
    """
    if not seed_only and not settings.upcasters:
        raise ConfigError(
            "the demo runs the reference shop service: write it here with `eventmig init --example shop` "
            "(or run the demo from a clone of the eventmig repository, `make demo`)"
        )
    url = store_url or DEFAULT_DEMO_STORE
    shown = mask_url(url)  # the report is printed: never the password (the store's own form, once it is open)
    if store_url is None:
        _remove_sqlite_files(url)
    demo_settings = Settings(**{**settings.__dict__, "store": url, "read_models": None})
    steps: list[DemoStep] = []
    with open_configured_store(demo_settings, create=True) as store:
        shown = store.url
        if store.head_position() is not None or len(store.epochs()) > 1:
            raise ConfigError(f"the demo needs an empty store and {store.url} has events; pass another --store")
        started = time.perf_counter()
        with progress.task("seed legacy shop events", events) as task:
            n = seed(store, events, batch_size=10_000)
            task.advance(n)
        steps.append(_step("seed", n, started, f"{n} legacy events"))
    if seed_only:
        return DemoReport(shown, steps, True)

    started = time.perf_counter()
    m = migrate(demo_settings, progress=progress)
    steps.append(_step("migrate", m.events_read, started,
                       f"{m.events_written} written, {m.dropped} dropped, {m.quarantined} quarantined"))
    started = time.perf_counter()
    v = verify(demo_settings, progress=progress)
    steps.append(_step("verify", v.source_events + v.target_events, started, "digests match" if v.ok else "; ".join(v.problems)))
    if not v.ok:
        return DemoReport(shown, steps, False)
    started = time.perf_counter()
    s = switch(demo_settings, progress=progress)
    steps.append(_step("switch", s.verification.source_events + s.verification.target_events if s.verification else 0,
                       started, f"epoch {s.from_epoch} -> {s.to_epoch}"))
    if not demo_settings.projections:
        return DemoReport(shown, steps, True)
    r = rebuild(demo_settings, progress=progress)
    tables = [t for p in r.projections for t in p.tables]
    rows = sum(t.rows for t in tables)
    steps.append(_timed("rebuild", r.events_read, r.timings.get("fold", 0.0),
                        f"{len(r.projections)} projections, {r.workers} workers, {rows} rows"))
    # the last two steps handle tables, not events: an events/s of theirs would only divide the rebuild's
    # events by the time of a table scan or of a rename
    steps.append(_timed("verify read models", None, r.timings.get("verify", 0.0),
                        f"{len(tables)} tables, {rows + sum(t.live_rows for t in tables)} rows compared"
                        + ("" if r.ok else ": " + "; ".join(r.problems))))
    if not r.ok:
        return DemoReport(shown, steps, False)
    steps.append(_timed("swap", None, r.timings.get("swap", 0.0),
                        ", ".join(p.name for p in r.projections) + " live (one transaction of renames)"))
    return DemoReport(shown, steps, True)


def _timed(name: str, events: int | None, seconds: float, result: str) -> DemoStep:
    # timings come rounded to the millisecond: a step faster than that did at least events / 1 ms
    rate = round(events / max(seconds, 0.001), 1) if events is not None else None
    return DemoStep(name, events, round(seconds, 3), rate, result)


def _step(name: str, events: int, started: float, result: str) -> DemoStep:
    seconds = time.perf_counter() - started
    return DemoStep(name, events, round(seconds, 3), round(events / seconds, 1) if seconds else 0.0, result)


def _remove_sqlite_files(url: str) -> None:
    path = url[len("sqlite:///"):]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def to_builtins(report: Any) -> Any:
    """A report as JSON-ready builtins (what ``--json`` prints)."""
    return msgspec.to_builtins(report)
