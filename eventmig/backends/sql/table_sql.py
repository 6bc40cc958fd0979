"""The SQL text of one events table, written once from its layout and its columns' types.

The SQL store speaks of ``stream``, ``version``, ``global_position`` and the
rest through a :class:`TableSQL`: for eventmig's own layout it is exactly the
text the store always used (nothing is cast, nothing converted in Python);
for a table mapped with ``layout = "columns"`` (or a layout of the
service's) each field becomes an expression over the mapped column, with the
casts its type needs, so every job reads the same eight fields in the same
order:

* a ``uuid`` stream or event id is read as text, and compared as a uuid;
* a ``json``/``jsonb``/``text`` payload or metadata is read as UTF-8 bytes and
  written back through the same type;
* a ``timestamptz`` (PostgreSQL) or text (SQLite, as ``CURRENT_TIMESTAMP``
  writes it) record time is read as microseconds since the Unix epoch and
  written back exactly (SQLite text keeps milliseconds);
* a missing event id column: an event id eventmig writes (a migrated event's,
  an append's) is kept in the metadata under :data:`EVENT_ID_KEY`, and read
  back from there; an event the application wrote has the UUIDv5 of
  ``stream/version`` (in :data:`EVENT_ID_NAMESPACE`), the same on every read;
* a missing record time reads as 0 and missing metadata as ``{}``;
* a layout whose schema version lives in the payload (``data:KEY``, as
  eventsourcing's ``class_version``) has it lifted into the metadata under
  the same key, so the registry reads it as ``metadata:KEY`` (absent: 1);
  a payload that is not a JSON object (eventsourcing's zlib-compressed or
  encrypted state) is refused with one line, never read as garbage.

Writes of a layout with no metadata column are refused (:attr:`TableSQL.read_only`
says why): a migration's lineage would have nowhere to go, unless the layout
keeps lineage in a side table (``lineage = "table"``, as the eventsourcing
preset does: see :mod:`.eventsourcing_epochs`). A layout whose version lives
in the payload gets it written back there (eventsourcing: ``class_version``,
absent for version 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from eventmig.errors import ConfigError
from .layouts import EVENTMIG, ROWID, Layout

#: the namespace of event ids derived for tables that have none: uuid5(namespace, "<stream>/<version>")
EVENT_ID_NAMESPACE = uuid.UUID("5b0e7e0c-7d4e-5a8e-9a56-6576656e746d")
#: the metadata key that keeps eventmig's event ids in a table with no event id column
EVENT_ID_KEY = "eventmig_event_id"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_NATIVE_INSERT = "stream, version, event_id, type, data, metadata, recorded_at"
_NATIVE_READ = "stream, version, global_position, event_id, type, data, metadata, recorded_at"
_NATIVE_LEAN = "stream, version, global_position, NULL, type, data, metadata, NULL"

Rows = list[tuple[Any, ...]]


class TableSQL(NamedTuple):
    """SQL fragments for one events table; each column name quoted, each value a ``?`` placeholder."""

    #: the stream column, as WHERE and GROUP BY name it
    stream: str
    #: the stream as text, as SELECT returns it
    stream_text: str
    #: ``<stream> = ?`` with the cast its type needs
    stream_is: str
    version: str
    position: str
    type: str
    #: the eight fields of a RecordedEvent, in its order
    read: str
    #: the same with None for the event id and record time
    lean: str
    #: the columns an insert names (the position is the database's to assign)
    insert_columns: str
    #: the placeholders of those columns, with their casts
    insert_values: str
    #: True: eventmig's own table, written by binary COPY, rows used as the driver returns them
    native: bool
    #: rows as read -> RecordedEvent-ordered tuples (derived fields filled in); None: as they are
    decode: Callable[[Rows], Rows] | None
    #: why this table cannot be written by eventmig, None if it can
    read_only: str | None
    #: a record time written is read back to the microsecond (SQLite text times keep milliseconds)
    exact_times: bool = True
    #: metadata written is read back byte for byte (``jsonb`` reorders keys and drops whitespace)
    exact_metadata: bool = True


def native() -> TableSQL:
    """eventmig's own table: the store's SQL as it always was."""
    return TableSQL(
        stream="stream", stream_text="stream", stream_is="stream = ?", version="version", position="global_position",
        type="type", read=_NATIVE_READ, lean=_NATIVE_LEAN, insert_columns=_NATIVE_INSERT,
        insert_values="?, ?, ?, ?, ?, ?, ?", native=True, decode=None, read_only=None,
    )


def build(layout: Layout, dialect: str, quote: Callable[[str], str], types: Mapping[str, str]) -> TableSQL:
    """The SQL of a table with ``layout`` on ``dialect``; ``types``: column name (lower case) -> declared type."""
    layout = layout.for_dialect(dialect)
    if layout.columns() == EVENTMIG.columns():
        return native()
    pg = dialect == "postgresql"

    def kind(column: str | None) -> str:
        return (types.get(column.lower(), "") if column else "").lower()

    def name(column: str) -> str:
        return ROWID if column.lower() == ROWID and not pg else quote(column)

    stream = name(layout.stream)
    stream_text, stream_is = _text_of(stream, kind(layout.stream), pg)
    event_id = _text_of(name(layout.event_id), kind(layout.event_id), pg)[0] if layout.event_id else "NULL"
    data = _bytes_of(name(layout.data), kind(layout.data), pg)
    metadata = _bytes_of(name(layout.metadata), kind(layout.metadata), pg) if layout.metadata else "NULL"
    recorded = _micros_of(name(layout.recorded_at), kind(layout.recorded_at), pg) if layout.recorded_at else "NULL"
    version, position, type_ = name(layout.version), name(layout.position), name(layout.type)
    head = f"{stream_text}, {version}, {position}"
    columns = [(layout.stream, "?" if not _is_uuid(kind(layout.stream)) else "CAST(? AS uuid)"),
               (layout.version, "?")]
    if layout.event_id:
        columns.append((layout.event_id, "CAST(? AS uuid)" if _is_uuid(kind(layout.event_id)) else "?"))
    columns += [(layout.type, "?"), (layout.data, _bytes_into(kind(layout.data), pg))]
    if layout.metadata:
        columns.append((layout.metadata, _bytes_into(kind(layout.metadata), pg)))
    if layout.recorded_at:
        columns.append((layout.recorded_at, _micros_into(kind(layout.recorded_at), pg)))
    return TableSQL(
        stream=stream, stream_text=stream_text, stream_is=stream_is, version=version, position=position, type=type_,
        read=f"{head}, {event_id}, {type_}, {data}, {metadata}, {recorded}",
        lean=f"{head}, NULL, {type_}, {data}, {metadata}, NULL",
        insert_columns=", ".join(quote(c) for c, _ in columns), insert_values=", ".join(v for _, v in columns),
        native=False, decode=_decoder(layout), read_only=unwritable(layout),
        # no record-time column: every event reads as recorded at 0, whatever was written
        exact_times=bool(layout.recorded_at) and (pg or "int" in kind(layout.recorded_at)),
        exact_metadata=kind(layout.metadata) != "jsonb",
    )


def unwritable(layout: Layout) -> str | None:
    """Why eventmig cannot write a table of ``layout``, or None if it can."""
    if layout.metadata is None and layout.lineage != "table":
        return f"the {layout.name} layout has no metadata column, so a migration's lineage would have nowhere to go"
    return None


def insert_rows(layout: Layout, events: Sequence[Any]) -> Rows:
    """TargetEvents as the values of :attr:`TableSQL.insert_values`, leaving out the fields the table lacks."""
    keep = [i for i, f in enumerate(("stream", "version", "event_id", "type", "data", "metadata", "recorded_at"))
            if f in ("stream", "version", "type", "data") or getattr(layout, f) is not None]
    if layout.event_id is None and layout.metadata is not None:
        events = [(*e[:5], _with_event_id(e[5], e[2]), *e[6:]) for e in events]
    if payload_version_key(layout):
        events = [(*e[:4], *with_payload_version(layout, e[4], e[5]), *e[6:]) for e in events]
    return [tuple(e[i] for i in keep) for e in events]


def payload_version_key(layout: Layout) -> str | None:
    """The payload key of the schema version, for a layout that keeps it in the payload (``data:KEY``)."""
    kind, _, key = (layout.version_location or "").partition(":")
    return key if kind == "data" and key else None


def with_payload_version(layout: Layout, data: bytes, metadata: bytes) -> tuple[bytes, bytes]:
    """(payload, metadata) as the table stores them: the version the registry wrote into the metadata moved
    back into the payload, where the layout keeps it (the reverse of what reads lift out).

    Version 1 is written as an absent key, as eventsourcing writes it; a
    payload that is not a JSON object is refused with one line.
    """
    key = payload_version_key(layout)
    if key is None or not metadata:
        return data, metadata
    found = _decode(metadata)
    if type(found) is not dict or key not in found:
        return data, metadata
    version = found.pop(key)
    payload = _decode(data)
    if type(payload) is not dict:
        raise ConfigError(f"the {layout.name} layout keeps the schema version in the payload, "
                          f"which must be a JSON object, not {data[:40]!r}")
    payload.pop(key, None)
    if version != 1:
        payload[key] = version
    return _encode(payload), _encode(found)


def _with_event_id(metadata: bytes, event_id: str) -> bytes:
    found = _decode(metadata) if metadata else {}
    if type(found) is not dict:
        return metadata  # not an object: written as it is, and read back with a derived id
    found[EVENT_ID_KEY] = event_id
    return _encode(found)


def derived_event_id(stream: str, version: int) -> str:
    """The event id of an event whose table has none: stable, the same on every read."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{stream}/{version}"))


