"""``eventmig plan``: which stored event versions reach which current versions.

The plan is read-only: it counts what the store holds and says what the
registered upcasters would do to each pair, before anything is migrated.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from eventmig.config import Settings, load_registry
from eventmig.model.graph import Graph
from eventmig.model.graph import build as build_graph
from eventmig.progress import SILENT, Progress
from eventmig.ports import EventStore
from eventmig.model.chains import CompiledRegistry
from eventmig.command.opening import decode_json, missing_sqlite, nothing_read, open_configured_store


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
    skipped = "not requested (--no-store)" if not scan_store else missing_sqlite(settings.store)
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
            meta = decode_json(row[6]) if row[6] else {}
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
