"""What a rebuild reports: per table, per projection, per invocation; and how it fails."""

from __future__ import annotations

import msgspec

from eventmig.errors import EventmigError, ExitCode


class RebuildFailed(EventmigError):
    """A worker failed; the message says why, the exit code is the original error's."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.RUNTIME, transient: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        #: the worker lost its connection (or the like): the rebuild retries from its checkpoints
        self.transient = transient



class TableReport(msgspec.Struct):
    table: str
    rows: int
    live_rows: int
    digest: str
    live_digest: str | None
    added: int
    removed: int
    changed: int
    sample: list[str]


class ProjectionReport(msgspec.Struct):
    name: str
    version: int
    live_version: int | None
    run_id: str
    partitions: int
    resumed: bool
    keys: int
    status: str  # "swapped" | "verified" | "refused"
    tables: list[TableReport]
    problems: list[str] = []


class RebuildReport(msgspec.Struct):
    ok: bool
    store: str
    read_models: str
    epoch: int
    until: int | None
    #: events of the epoch replayed (from the earliest checkpoint of a resumed run)
    events_read: int
    seconds: float
    events_per_second: float
    #: the worker slots the partitions were spread over
    workers: int
    swapped: bool
    projections: list[ProjectionReport]
    #: seconds spent folding into shadow tables, verifying them, swapping them in
    timings: dict[str, float] = {}
    notes: list[str] = []
    problems: list[str] = []
    #: worker processes started for them; 0 when this process folded every slot (small inputs)
    processes: int = 0
