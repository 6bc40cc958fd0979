"""What one measured run does, inside its own fresh process (see ``bench/child.py``).

Each function gets a spec (the store to work on, already prepared by the
harness), does the timed work and returns at least ``events_read`` (events
read from the source: the data set's N) and ``seconds`` (the timed part
only: opening the store and importing modules are outside it).
"""

from __future__ import annotations

import importlib
import time
from typing import Any


def _registry() -> Any:
    import upcasters

    return upcasters.registry.compile()


def eventmig_migrate(spec: dict[str, Any]) -> dict[str, Any]:
    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store

    compiled = _registry()
    store = open_store(spec["url"])
    try:
        started = time.perf_counter()
        report = migrate(store, compiled)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    if report.status != "completed" or report.quarantined:
        raise RuntimeError(f"migrate ended {report.status} with {report.quarantined} quarantined")
    return {"events_read": report.events_read, "seconds": seconds, "events_written": report.events_written}


def eventmig_upcast_read(spec: dict[str, Any]) -> dict[str, Any]:
    """``migrate --dry-run``: read and upcast everything, write nothing."""
    from eventmig.jobs.migrate import migrate
    from eventmig.backends import open_store

    compiled = _registry()
    store = open_store(spec["url"])
    try:
        started = time.perf_counter()
        report = migrate(store, compiled, dry_run=True)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return {"events_read": report.events_read, "seconds": seconds, "events_upcast": report.events_written}


def eventmig_verify(spec: dict[str, Any]) -> dict[str, Any]:
    from eventmig.backends import open_store
    from eventmig.jobs.verify import verify

    compiled = _registry()
    store = open_store(spec["url"])
    try:
        started = time.perf_counter()
        report = verify(store, compiled)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    if not report.ok:
        raise RuntimeError("verify failed: " + "; ".join(report.problems))
    return {
        "events_read": report.source_events,
        "seconds": seconds,
        "target_events_read": report.target_events,
    }


# ---------------------------------------------------------------------- rebuild
def rebuild_available() -> str | None:
    """None if ``eventmig.jobs.rebuild`` and the reference projections are there, else why not."""
    try:
        module = importlib.import_module("eventmig.jobs.rebuild")
    except ImportError as exc:
        return f"not available: eventmig.jobs.rebuild cannot be imported ({exc})"
    if not callable(getattr(module, "rebuild", None)):
        return "not available: eventmig.jobs.rebuild has no rebuild() function"
    try:
        projections = importlib.import_module("projections")
    except ImportError as exc:
        return f"not available: the reference projections cannot be imported ({exc})"
    found = getattr(projections, "projections", None)
    if not found:
        return "not available: the reference projections (projections:projections) are not written yet"
    if ORDER_SUMMARY not in {p.name for p in found}:
        return f"not available: the reference projections have no {ORDER_SUMMARY!r} projection"
    return None


#: the reference projection the rebuild cases run: the read model the baselines compute too
ORDER_SUMMARY = "order_summary"


def eventmig_rebuild(spec: dict[str, Any]) -> dict[str, Any]:
    from eventmig.jobs.rebuild import rebuild
    from eventmig.backends import open_store

    import projections

    compiled = _registry()
    store = open_store(spec["url"])
    try:
        started = time.perf_counter()
        report = rebuild(store, projections.projections, registry=compiled, names=[ORDER_SUMMARY],
                         workers=spec["workers"])
        seconds = time.perf_counter() - started
    finally:
        store.close()
    if not report.ok:
        raise RuntimeError("rebuild failed: " + "; ".join(report.problems))
    rows = sum(getattr(t, "rows", 0) for p in getattr(report, "projections", []) for t in getattr(p, "tables", []))
    # events/s counts the data set's events, as for every case; the report's count is the events replayed
    return {"events_read": spec["n"], "seconds": seconds, "events_replayed": report.events_read, "rows": rows,
            "processes": getattr(report, "processes", None)}


# ------------------------------------------------------------------ the floors
def raw_copy(spec: dict[str, Any]) -> dict[str, Any]:
    from . import raw

    return raw.copy(spec["store"], spec["target"])


def raw_write(spec: dict[str, Any]) -> dict[str, Any]:
    from . import raw

    return raw.write(spec["store"], spec["target"])


def raw_read(spec: dict[str, Any]) -> dict[str, Any]:
    from . import raw

    return raw.read(spec["store"], spec["target"])


def raw_fold(spec: dict[str, Any]) -> dict[str, Any]:
    from . import raw

    return raw.fold(spec["store"], spec["target"])


def raw_fold2(spec: dict[str, Any]) -> dict[str, Any]:
    from . import raw

    return raw.fold2(spec["store"], spec["target"])


# ------------------------------------------------------------ eventsourcing
def es_load(spec: dict[str, Any]) -> dict[str, Any]:
    from pathlib import Path

    from . import dataset, es_baseline

    return es_baseline.load(dataset.read_rows(Path(spec["source"])), spec["app_db"])


def es_read(spec: dict[str, Any]) -> dict[str, Any]:
    from . import es_baseline

    return es_baseline.read(spec["app_db"])


def es_project(spec: dict[str, Any]) -> dict[str, Any]:
    from . import es_baseline

    return es_baseline.project(spec["app_db"], spec["view_db"], spec["n"])


CASES = {
    "eventmig.jobs.migrate": eventmig_migrate,
    "eventmig.upcast-read": eventmig_upcast_read,
    "eventmig.jobs.verify": eventmig_verify,
    "eventmig.jobs.rebuild": eventmig_rebuild,
    "raw.copy": raw_copy,
    "raw.write": raw_write,
    "raw.read": raw_read,
    "raw.fold": raw_fold,
    "raw.fold2": raw_fold2,
    "eventsourcing.load": es_load,
    "eventsourcing.read": es_read,
    "eventsourcing.project": es_project,
}
