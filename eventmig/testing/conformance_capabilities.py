"""Conformance of :class:`~eventmig.ports.Capabilities`: each declaration holds on the store that makes it."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from eventmig.errors import ConfigError, StoreError, WrongExpectedVersion
from eventmig.model.events import new_event
from eventmig.model.records import StreamState, TargetEvent
from eventmig.ports import LINEAGE_PLACES, EventStore
from eventmig.testing.conformance_epochs import needs_epochs
from eventmig.testing.conformance_support import StoreFixtures, events, first, flat

#: stream names longer than this are not tried on a store that declares no limit
LONGEST_NAME_TRIED = 2000
#: metadata shaped like a migrated event's, with its lineage (source event and upcaster chain)
LINEAGE_METADATA = json.dumps(
    {"trace": "t-é", "eventmig": {"source": {"stream": "order-1", "version": 3, "position": 41,
                                             "event_id": "0d1e6a86-4a53-4b3c-9a9e-6d8b7b1d2f10"},
                                  "chain": [["OrderPlaced", 1], ["OrderPlaced", 2]]}},
    separators=(",", ":"), ensure_ascii=False,
).encode()


class CapabilityConformance(StoreFixtures):
    """What the store declares in ``capabilities``, held to."""

    def test_capabilities_are_declared(self, store: EventStore) -> None:
        caps = store.capabilities
        assert caps.first_stream_version in (0, 1)
        assert all(isinstance(flag, bool) for flag in (caps.atomic_batches, caps.contiguous_positions, caps.epochs,
                                                       caps.idempotent_appends, caps.settable_record_times,
                                                       caps.unique_event_ids, caps.keeps_metadata,
                                                       caps.keeps_event_ids))
        assert caps.lineage <= LINEAGE_PLACES
        for limit in (caps.max_stream_name_bytes, caps.max_identifier_bytes):
            assert limit is None or (isinstance(limit, int) and limit > 0)

    def test_first_stream_version_is_what_reads_return(self, store: EventStore) -> None:
        assert store.append("new", events(1), StreamState.NO_STREAM) == first(store)
        assert store.stream_version("new") == first(store)
        assert [e.version for e in store.read_stream("new")] == [first(store)]
        assert [e.version for e in flat(store.read_all())] == [first(store)]
        assert store.read_stream("new", from_version=first(store))[0].version == first(store)
        # the version before the first is "no stream yet": expecting it appends the first event
        assert store.append("other", events(1), first(store) - 1) == first(store)
        with pytest.raises(WrongExpectedVersion):
            store.append("other", events(1), first(store) - 1)

    def test_declared_contiguous_positions_have_no_gaps(self, store: EventStore) -> None:
        """Gaps may come from refused appends; a store that declares none must not leave any."""
        sent = events(2)
        store.append("a", sent)
        with pytest.raises(WrongExpectedVersion):
            store.append("a", events(3), StreamState.NO_STREAM)
        if store.capabilities.unique_event_ids:
            with pytest.raises(StoreError):  # refused after the store tried to write it
                store.append("a", [*events(2), sent[0]], StreamState.ANY)
        store.append("b", events(1))
        store.append("a", events(2))
        positions = [e.position for e in flat(store.read_all(batch_size=2))]
        assert positions == sorted(set(positions)) and len(positions) == 5
        assert store.head_position() == positions[-1]
        if store.capabilities.contiguous_positions:
            assert positions == list(range(positions[0], positions[0] + 5))

    def test_record_times_are_kept_when_declared_settable(self, store: EventStore) -> None:
        at = 1_234_567_890_123_456
        store.append("s", [new_event("A", {}, recorded_at=at)])
        (read,) = store.read_stream("s")
        assert isinstance(read.recorded_at, int)
        if store.capabilities.settable_record_times:
            assert read.recorded_at == at
        if store.capabilities.epochs and store.capabilities.settable_record_times:
            new = store.at_epoch(store.create_epoch(1))
            new.write_batch([TargetEvent("s", first(store), read.event_id, "A", b"{}", b"{}", at + 1)])
            assert new.read_stream("s")[0].recorded_at == at + 1

    def test_stream_names_up_to_the_declared_limit_are_kept_whole(self, store: EventStore) -> None:
        size = store.capabilities.max_stream_name_bytes or LONGEST_NAME_TRIED
        name = ("s-é" * size).encode()[: size - size % 2].decode(errors="ignore")
        name += "x" * (size - len(name.encode()))
        assert len(name.encode()) == size
        store.append(name, events(2))
        store.append(name[:-1], events(1))  # a name one byte shorter is another stream
        assert [e.stream for e in store.read_stream(name)] == [name, name]
        assert sorted(store.list_streams()) == sorted([name, name[:-1]])
        assert store.stream_versions() == {name: first(store) + 1, name[:-1]: first(store)}

    def test_configured_names_over_the_declared_identifier_limit_are_refused(self, store_url: str, store: EventStore) -> None:
        limit = store.capabilities.max_identifier_bytes
        if limit is None:
            pytest.skip(f"{type(store).__name__} declares no limit on the names it derives")
        with pytest.raises(ConfigError, match=str(limit)):
            self.open_another(store_url, table="e" * (limit + 1)).close()
        assert store.count_events() == 0 and store.epochs()  # the store itself is untouched

    def test_lineage_in_metadata_reads_back_exactly(self, store: EventStore) -> None:
        if "metadata" not in store.capabilities.lineage:
            pytest.skip(f"{type(store).__name__} keeps no lineage in event metadata")
        store.append("s", [new_event("A", {"n": 1}, json.loads(LINEAGE_METADATA))])
        assert json.loads(store.read_stream("s")[0].metadata) == json.loads(LINEAGE_METADATA)
        needs_epochs(store)
        new = store.at_epoch(store.create_epoch(1))
        new.write_batch([TargetEvent("s", first(store), "00000000-0000-4000-8000-000000000001", "A", b"{}",
                                     LINEAGE_METADATA, 1)])
        assert new.read_stream("s")[0].metadata == LINEAGE_METADATA
        assert flat(new.read_all_rows())[0][6] == LINEAGE_METADATA
        position = new.read_stream("s")[0].position
        assert new.lineage([position]) == {position: json.loads(LINEAGE_METADATA)["eventmig"]}

    def test_lineage_in_a_side_table_reads_back_by_position(self, store: EventStore) -> None:
        """A store that keeps lineage beside the events, keyed by their position, gives it back by position,
        and leaves it out of what the application reads (its payload and metadata)."""
        if "table" not in store.capabilities.lineage:
            pytest.skip(f"{type(store).__name__} keeps no lineage in a side table")
        needs_epochs(store)
        new = store.at_epoch(store.create_epoch(1))
        new.write_batch([TargetEvent("s", first(store), "00000000-0000-4000-8000-000000000001", "A", b'{"n":1}',
                                     LINEAGE_METADATA, 1)])
        written = new.read_stream("s")[0]
        assert new.lineage([written.position]) == {written.position: json.loads(LINEAGE_METADATA)["eventmig"]}
        assert b"eventmig" not in written.data and b"eventmig" not in written.metadata
        assert store.lineage([written.position]) == {}  # the active epoch's event at that position has none

    def test_url_never_shows_a_password(self, store_url: str) -> None:
        parts = urlsplit(store_url)
        if not parts.username:
            pytest.skip("this store's URL names no user, so it carries no password")
        with_password = parts._replace(netloc=parts.netloc.replace(f"{parts.username}@", f"{parts.username}:hunter2@", 1))
        with self.open_another(with_password.geturl()) as s:
            assert "hunter2" not in s.url and "***" in s.url
