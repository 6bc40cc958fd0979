"""eventmig: evolve event schemas without losing history.

Register versioned upcasters, copy the event store through them into a new
epoch, verify both sides by digest, switch atomically (and roll back), and
rebuild read models in parallel.

The names below are imported on first use (PEP 562): eventmig's pytest
plugin is loaded into every pytest run of a project that installs eventmig,
and importing the package must not cost such runs anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventmig.errors import (
        Busy,
        ConfigError,
        EventmigError,
        ExitCode,
        RegistryError,
        StoreError,
        UpcastError,
        VerificationFailed,
        WrongExpectedVersion,
    )
    from eventmig.backends import open_store
    from eventmig.model.events import MetadataKey, NewEvent, RecordedEvent, TypeSuffix, new_event
    from eventmig.model.records import StreamState
    from eventmig.model.chains import CompiledRegistry
    from eventmig.model.registry import Registry, emit
    from eventmig.model.steps import EventContext
    from eventmig.jobs.cutover import rollback, switch
    from eventmig.jobs.migrate import migrate
    from eventmig.jobs.rebuild import rebuild
    from eventmig.jobs.verify import verify
    from eventmig.ports import EventStore
    from eventmig.backends.sql.snapshots import load_snapshot
    from eventmig.projection.api import STREAM, Index, Projection, Snapshot, Snapshots

__version__ = "0.1.0"

# public name -> the module that defines it; keep in step with the imports above
_LAZY = {
    **dict.fromkeys(
        ["Busy", "ConfigError", "EventmigError", "ExitCode", "RegistryError", "StoreError", "UpcastError",
         "VerificationFailed", "WrongExpectedVersion"],
        "errors",
    ),
    **dict.fromkeys(["MetadataKey", "NewEvent", "RecordedEvent", "TypeSuffix", "new_event"], "model.events"),
    "EventStore": "ports",
    "StreamState": "model.records",
    "open_store": "backends",
    "CompiledRegistry": "model.chains",
    "EventContext": "model.steps",
    **dict.fromkeys(["Registry", "emit"], "model.registry"),
    **dict.fromkeys(["STREAM", "Index", "Projection", "Snapshot", "Snapshots"], "projection.api"),
    "load_snapshot": "backends.sql.snapshots",
    **dict.fromkeys(["switch", "rollback"], "jobs.cutover"),
    "migrate": "jobs.migrate",
    "verify": "jobs.verify",
    "rebuild": "jobs.rebuild",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "STREAM",
    "Busy",
    "CompiledRegistry",
    "ConfigError",
    "EventContext",
    "EventStore",
    "EventmigError",
    "ExitCode",
    "Index",
    "MetadataKey",
    "NewEvent",
    "Projection",
    "RecordedEvent",
    "Registry",
    "RegistryError",
    "Snapshot",
    "Snapshots",
    "StoreError",
    "StreamState",
    "TypeSuffix",
    "UpcastError",
    "VerificationFailed",
    "WrongExpectedVersion",
    "emit",
    "load_snapshot",
    "migrate",
    "new_event",
    "open_store",
    "rebuild",
    "rollback",
    "switch",
    "verify",
]
