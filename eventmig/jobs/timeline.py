"""The history of a store as one timeline: epochs, migrations, switches, rollbacks, rebuilds, swaps.

``eventmig status`` shows it, ordered by time, so an operator reads what
happened to a store in the order it happened, whichever table each fact
was kept in (the store's epochs, runs and switches; the read-model
database's rebuilds and swaps).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from eventmig.model.records import EpochInfo, Run, Switch
from eventmig.ports_readmodels import RebuildRun, SwapRecord

#: the order of entries recorded at the same instant: an epoch before the migration that fills it
_RANK = {"epoch": 0, "migrate": 1, "switch": 2, "rollback": 2, "rebuild": 3, "swap": 4, "read-model rollback": 4}


class TimelineEntry(msgspec.Struct):
    #: when it happened or began (Unix time)
    at: float
    #: "epoch" | "migrate" | "switch" | "rollback" | "rebuild" | "swap" | "read-model rollback"
    kind: str
    what: str
    run_id: str | None = None
    #: a run's or an epoch's status now; None for a switch or a swap, which is done once recorded
    status: str | None = None
    #: a run's last update: with ``at``, the span it ran over
    until: float | None = None
    detail: str = ""


def build(
    epochs: Iterable[EpochInfo], runs: Iterable[Run], switches: Iterable[Switch],
    rebuilds: Iterable[RebuildRun] = (), swaps: Iterable[SwapRecord] = (),
) -> list[TimelineEntry]:
    """The entries of a store's history, oldest first."""
    runs = list(runs)
    made_by_runs = {r.target_epoch for r in runs}  # their runs' entries say so: "migrate epoch 1 -> 2"
    entries = [
        TimelineEntry(e.created_at, "epoch", f"epoch {e.epoch} created", status=e.status)
        for e in epochs if e.epoch not in made_by_runs
    ]
    for r in runs:
        stats = r.stats or {}
        entries.append(TimelineEntry(
            r.started_at, r.kind, f"{r.kind} epoch {r.source_epoch} -> {r.target_epoch}", r.id, r.status, r.updated_at,
            f"read {stats.get('read', 0):,}, written {stats.get('written', 0):,}, "
            f"quarantined {stats.get('quarantined', 0):,}"))
    for s in switches:
        entries.append(TimelineEntry(s.at, s.kind, f"epoch {s.to_epoch} active (was {s.from_epoch})"))
    for b in rebuilds:
        keys = (b.stats or {}).get("keys")
        entries.append(TimelineEntry(
            b.started_at, "rebuild", f"rebuild {b.projection} v{b.version} (epoch {b.epoch})", b.id, b.status,
            b.updated_at, f"{keys:,} keys" if isinstance(keys, int) else ""))
    for w in swaps:
        now = f"v{w.to_version}" if w.to_version is not None else "pre-eventmig tables"
        was = f"was v{w.from_version}" if w.from_version is not None else "replaced tables eventmig did not build"
        kind = "swap" if w.kind == "swap" else "read-model rollback"
        entries.append(TimelineEntry(w.at, kind, f"{w.projection} {now} live", w.run_id, detail=was))
    entries.sort(key=lambda e: (e.at, _RANK.get(e.kind, 9)))
    return entries


