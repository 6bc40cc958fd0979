"""Where the eventsourcing layout writes a migrated event: its source's position, the version back in the state."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventmig.backends.sql.eventsourcing_epochs import placed, capabilities
from eventmig.backends.sql.layouts import EVENTMIG, EVENTSOURCING
from eventmig.backends.sql.store import SQLEventStore
from eventmig.backends.sql.table_sql import _lifted, with_payload_version
from eventmig.errors import ConfigError

_json = msgspec.json.encode


def target(position: int | None, **extra: object) -> tuple:
    meta = {"class_version": 2, **extra}
    if position is not None:
        meta["eventmig"] = {"source": {"position": position}, "chain": []}
    return ("s", 1, "id", "T", b"{}", _json(meta), 0)


@given(st.lists(st.integers(1, 10**12), unique=True).map(sorted), st.integers(0, 10))
def test_a_one_to_one_migration_keeps_every_position(sources: list[int], after: int):
    """Kept or dropped events, any gaps: each event lands at its source's position, with its lineage."""
    sources = [p for p in sources if p > after]
    written = placed(EVENTSOURCING, [target(p) for p in sources], after or None)
    assert [w.position for w in written] == sources == [w.source_position for w in written]
    assert all(w.lineage["source"]["position"] == w.position for w in written)


@given(st.lists(st.integers(1, 50), min_size=1).map(sorted))
def test_an_event_whose_source_position_is_taken_is_refused(sources: list[int]):
    events = [target(p) for p in [*sources, sources[-1]]]  # the last source gives two events: a split
    with pytest.raises(ConfigError, match="a split"):
        placed(EVENTSOURCING, events, None)


def test_an_event_with_no_lineage_comes_after_the_last():
    assert [w.position for w in placed(EVENTSOURCING, [target(None), target(None)], 7)] == [8, 9]


@given(st.dictionaries(st.text(min_size=1).filter(lambda k: k != "class_version"),
                       st.one_of(st.integers(), st.text(), st.fixed_dictionaries(
                           {"_type_": st.just("datetime_iso"), "_data_": st.text()}))),
       st.integers(1, 20))
def test_the_version_goes_back_into_the_state_as_reads_lift_it_out(state: dict, version: int):
    data, metadata = with_payload_version(EVENTSOURCING, _json(state), _json({"class_version": version}))
    stored = msgspec.json.decode(data)
    assert stored.get("class_version") == (version if version > 1 else None)  # absent for 1, as eventsourcing
    assert {k: v for k, v in stored.items() if k != "class_version"} == state  # _type_/_data_ wrappers intact
    assert msgspec.json.decode(metadata) == {}
    read_data, read_meta = _lifted(EVENTSOURCING, "class_version", "s", 1, data, b"{}")
    assert msgspec.json.decode(read_data) == state
    assert msgspec.json.decode(read_meta) == ({"class_version": version} if version > 1 else {})


def test_the_layout_declares_what_its_table_keeps():
    caps = capabilities(SQLEventStore.capabilities, EVENTSOURCING)
    assert caps.lineage == frozenset({"table"}) and not caps.keeps_metadata and not caps.keeps_event_ids
    assert capabilities(SQLEventStore.capabilities, EVENTMIG) == SQLEventStore.capabilities
