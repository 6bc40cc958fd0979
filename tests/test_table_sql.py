"""The conversions a mapped table's rows go through, for any payload, metadata and id: nothing lost, nothing added."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from eventmig.backends.sql.layouts import EVENTSOURCING, from_columns
from eventmig.backends.sql.table_sql import EVENT_ID_KEY, build, derived_event_id, insert_rows
from eventmig.model.records import TargetEvent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(st.text(max_size=6).filter(lambda k: k != EVENT_ID_KEY), json_values, max_size=4)
NO_IDS = from_columns({"stream": "s", "version": "v", "position": "p", "type": "t", "data": "d", "metadata": "m"})


def quote(name: str) -> str:
    return f'"{name}"'


@given(objects, st.uuids().map(str), st.text(min_size=1, max_size=10), st.integers(1, 10**6))
def test_an_id_kept_in_the_metadata_reads_back_with_the_metadata_as_it_was(metadata, event_id, stream, version):
    sql = build(NO_IDS, "sqlite", quote, {})
    event = TargetEvent(stream, version, event_id, "T", b"{}", msgspec.json.encode(metadata), 7)
    (written,) = insert_rows(NO_IDS, [event])
    stored_metadata = written[4]
    (row,) = sql.decode([(stream, version, 1, None, "T", b"{}", stored_metadata, None)])
    assert row[3] == event_id
    assert msgspec.json.decode(row[6]) == metadata
    assert row[7] == 0  # the table has no record time


@given(st.text(min_size=1, max_size=10), st.integers(1, 10**6), objects)
def test_an_event_the_application_wrote_gets_the_same_derived_id_on_every_read(stream, version, metadata):
    sql = build(NO_IDS, "sqlite", quote, {})
    stored = msgspec.json.encode(metadata)
    first = sql.decode([(stream, version, 1, None, "T", b"{}", stored, None)])[0]
    again = sql.decode([(stream, version, 1, None, "T", b"{}", stored, None)])[0]
    assert first[3] == again[3] == derived_event_id(stream, version)
    assert msgspec.json.decode(first[6]) == metadata


@given(objects, st.one_of(st.none(), st.integers(2, 50)))
def test_class_version_moves_from_the_state_to_the_metadata_and_nothing_else_does(state, class_version):
    sql = build(EVENTSOURCING, "sqlite", quote, {})
    stored = dict(state)
    stored.pop("class_version", None)
    if class_version is not None:
        stored["class_version"] = class_version
    (row,) = sql.decode([("ab" * 16, 1, 1, None, "m:C.E", msgspec.json.encode(stored), None, None)])
    payload, metadata = msgspec.json.decode(row[5]), msgspec.json.decode(row[6])
    assert "class_version" not in payload
    assert payload == {k: v for k, v in stored.items() if k != "class_version"}
    assert metadata == ({} if class_version is None else {"class_version": class_version})


def test_eventmigs_own_layout_keeps_its_statements_exactly():
    from eventmig.backends.sql.layouts import EVENTMIG

    sql = build(EVENTMIG, "postgresql", quote, {})
    assert sql.native and sql.decode is None and sql.read_only is None
    assert sql.read == "stream, version, global_position, event_id, type, data, metadata, recorded_at"
    assert sql.insert_columns == "stream, version, event_id, type, data, metadata, recorded_at"


def test_the_configurations_preset_locations_are_the_presets_own():
    from eventmig.backends.sql.layouts import PRESETS
    from eventmig.config import LAYOUT_VERSION_LOCATIONS

    assert LAYOUT_VERSION_LOCATIONS == {n: p.version_location for n, p in PRESETS.items() if p.version_location}
