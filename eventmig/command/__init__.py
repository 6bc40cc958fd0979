"""One function per CLI command, taking :class:`~eventmig.config.Settings` and returning a report.

The CLI (``eventmig.cli``) only parses flags, calls these and prints what they
return; anything a command does can be done from Python the same way, with
the same names, as with Alembic's ``command`` module. The functions live in
the modules of this package, one per family of commands; this module is the
one place they are imported from.
"""

from __future__ import annotations

from eventmig.jobs import cutover  # its reports and errors, as the CLI names them (command.cutover...)
from eventmig.command.opening import (
    load_stream_map,
    nothing_read,
    open_configured_store,
    store_layout,
    to_builtins,
)
from eventmig.command.planning import PlanReport, StoredCounts, StoredPair, plan, plan_graph, stored_versions
from eventmig.command.checking import (
    AcceptReport,
    CheckReport,
    RecordReport,
    SampledFailure,
    StoreCheck,
    accept_cases,
    check,
    record_cases,
    sample_stored,
)
from eventmig.command.running import follow, migrate, rebuild, rollback, switch, verify
from eventmig.command.reporting import (
    EpochStatus,
    FollowerStatus,
    QuarantineEntry,
    QuarantineReport,
    ReadModelStatus,
    RunStatus,
    StatusReport,
    quarantine,
    status,
)
from eventmig.command.scaffolding import (
    InitReport,
    InspectReport,
    PROJECTIONS_TEMPLATE,
    PYPROJECT_TABLE,
    UPCASTERS_TEMPLATE,
    init,
    inspect,
)
from eventmig.command.demonstration import DEFAULT_DEMO_STORE, DemoReport, DemoStep, demo

__all__ = [
    "cutover",
    "AcceptReport",
    "CheckReport",
    "DEFAULT_DEMO_STORE",
    "DemoReport",
    "DemoStep",
    "EpochStatus",
    "FollowerStatus",
    "InitReport",
    "InspectReport",
    "PROJECTIONS_TEMPLATE",
    "PYPROJECT_TABLE",
    "PlanReport",
    "QuarantineEntry",
    "QuarantineReport",
    "ReadModelStatus",
    "RecordReport",
    "RunStatus",
    "SampledFailure",
    "StatusReport",
    "StoreCheck",
    "StoredCounts",
    "StoredPair",
    "UPCASTERS_TEMPLATE",
    "accept_cases",
    "check",
    "demo",
    "follow",
    "init",
    "inspect",
    "load_stream_map",
    "migrate",
    "nothing_read",
    "open_configured_store",
    "plan",
    "plan_graph",
    "quarantine",
    "rebuild",
    "record_cases",
    "rollback",
    "sample_stored",
    "status",
    "store_layout",
    "stored_versions",
    "switch",
    "to_builtins",
    "verify",
]
