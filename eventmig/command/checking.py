"""``eventmig check`` and its recorded cases: run the upcasters over samples of stored events.

A check finds the events an upcaster cannot read before a migration meets them;
recording and accepting cases turns those samples into the project's test cases.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from eventmig.config import Settings, load_registry
from eventmig.errors import ConfigError, UpcastError
from eventmig.model.nesting import too_deep
from eventmig.progress import SILENT, Progress
from eventmig.ports import EventStore
from eventmig.model.chains import CompiledRegistry
from eventmig.model.steps import EventContext
from eventmig.command.opening import decode_json, missing_sqlite, open_configured_store
from eventmig.command.planning import StoredCounts, StoredPair


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
    skipped = "not requested (--no-store)" if not scan_store else missing_sqlite(settings.store)
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
    if scan_store and missing_sqlite(settings.store) is None:
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
        meta = decode_json(metadata) if metadata else {}
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