def _decoder(layout: Layout) -> Callable[[Rows], Rows]:
    derive = layout.event_id is None
    stashed = derive and layout.metadata is not None
    no_time = 0 if layout.recorded_at is None else None  # a lean read's None stays None
    kind, _, version_key = (layout.version_location or "").partition(":")
    lift = version_key if kind == "data" else None
    marker = EVENT_ID_KEY.encode()

    def decode(rows: Rows) -> Rows:
        out = []
        for stream, version, position, event_id, type_, data, metadata, recorded_at in rows:
            metadata = bytes(metadata) if metadata is not None else b"{}"
            data = bytes(data)
            if lift is not None:
                data, metadata = _lifted(layout, lift, stream, version, data, metadata)
            if derive:
                event_id = None
                if stashed and marker in metadata:
                    event_id, metadata = _stashed_id(metadata)
                if event_id is None:
                    event_id = derived_event_id(stream, version)
            out.append((stream, version, position, event_id, type_, data, metadata,
                        recorded_at if recorded_at is not None else no_time))
        return out

    return decode


def _lifted(layout: Layout, key: str, stream: str, version: int, data: bytes, metadata: bytes) -> tuple[bytes, bytes]:
    """The payload without ``key`` and the metadata with it, when the payload has it."""
    try:
        payload = _decode(data)
    except msgspec.DecodeError:
        payload = None
    if type(payload) is not dict:
        what = "zlib-compressed" if data[:1] == b"x" else "not JSON (encrypted?)"
        raise ConfigError(f"{stream}@{version}: the {layout.name} payload is {what}: eventmig reads payloads that "
                          "are JSON objects, neither compressed nor encrypted")
    if key not in payload:
        return data, metadata
    found = _decode(metadata) if metadata else {}
    if type(found) is not dict:
        found = {}
    found[key] = payload.pop(key)
    return _encode(payload), _encode(found)


