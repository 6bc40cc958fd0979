"""Lineage as EventStoreDB keeps it: flat string keys in the event's metadata, and back.

A client cannot set an event's created time, and KurrentDB's multi-stream
append takes metadata whose values are strings only. So a migrated event
carries where it came from as flat string keys, the ones Kurrent's own
Replicator writes (``$originalCreatedDate``, ``$originalStreamId``,
``$originalEventNumber``, ``$originalEventPosition``) plus eventmig's
(``eventmig.sourceEpoch``, ``eventmig.sourceEventId``, ``eventmig.chain``,
and ``eventmig.eventId`` where the source id was not a UUID).

Reading turns them back: the record time is the original one, the event id
the one it was written with, and the lineage the nested ``eventmig`` key the
other stores hold, which digests leave out. So an event reads the same from
every store, and verification compares stores of different kinds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec

from eventmig.model.events import LINEAGE_KEY

CREATED = "$originalCreatedDate"
STREAM = "$originalStreamId"
NUMBER = "$originalEventNumber"
POSITION = "$originalEventPosition"
EPOCH = "eventmig.sourceEpoch"
SOURCE_ID = "eventmig.sourceEventId"
CHAIN = "eventmig.chain"
EVENT_ID = "eventmig.eventId"
_KEYS = (CREATED, STREAM, NUMBER, POSITION, EPOCH, SOURCE_ID, CHAIN, EVENT_ID)
#: bytes that betray a lineage key, so events without one skip decoding
_MARKERS = (b'"$original', b'"eventmig.')
#: event ids that are not UUIDs map into this namespace (uuid5)
ID_NAMESPACE = uuid.UUID("5b2c3e0a-4f1d-5a8e-9c67-1d0e2f3a4b5c")

_UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def iso_micros(micros: int) -> str:
    """Microseconds since the Unix epoch as ISO 8601 UTC, exact to the microsecond."""
    return (_UNIX + dt.timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def micros(moment: dt.datetime | str) -> int:
    """A datetime (or its ISO form) as microseconds since the Unix epoch."""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return (moment - _UNIX) // _MICRO


def server_id(event_id: str) -> tuple[uuid.UUID, bool]:
    """The UUID the server stores for ``event_id``, and whether it is ``event_id`` itself.

    Deterministic either way, so a repeated write carries the same id and the
    server recognises it.
    """
    try:
        return uuid.UUID(event_id), True
    except ValueError:
        return uuid.uuid5(ID_NAMESPACE, event_id), False


def to_server(metadata: bytes, recorded_at: int, event_id: str) -> tuple[bytes, uuid.UUID]:
    """Metadata as written to the server (lineage flattened, the record time kept), and the event's UUID."""
    meta: dict[str, Any] = _decode(metadata) if metadata else {}
    if type(meta) is not dict:
        meta = {"eventmig.metadata": metadata.decode("utf-8", "replace")}
    lineage = meta.pop(LINEAGE_KEY, None)
    if isinstance(lineage, dict) and isinstance(lineage.get("source"), dict):
        source = lineage["source"]
        meta[STREAM] = str(source.get("stream", ""))
        meta[NUMBER] = str(source.get("version", ""))
        meta[POSITION] = str(source.get("position", ""))
        meta[EPOCH] = str(source.get("epoch", ""))
        meta[SOURCE_ID] = str(source.get("event_id", ""))
        meta[CHAIN] = _encode(lineage.get("chain", [])).decode()
    meta[CREATED] = iso_micros(recorded_at)
    uid, same = server_id(event_id)
    if not same:
        meta[EVENT_ID] = event_id
    return _encode(meta), uid


def from_server(metadata: bytes, created: int, event_id: str) -> tuple[bytes, int, str]:
    """``(metadata, recorded_at, event_id)`` as eventmig reads them back (see the module docstring)."""
    if not any(m in metadata for m in _MARKERS):
        return metadata, created, event_id
    meta = _decode(metadata)
    if type(meta) is not dict:
        return metadata, created, event_id
    flat = {k: meta.pop(k) for k in _KEYS if k in meta}
    if CREATED in flat:
        try:
            created = micros(flat[CREATED])
        except (TypeError, ValueError):
            meta[CREATED] = flat[CREATED]  # not ours: left as it was
    event_id = flat.get(EVENT_ID, event_id)
    if STREAM in flat:
        meta[LINEAGE_KEY] = {
            "source": {"epoch": _int(flat.get(EPOCH)), "stream": flat[STREAM], "version": _int(flat.get(NUMBER)),
                       "position": _int(flat.get(POSITION)), "event_id": flat.get(SOURCE_ID)},
            "chain": _decode(flat[CHAIN]) if CHAIN in flat else [],
        }
    return _encode(meta), created, event_id


def source_position(metadata: bytes) -> int | None:
    """The source position a migrated event came from, or None (an event eventmig did not write)."""
    if b'"$originalEventPosition"' not in metadata:
        return None
    return _int(_decode(metadata).get(POSITION))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
