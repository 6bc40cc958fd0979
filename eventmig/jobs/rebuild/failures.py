"""One-line messages for events that do not decode and code that fails while folding."""

from __future__ import annotations

from typing import Any

import msgspec

from eventmig.errors import UpcastError
from eventmig.jobs.rebuild.reports import RebuildFailed

#: what a payload that does not decode (or upcast) raises on its way to a handler
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UpcastError)


def skip(row: tuple[Any, ...]) -> None:
    """Events that become head events no unit here handles."""


def failed(row: tuple[Any, ...], reason: Any) -> RebuildFailed:
    return RebuildFailed(f"cannot decode {event_label(row)}: {reason}")


def event_label(row: tuple[Any, ...]) -> str:
    """``T event at stream@version (position p, id i)``; a lean read leaves the id out."""
    event_id = f", id {row[3]}" if row[3] is not None else ""
    return f"{row[4]} event at {row[0]}@{row[1]} (position {row[2]}{event_id})"
