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
    from .errors import (
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
    from .events import MetadataKey, NewEvent, RecordedEvent, TypeSuffix, new_event
    from .stores import EventStore, StreamState, open_store
    from .upcasting import CompiledRegistry, EventContext, Registry, emit

__version__ = "0.1.0"

# public name -> the module that defines it; keep in step with the imports above
_LAZY = {
    **dict.fromkeys(
        ["Busy", "ConfigError", "EventmigError", "ExitCode", "RegistryError", "StoreError", "UpcastError",
         "VerificationFailed", "WrongExpectedVersion"],
        "errors",
    ),
    **dict.fromkeys(["MetadataKey", "NewEvent", "RecordedEvent", "TypeSuffix", "new_event"], "events"),
    **dict.fromkeys(["EventStore", "StreamState", "open_store"], "stores"),
    **dict.fromkeys(["CompiledRegistry", "EventContext", "Registry", "emit"], "upcasting"),
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
    "Busy",
    "CompiledRegistry",
    "ConfigError",
    "EventContext",
    "EventStore",
    "EventmigError",
    "ExitCode",
    "MetadataKey",
    "NewEvent",
    "RecordedEvent",
    "Registry",
    "RegistryError",
    "StoreError",
    "StreamState",
    "TypeSuffix",
    "UpcastError",
    "VerificationFailed",
    "WrongExpectedVersion",
    "emit",
    "new_event",
    "open_store",
]