def _stashed_id(metadata: bytes) -> tuple[str | None, bytes]:
    """The event id kept in ``metadata`` and the metadata without it; (None, as it was) if there is none."""
    try:
        found = _decode(metadata)
    except msgspec.DecodeError:
        return None, metadata
    if type(found) is not dict or type(found.get(EVENT_ID_KEY)) is not str:
        return None, metadata
    event_id = found.pop(EVENT_ID_KEY)
    return event_id, _encode(found)


def _is_uuid(kind: str) -> bool:
    return kind == "uuid"


def _text_of(column: str, kind: str, pg: bool) -> tuple[str, str]:
    """(the column as text, ``column = ?`` with the value cast to the column's type)."""
    if pg and _is_uuid(kind):
        return f"CAST({column} AS TEXT)", f"{column} = CAST(? AS uuid)"
    return column, f"{column} = ?"


def _bytes_of(column: str, kind: str, pg: bool) -> str:
    if not pg:
        return f"CAST({column} AS BLOB)"
    if kind == "bytea":
        return column
    return f"convert_to(CAST({column} AS TEXT), 'UTF8')"


def _bytes_into(kind: str, pg: bool) -> str:
    if not pg:
        return "CAST(? AS TEXT)" if "text" in kind or "char" in kind or "json" in kind else "?"
    if kind == "bytea":
        return "?"
    return f"CAST(convert_from(?, 'UTF8') AS {kind or 'text'})"


def _micros_of(column: str, kind: str, pg: bool) -> str:
    if pg:
        if "timestamp" in kind:
            return f"CAST(extract(epoch FROM {column}) * 1000000 AS BIGINT)"
        return column
    if "int" in kind:
        return column
    # text as CURRENT_TIMESTAMP writes it ('YYYY-MM-DD HH:MM:SS', maybe with .SSS): exact to the millisecond
    return (f"(CAST(strftime('%s', {column}) AS INTEGER) * 1000000 "
            f"+ CAST(substr(strftime('%f', {column}), 4) AS INTEGER) * 1000)")


def _micros_into(kind: str, pg: bool) -> str:
    if pg:
        if "timestamp" in kind:
            return "(TIMESTAMPTZ 'epoch' + CAST(? AS BIGINT) * INTERVAL '1 microsecond')"
        return "?"
    if "int" in kind:
        return "?"
    return "strftime('%Y-%m-%d %H:%M:%f', CAST(? AS INTEGER) / 1000000.0, 'unixepoch')"
