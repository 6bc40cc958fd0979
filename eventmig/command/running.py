"""The commands that change a store: migrate, verify, switch, rollback, rebuild and follow.

Each opens the configured store and hands it to one job function; the jobs
know nothing of settings files, and these functions know nothing of SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eventmig.jobs import cutover
from eventmig.jobs import migrate as _migrate
from eventmig.jobs import rebuild as _rebuild
from eventmig.jobs import verify as _verify
from eventmig.config import Settings, load_projections, load_registry
from eventmig.errors import ConfigError
from eventmig.progress import SILENT, Progress
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.retry import retry_policy
from eventmig.jobs import follow as _follow
from eventmig.command.opening import load_stream_map, nothing_read, open_configured_store


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
) -> _rebuild.RebuildReport:
    """Replay the active epoch into the projections' shadow tables, verify them, swap them in."""
    compiled = load_registry(settings)
    projections = load_projections(settings)
    with open_configured_store(settings) as store:
        return _rebuild.rebuild(
            store, projections, registry=compiled, read_models=settings.read_models_url, names=names,
            workers=workers or settings.workers, batch_size=batch_size or settings.rebuild_batch_size,
            accept_changes=accept_changes, swap=swap, restart=restart, retry=retry_policy(settings), progress=progress,
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
