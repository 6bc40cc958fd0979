"""The stored-event record, its JSON codec, and where an event's schema version lives.

Payloads stay as the bytes the store holds until something needs them: a
migration that passes most events through should not pay to build Python
objects it never looks at. When bytes are produced, they are canonical
(sorted keys, msgspec's shortest float repr), so equal payloads are equal
bytes and digests can be compared across stores.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

#: Metadata key under which eventmig records where a migrated event came from.
LINEAGE_KEY = "eventmig"

_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()

encode_json = _encoder.encode
decode_json = _decoder.decode


def canonical_json(obj: Any) -> bytes:
    """Encode builtins or Structs to canonical JSON bytes (sorted keys, all the way down)."""
    return _encoder.encode(obj)


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as a store returns it.

    ``version`` is the event's place in its stream (stores number from
    ``Capabilities.first_stream_version``); ``position`` is its place in the
    store's commit order, opaque to callers: compare it only with the store's
    own positions, never do arithmetic on it (EventStoreDB's have gaps).
    """

    stream: str
    version: int
    position: int
    event_id: str
    type: str
    data: bytes
    metadata: bytes
    recorded_at: int  # microseconds since the Unix epoch, UTC

    def decoded_data(self) -> Any:
        return _decoder.decode(self.data)

    def decoded_metadata(self) -> dict[str, Any]:
        return _decoder.decode(self.metadata) if self.metadata else {}


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append. ``data`` and ``metadata`` are JSON bytes; see :func:`new_event`."""

    type: str
    data: bytes
    metadata: bytes = b"{}"
    event_id: str = ""
    recorded_at: int = 0


def new_event(
    type: str,
    data: Any,
    metadata: dict[str, Any] | None = None,
    *,
    event_id: str | uuid.UUID | None = None,
    recorded_at: int | None = None,
) -> NewEvent:
    """Build a :class:`NewEvent` from a Struct, dict or JSON bytes payload.

    The event id defaults to a random UUID; migrations pass deterministic ones
    so that a retried batch can be recognised.
    """
    payload = data if isinstance(data, bytes) else _encoder.encode(data)
    return NewEvent(
        type=type,
        data=payload,
        metadata=_encoder.encode(metadata or {}),
        event_id=str(event_id or uuid.uuid4()),
        recorded_at=recorded_at if recorded_at is not None else now_micros(),
    )


def now_micros() -> int:
    return time.time_ns() // 1000


class VersionLocation(Protocol):
    """Where a schema version is kept on a stored event, and how to put it back."""

    def read(self, stored_type: str, metadata: dict[str, Any]) -> tuple[str, int]:
        """Return ``(event type, schema version)`` of a stored event."""

    def write(self, type: str, version: int, metadata: dict[str, Any]) -> str:
        """Record ``version`` for an event of ``type``; return the type name to store.

        May update ``metadata`` in place.
        """

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        """Metadata keys this location owns (left out of digests: the version is hashed itself)."""


@dataclass(frozen=True)
class MetadataKey:
    """The version is an int under a metadata key; a missing key means version 1."""

    key: str = "schema_version"

    def read(self, stored_type: str, metadata: dict[str, Any]) -> tuple[str, int]:
        version = metadata.get(self.key, 1)
        if type(version) is not int or version < 1:
            raise ValueError(f"metadata {self.key!r} must be an int >= 1, got {version!r}")
        return stored_type, version

    def write(self, type: str, version: int, metadata: dict[str, Any]) -> str:
        metadata[self.key] = version
        return type

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        return (self.key,)


@dataclass(frozen=True)
class TypeSuffix:
    """The version is a suffix of the stored type name, as in ``OrderPlaced.v2``.

    A name without the suffix is version 1 and is written back without it, so
    version-1 events keep the names older code wrote.
    """

    separator: str = ".v"

    def read(self, stored_type: str, metadata: dict[str, Any]) -> tuple[str, int]:
        base, sep, suffix = stored_type.rpartition(self.separator)
        if sep and suffix.isdigit() and int(suffix) >= 1:
            return base, int(suffix)
        return stored_type, 1

    def write(self, type: str, version: int, metadata: dict[str, Any]) -> str:
        return type if version == 1 else f"{type}{self.separator}{version}"

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        return ()


def version_location(spec: str) -> VersionLocation:
    """Parse the ``version_key`` setting: ``metadata:KEY`` (or a bare key) or ``type-suffix:SEP``."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        return MetadataKey(spec)
    if kind == "metadata" and arg:
        return MetadataKey(arg)
    if kind == "type-suffix" and arg:
        return TypeSuffix(arg)
    raise ValueError(
        f"unknown schema version location {spec!r}: use 'metadata:KEY' or 'type-suffix:SEPARATOR'"
    )
