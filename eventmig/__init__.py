"""eventmig: evolve event schemas without losing history.

Register versioned upcasters, copy the event store through them into a new
epoch, verify both sides by digest, switch atomically (and roll back), and
rebuild read models in parallel.
"""

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
