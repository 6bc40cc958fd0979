"""Switch and rollback: make a verified epoch active, atomically, and undo it.

``switch`` verifies first and refuses on any difference. The flip itself is
one store transaction that also re-checks that neither epoch's head moved
since verification: an event appended to the old epoch in the meantime
would otherwise be left behind, and the switch refuses instead.

``rollback`` makes the previous epoch active again, and refuses if
applications have appended to the current one since the switch (those
events exist only there) unless forced; forced, they stay in the retired
epoch, not lost but no longer active.
"""

from __future__ import annotations

import msgspec

from .errors import ConfigError, StoreError, VerificationFailed
from .migrate import LOCK, current_run
from .progress import SILENT, Progress
from .stores.base import EventStore
from .upcasting import CompiledRegistry
from .verify import VerifyReport, verify


class SwitchReport(msgspec.Struct):
    kind: str
    from_epoch: int
    to_epoch: int
    at: float
    verification: VerifyReport | None = None
    hidden_events: int = 0


def switch(
    store: EventStore, compiled: CompiledRegistry, *, batch_size: int = 5000, progress: Progress = SILENT
) -> SwitchReport:
    """Verify the current migration and, only if it passes, make its epoch active."""
    with store.lock(LOCK):
        run = current_run(store)
        if run is None:
            raise ConfigError("nothing to switch to: the active epoch has no migration; run `eventmig migrate` first")
        report = verify(store, compiled, batch_size=batch_size, progress=progress, run=run)
        if not report.ok:
            raise VerificationFailed("switch refused, verification failed: " + "; ".join(report.problems))
        if report.source_advanced_by:
            raise VerificationFailed(
                f"switch refused: {report.source_advanced_by} event(s) were appended to epoch {run.source_epoch} "
                "after the migration; run `eventmig migrate` to catch up, then switch"
            )
        flip = store.switch_epoch(
            run.target_epoch,
            kind="switch",
            expect_heads={run.source_epoch: run.checkpoint, run.target_epoch: report.target_head},
        )
        return SwitchReport("switch", flip.from_epoch, flip.to_epoch, flip.at, verification=report)


def rollback(store: EventStore, *, force: bool = False) -> SwitchReport:
    """Make the epoch that was active before the last switch active again."""
    with store.lock(LOCK):
        active = store.active_epoch()
        history = [s for s in store.switches() if s.to_epoch == active]
        if not history:
            raise ConfigError(f"nothing to roll back: epoch {active} was not made active by a switch")
        last = history[-1]
        current = store.at_epoch(active)
        head = current.head_position()
        appended = current.count_events(after=last.to_head) if last.to_head is not None else current.count_events()
        if appended and not force:
            raise StoreError(
                f"rollback refused: {appended} event(s) were appended to epoch {active} since the switch and "
                f"exist only there; pass --force to roll back anyway (they stay in epoch {active}, retired)"
            )
        flip = store.switch_epoch(last.from_epoch, kind="rollback", expect_heads={active: head})
        return SwitchReport("rollback", flip.from_epoch, flip.to_epoch, flip.at, hidden_events=appended)
