"""Table layouts: which column of an events table holds what eventmig reads.

eventmig's own table (``stream, version, global_position, event_id, type,
data, metadata, recorded_at``) is one layout among others. Teams already
have event stores: tables written by the Python ``eventsourcing`` library, or
a hand-rolled ``events`` table with columns of their own naming. A
:class:`Layout` names, for one events table, the column of each field of a
:class:`~eventmig.events.RecordedEvent`; the SQL backend is parameterised by
it, so jobs see the same store interface whatever the table looks like.

A field a table lacks is None, and its derivation is documented where it is
derived (an event id, for instance, as the UUIDv5 of stream and version).
The layout's name is also what :func:`recognise` answers when it looks at a
table's columns, so an error about a table that is not what the
configuration says can name the layout the table most likely has.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from eventmig.errors import ConfigError

#: the fields of a layout that name columns, in RecordedEvent order
FIELDS = ("stream", "version", "position", "event_id", "type", "data", "metadata", "recorded_at")
#: fields every layout must map to a column: without them there is no event to read
REQUIRED = ("stream", "version", "position", "type", "data")
#: SQLite's implicit row id: a column every rowid table has and no catalog lists
ROWID = "rowid"
#: the places :attr:`Layout.lineage` may name
LINEAGE_PLACES = ("metadata", "table")


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """The columns of one events table, by what they hold; None where the table has no such column.

    ``position`` orders all events of the table (eventmig: ``global_position``,
    eventsourcing: ``notification_id`` or SQLite's ``rowid``). ``version_location``
    says where the schema version lives when the layout fixes it
    (``data:class_version`` for eventsourcing), None leaving it to the
    registry's setting. A service with a layout of its own writes one as
    ``package.module:NAME``: a Layout, or a subclass of it whose fields all
    have defaults.
    """

    name: str
    stream: str
    version: str
    position: str
    type: str
    data: str
    metadata: str | None = None
    event_id: str | None = None
    recorded_at: str | None = None
    version_location: str | None = None
    #: the position column on SQLite, where it differs (eventsourcing's tables: the implicit rowid)
    sqlite_position: str | None = None
    #: where a migrated event's lineage goes: "metadata" (a key of the metadata column) or "table" (the
    #: side table ``eventmig_lineage``, keyed by the target position: for tables with no metadata column,
    #: or whose payload keys become the application's domain attributes)
    lineage: str = "metadata"

    def __post_init__(self) -> None:
        if self.lineage not in LINEAGE_PLACES:
            raise ConfigError(f"layout {self.name!r}: lineage must be one of {', '.join(LINEAGE_PLACES)}, "
                              f"got {self.lineage!r}")

    def for_dialect(self, dialect: str) -> Layout:
        """This layout as it is on ``dialect`` ("sqlite" or "postgresql")."""
        if dialect == "sqlite" and self.sqlite_position:
            return msgspec.structs.replace(self, position=self.sqlite_position)
        return self

    def columns(self) -> dict[str, str]:
        """Field -> column, for the fields this layout maps."""
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f) is not None}

    def missing(self, present: Collection[str]) -> list[str]:
        """The columns this layout needs that a table with ``present`` columns lacks, in field order."""
        have = {c.lower() for c in present}
        return [c for c in self.columns().values() if c.lower() not in have]


EVENTMIG = Layout(
    name="eventmig", stream="stream", version="version", position="global_position", type="type", data="data",
    metadata="metadata", event_id="event_id", recorded_at="recorded_at",
)
#: the ``eventsourcing`` library (9.x): ``stored_events`` on SQLite (its rowid is the notification id),
#: ``<app>_events`` on PostgreSQL; no event id, metadata or record time; the version is ``class_version``
#: in the state, absent meaning 1
EVENTSOURCING = Layout(
    name="eventsourcing", stream="originator_id", version="originator_version", position="notification_id",
    type="topic", data="state", version_location="data:class_version", sqlite_position=ROWID, lineage="table",
)
#: Marten's ``mt_events``: recognised so that an error can name it; eventmig does not read it
MARTEN = Layout(
    name="marten", stream="stream_id", version="version", position="seq_id", type="type", data="data",
    event_id="id", recorded_at="timestamp",
)
PRESETS: dict[str, Layout] = {"eventmig": EVENTMIG, "eventsourcing": EVENTSOURCING}
#: names of the ``layout`` setting that are not a preset
COLUMNS = "columns"


def resolve(
    spec: str, columns: Mapping[str, Any] | None = None, *, load: Callable[[str], Any] | None = None
) -> Layout:
    """The layout the ``layout`` setting names: a preset, ``columns`` (mapped by ``columns``) or ``module:NAME``.

    ``load``: imports ``module:NAME`` from the service's code (the configuration's importer).
    """
    if spec != COLUMNS and columns:
        raise ConfigError(f"[tool.eventmig.columns] maps columns for layout = \"columns\", not layout = {spec!r}")
    if spec in PRESETS:
        return PRESETS[spec]
    if spec == COLUMNS:
        return from_columns(columns or {})
    if ":" in spec:
        return _imported(spec, load)
    raise ConfigError(
        f"unknown layout {spec!r}: use {', '.join(repr(p) for p in PRESETS)}, 'columns' (with "
        "[tool.eventmig.columns]) or 'package.module:NAME'"
    )


def from_columns(columns: Mapping[str, Any]) -> Layout:
    """A layout from ``[tool.eventmig.columns]``: ``stream = "stream_id"``, ``position = "id"``, ..."""
    if not isinstance(columns, Mapping):
        raise ConfigError(f"[tool.eventmig.columns] must be a table of field = \"column\", got {columns!r}")
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise ConfigError(f"[tool.eventmig.columns] has unknown field(s) {', '.join(unknown)}: "
                          f"the fields are {', '.join(FIELDS)}")
    absent = [f for f in REQUIRED if f not in columns]
    if absent:
        raise ConfigError(f"layout = \"columns\" needs [tool.eventmig.columns] to map {', '.join(absent)}")
    wrong = [f for f, c in columns.items() if not isinstance(c, str) or not c]
    if wrong:
        raise ConfigError(f"[tool.eventmig.columns] {', '.join(wrong)} must name a column (a non-empty string)")
    return Layout(name=COLUMNS, **dict(columns))



def _imported(spec: str, load: Callable[[str], Any] | None) -> Layout:
    found = load(spec) if load is not None else None
    if isinstance(found, type) and issubclass(found, Layout):
        try:
            found = found()
        except TypeError as exc:
            raise ConfigError(f"layout {spec}: a Layout class needs defaults for all its fields ({exc})") from None
    if not isinstance(found, Layout):
        raise ConfigError(f"layout {spec} is a {type(found).__name__}, not an eventmig Layout")
    return found


# ------------------------------------------------------------------ recognition
#: names hand-rolled tables give each field, most common first
_GUESSES: dict[str, tuple[str, ...]] = {
    "stream": ("stream_id", "stream", "aggregate_id", "stream_name", "entity_id"),
    "version": ("version", "stream_version", "sequence", "revision", "aggregate_version"),
    "position": ("id", "global_position", "position", "sequence_no", "seq", "global_sequence"),
    "event_id": ("event_id", "uuid", "message_id"),
    "type": ("event_type", "type", "name", "kind"),
    "data": ("payload", "data", "body", "event_data", "state"),
    "metadata": ("metadata", "meta", "headers"),
    "recorded_at": ("created_at", "recorded_at", "occurred_at", "timestamp", "inserted_at"),
}


class Recognised(msgspec.Struct, frozen=True):
    """What a table looks like: the layout name and, for ``columns``, the guessed mapping."""

    layout: str
    columns: dict[str, str] = {}


def recognise(table: str, present: Collection[str], dialect: str) -> Recognised | None:
    """The layout a table with these columns most likely has, or None if it looks like no events table.

    ``present`` holds the catalog's columns, plus ``rowid`` for a SQLite
    rowid table. Snapshot tables of eventsourcing have its events' columns
    but are not events: they are recognised by name and left out.
    """
    have = {c.lower() for c in present}
    for layout in (EVENTMIG, EVENTSOURCING, MARTEN):
        if not layout.for_dialect(dialect).missing(have):
            if layout is EVENTSOURCING and "snapshots" in table.lower():
                return None
            return Recognised(layout.name)
    guessed: dict[str, str] = {}
    for field, names in _GUESSES.items():
        found = next((n for n in names if n in have and n not in guessed.values()), None)
        if found is not None:
            guessed[field] = found
    if all(f in guessed for f in REQUIRED):
        return Recognised(COLUMNS, guessed)
    return None


def likely(table: str, present: Collection[str], dialect: str) -> str:
    """A phrase naming the layout a table most likely has and the settings that say so, for an error message."""
    found = recognise(table, present, dialect)
    if found is None:
        return f"{table!r} does not look like an events table"
    if found.layout == "marten":
        return f"{table!r} looks like Marten's mt_events, which eventmig does not read"
    settings = f'events_table = "{table}", layout = "{found.layout}"'
    if found.layout == COLUMNS:
        mapping = ", ".join(f'{k} = "{v}"' for k, v in found.columns.items())
        return f"{table!r} looks like a plain events table ({settings}, [tool.eventmig.columns] {mapping})"
    return f"{table!r} looks like the {found.layout} layout ({settings})"
