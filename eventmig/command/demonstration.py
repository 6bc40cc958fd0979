"""``eventmig demo``: the whole life of a schema change, run end to end on a scratch store.

It seeds events, then migrates, verifies, switches and rebuilds, timing each
step, so a newcomer sees every command work before pointing one at real data.
"""

from __future__ import annotations

import time

import msgspec

from eventmig.config import Settings
from eventmig.jobs.seed import seed
from eventmig.errors import ConfigError
from eventmig.progress import SILENT, Progress
from eventmig.command.opening import remove_sqlite_files, open_configured_store
from eventmig.command.running import migrate, rebuild, switch, verify


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
    if store_url is None:
        remove_sqlite_files(url)
    demo_settings = Settings(**{**settings.__dict__, "store": url, "read_models": None})
    shown, seeded = _seed_empty_store(demo_settings, events, progress)
    steps = [seeded]
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
    return DemoReport(shown, steps, _rebuild_steps(demo_settings, progress, steps))


def _seed_empty_store(demo_settings: Settings, events: int, progress: Progress) -> tuple[str, DemoStep]:
    """Seed the demo store with the shop's legacy events: its URL as shown, and the seeding step."""
    with open_configured_store(demo_settings, create=True) as store:
        if store.head_position() is not None or len(store.epochs()) > 1:
            raise ConfigError(f"the demo needs an empty store and {store.url} has events; pass another --store")
        started = time.perf_counter()
        with progress.task("seed legacy shop events", events) as task:
            n = seed(store, events, batch_size=10_000)
            task.advance(n)
        # the report is printed: the store's own form of its URL, never the password
        return store.url, _step("seed", n, started, f"{n} legacy events")


def _rebuild_steps(demo_settings: Settings, progress: Progress, steps: list[DemoStep]) -> bool:
    """Rebuild the read models, adding the rebuild, its verification and the swap to ``steps``; whether all passed."""
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
        return False
    steps.append(_timed("swap", None, r.timings.get("swap", 0.0),
                        ", ".join(p.name for p in r.projections) + " live (one transaction of renames)"))
    return True


def _timed(name: str, events: int | None, seconds: float, result: str) -> DemoStep:
    # timings come rounded to the millisecond: a step faster than that did at least events / 1 ms
    rate = round(events / max(seconds, 0.001), 1) if events is not None else None
    return DemoStep(name, events, round(seconds, 3), rate, result)


def _step(name: str, events: int, started: float, result: str) -> DemoStep:
    seconds = time.perf_counter() - started
    return DemoStep(name, events, round(seconds, 3), round(events / seconds, 1) if seconds else 0.0, result)
