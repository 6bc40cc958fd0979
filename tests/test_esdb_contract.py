"""What eventmig relies on from EventStoreDB/KurrentDB, pinned through the real client.

Every test runs against the stand-in (tests/esdb_standin/) and, when
EVENTMIG_ESDB_URI names a server, against that server too: the same
assertions hold for both, or the stand-in is wrong. Tests share a node (and
a real server holds other data), so each writes streams of its own and reads
``$all`` from a position it took before writing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from esdb_api import (
    PREFIX_FILTERS,
    CaughtUp,
    Checkpoint,
    Client,
    MaximumAppendSizeExceeded,
    NewEvent,
    NotFound,
    RecordedEvent,
    StreamIsDeleted,
    StreamState,
    WrongCurrentVersion,
)

DELETED_STREAM = 2**63 - 1  # the $tb a soft delete writes
TIMEOUT = 10  # seconds a subscription may take to deliver what it owes


@pytest.fixture
def client(esdb_uri: str) -> Iterator[Client]:
    c = Client(esdb_uri)
    try:
        yield c
    finally:
        c.close()


def new_stream(category: str = "contract") -> str:
    return f"{category}-{uuid.uuid4().hex}"


def events(n: int, type_: str = "Happened") -> list[NewEvent]:
    return [NewEvent(type=type_, data=json.dumps({"n": i}).encode(), metadata=json.dumps({"m": i}).encode())
            for i in range(n)]


def all_since(client: Client, position: int, **filters: object) -> list[RecordedEvent]:
    return list(client.read_all(commit_position=position, **filters))


def ids(recorded: Iterable[RecordedEvent]) -> list[uuid.UUID]:
    return [e.id for e in recorded]


def eventually(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    """For what a real server makes visible a moment after it answers (the stand-in, at once)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# Appending one NewEvent goes through the Append call, a list through BatchAppend:
# both must behave alike, so the write tests run through each.
@pytest.fixture(params=["Append", "BatchAppend"])
def append(request: pytest.FixtureRequest, client: Client):
    def through(stream: str, new: list[NewEvent], current_version: int | StreamState) -> int:
        if request.param == "Append":
            assert len(new) == 1, "the Append path here sends one event"
            return client.append_to_stream(stream, events=new[0], current_version=current_version)
        return client.append_to_stream(stream, events=new, current_version=current_version)

    return through


# -------------------------------------------------------------- revisions
def test_revisions_start_at_zero_and_an_append_returns_its_last_commit_position(client: Client):
    stream, written = new_stream(), events(3)
    position = client.append_to_stream(stream, events=written, current_version=StreamState.NO_STREAM)
    read = client.get_stream(stream)
    assert [e.stream_position for e in read] == [0, 1, 2]
    assert client.get_current_version(stream) == 2
    assert read[-1].commit_position == position
    assert ids(read) == [e.id for e in written]
    assert [(e.type, e.data, e.metadata, e.content_type) for e in read] == \
           [(e.type, e.data, e.metadata, e.content_type) for e in written]
    assert client.get_current_version(new_stream()) is StreamState.NO_STREAM


def test_wrong_expected_revisions_are_refused_and_write_nothing(client: Client, append):
    stream = new_stream()
    append(stream, events(1), StreamState.NO_STREAM)
    append(stream, events(1), 0)
    for wrong in (StreamState.NO_STREAM, 0, 5):
        with pytest.raises(WrongCurrentVersion):
            append(stream, events(1), wrong)
    with pytest.raises(WrongCurrentVersion):
        append(new_stream(), events(1), StreamState.EXISTS)
    with pytest.raises(WrongCurrentVersion):
        append(new_stream(), events(1), 0)
    assert append(stream, events(1), StreamState.EXISTS) > 0
    assert append(stream, events(1), StreamState.ANY) > 0
    assert [e.stream_position for e in client.get_stream(stream)] == [0, 1, 2, 3]


def test_reappending_the_same_event_ids_at_the_same_expected_revision_is_a_no_op(client: Client, append):
    """What makes a resumed migration safe: a retry after a crash answers as the first append did."""
    stream, first, second = new_stream(), events(1), events(1)
    p1 = append(stream, first, StreamState.NO_STREAM)
    p2 = append(stream, second, 0)
    assert append(stream, first, StreamState.NO_STREAM) == p1
    assert append(stream, second, 0) == p2
    assert append(stream, second, StreamState.ANY) == p2  # found by id wherever it is in the stream
    assert ids(client.get_stream(stream)) == [first[0].id, second[0].id]


def test_a_retry_that_matches_only_in_part_is_a_conflict(client: Client):
    stream, written = new_stream(), events(2)
    client.append_to_stream(stream, events=written, current_version=StreamState.NO_STREAM)
    p = client.append_to_stream(stream, events=written, current_version=StreamState.NO_STREAM)
    assert p == client.get_stream(stream)[-1].commit_position
    with pytest.raises(WrongCurrentVersion):
        client.append_to_stream(stream, events=[*written, *events(1)], current_version=StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersion):  # the same ids, expected one revision late
        client.append_to_stream(stream, events=written[1:], current_version=StreamState.NO_STREAM)
    assert len(client.get_stream(stream)) == 2


def test_a_batch_is_written_whole_or_not_at_all(client: Client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersion):
        client.append_to_stream(stream, events=events(50), current_version=0)
    assert len(client.get_stream(stream)) == 2
    last = client.append_to_stream(stream, events=events(50), current_version=1)
    read = client.get_stream(stream)
    assert [e.stream_position for e in read] == list(range(52))
    assert read[-1].commit_position == last


def test_a_batch_over_the_maximum_append_size_is_refused_whole(client: Client):
    """The server's default limit is 1 MiB per append: a writer must cut larger batches."""
    stream = new_stream()
    big = [NewEvent(type="Big", data=b'"' + b"x" * 100_000 + b'"') for _ in range(11)]
    with pytest.raises(MaximumAppendSizeExceeded):
        client.append_to_stream(stream, events=big, current_version=StreamState.NO_STREAM)
    with pytest.raises(NotFound):
        client.get_stream(stream)
    client.append_to_stream(stream, events=big[:10], current_version=StreamState.NO_STREAM)
    assert len(client.get_stream(stream)) == 10


# ---------------------------------------------------------------- positions
def test_commit_positions_increase_with_gaps(client: Client):
    start = client.get_commit_position()
    stream = new_stream()
    client.append_to_stream(stream, events=events(5), current_version=StreamState.NO_STREAM)
    positions = [e.commit_position for e in all_since(client, start) if e.stream_name == stream]
    assert len(positions) == 5
    assert all(b > a + 1 for a, b in zip(positions, positions[1:]))
    assert positions[0] > start


def test_read_all_from_a_position_includes_it_while_a_subscription_from_it_excludes_it(client: Client):
    """So a resumed read must skip the event at its checkpoint, and a resumed subscription must not."""
    stream = new_stream()
    client.append_to_stream(stream, events=events(3), current_version=StreamState.NO_STREAM)
    written = client.get_stream(stream)
    at = written[1].commit_position
    read = [e for e in all_since(client, at) if e.stream_name == stream]
    assert ids(read) == ids(written[1:])
    backwards = [e for e in client.read_all(commit_position=at, backwards=True) if e.stream_name == stream]
    assert ids(backwards) == [written[0].id]
    with client.subscribe_to_all(commit_position=at, timeout=TIMEOUT) as subscription:
        first = next(e for e in subscription if e.stream_name == stream)
    assert first.id == written[2].id


# -------------------------------------------------------------- $all filters
def test_the_default_filter_leaves_out_system_events_and_an_empty_one_does_not(client: Client):
    start = client.get_commit_position()
    stream = new_stream()
    client.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"owner": "contract"})
    default = all_since(client, start)
    assert stream in {e.stream_name for e in default}
    assert not [e for e in default if e.type.startswith("$") or e.type.startswith("PersistentConfig")]
    everything = all_since(client, start, filter_exclude=[])
    assert (f"$${stream}", "$metadata") in {(e.stream_name, e.type) for e in everything}


def test_all_filtered_on_the_server_by_event_type_and_by_stream_name(client: Client):
    start = client.get_commit_position()
    tag = uuid.uuid4().hex[:8]
    a, b = new_stream(f"filtera{tag}"), new_stream(f"filterb{tag}")
    client.append_to_stream(a, events=events(2, f"Placed{tag}") + events(1, f"Paid{tag}"),
                            current_version=StreamState.NO_STREAM)
    client.append_to_stream(b, events=events(1, f"Placed{tag}"), current_version=StreamState.NO_STREAM)
    by_type = all_since(client, start, filter_include=[f"Placed{tag}"])
    assert [(e.stream_name, e.type) for e in by_type] == [(a, f"Placed{tag}")] * 2 + [(b, f"Placed{tag}")]
    by_stream = all_since(client, start, filter_include=[f"filterb{tag}-.*"], filter_by_stream_name=True)
    assert {e.stream_name for e in by_stream} == {b}
    excluded = all_since(client, start, filter_exclude=[r"\$.+", f"Paid{tag}"])
    assert f"Paid{tag}" not in {e.type for e in excluded}
    assert len([e for e in excluded if e.stream_name in (a, b)]) == 3


@pytest.mark.skipif(not PREFIX_FILTERS, reason="this client cannot ask for prefix filters")
def test_all_filtered_on_the_server_by_stream_name_prefix(client: Client):
    """The cheap way to read one category, e.g. an epoch's renamed streams (order.e2-...)."""
    start = client.get_commit_position()
    category = f"order.e{uuid.uuid4().hex[:8]}"
    mine = [new_stream(category) for _ in range(2)]
    for stream in [*mine, new_stream("order")]:
        client.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
    found = all_since(client, start, filter_include=[f"{category}-"], filter_by_stream_name=True,
                      filter_by_prefix=True)
    assert [e.stream_name for e in found] == mine


# ------------------------------------------------------- deleted and truncated
def test_a_soft_deleted_stream_reads_as_not_found_while_all_keeps_its_events(client: Client):
    """A migration copying $all must consult $$stream, or it resurrects deleted data."""
    start = client.get_commit_position()
    stream, written = new_stream(), events(2)
    client.append_to_stream(stream, events=written, current_version=StreamState.NO_STREAM)
    client.delete_stream(stream, current_version=1)
    with pytest.raises(NotFound):
        client.get_stream(stream)
    assert client.get_current_version(stream) is StreamState.NO_STREAM
    assert client.get_stream_metadata(stream)[0] == {"$tb": DELETED_STREAM}
    assert ids(e for e in all_since(client, start) if e.stream_name == stream) == [e.id for e in written]

    again = events(1)  # a later append recreates it, continuing the revisions
    client.append_to_stream(stream, events=again, current_version=StreamState.NO_STREAM)
    # A server rewrites $tb just after acknowledging the append: a read at once may not see it yet.
    assert eventually(lambda: client.get_stream_metadata(stream)[0]["$tb"] == 2)
    read = client.get_stream(stream)
    assert [(e.id, e.stream_position) for e in read] == [(again[0].id, 2)]
    assert len([e for e in all_since(client, start) if e.stream_name == stream]) == 3


def test_deleting_expects_a_revision_and_a_missing_stream_is_not_found(client: Client):
    stream = new_stream()
    with pytest.raises(NotFound):
        client.delete_stream(stream, current_version=StreamState.ANY)
    client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)
    with pytest.raises(WrongCurrentVersion):
        client.delete_stream(stream, current_version=0)
    client.delete_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeleted):
        client.delete_stream(stream, current_version=StreamState.EXISTS)
    with pytest.raises(WrongCurrentVersion):  # the stream is deleted, but its revision stays 1
        client.append_to_stream(stream, events=events(1), current_version=0)


def test_truncate_before_and_max_count_hide_events_from_the_stream_only(client: Client):
    start = client.get_commit_position()
    stream = new_stream()
    client.append_to_stream(stream, events=events(4), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"$tb": 2})
    assert [e.stream_position for e in client.get_stream(stream)] == [2, 3]
    assert [e.stream_position for e in client.get_stream(stream, backwards=True)] == [3, 2]
    client.set_stream_metadata(stream, metadata={"$maxCount": 1})
    assert [e.stream_position for e in client.get_stream(stream)] == [3]
    assert client.get_current_version(stream) == 3
    assert len([e for e in all_since(client, start) if e.stream_name == stream]) == 4


def test_a_tombstoned_stream_is_deleted_for_good_while_all_keeps_its_events(client: Client):
    start = client.get_commit_position()
    stream, written = new_stream(), events(2)
    client.append_to_stream(stream, events=written, current_version=StreamState.NO_STREAM)
    client.tombstone_stream(stream, current_version=1)
    with pytest.raises(StreamIsDeleted):
        client.get_stream(stream)
    with pytest.raises(StreamIsDeleted):
        client.get_stream_metadata(stream)
    with pytest.raises(StreamIsDeleted):
        client.tombstone_stream(stream, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeleted):  # (through BatchAppend; the Append call fails as a failed precondition)
        client.append_to_stream(stream, events=events(2), current_version=StreamState.ANY)
    assert ids(e for e in all_since(client, start) if e.stream_name == stream) == [e.id for e in written]


@pytest.mark.skipif(not PREFIX_FILTERS, reason="this client cannot ask for prefix filters")
def test_what_can_hide_a_stream_s_events_is_found_with_two_filtered_reads_of_all(client: Client):
    """How the backend finds, without reading every stream, the streams whose events $all still holds but a
    stream read hides: metadata events by stream-name prefix ``$$``, tombstones by event-type prefix
    ``$streamDeleted``; and where such a stream now starts is its first event on a stream read."""
    start = client.get_commit_position()
    truncated, deleted, tombstoned, plain = (new_stream() for _ in range(4))
    for stream in (truncated, deleted, tombstoned, plain):
        client.append_to_stream(stream, events=events(3), current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(truncated, metadata={"$tb": 1})
    client.delete_stream(deleted, current_version=2)
    client.tombstone_stream(tombstoned, current_version=2)
    mine = {truncated, deleted, tombstoned, plain}  # the node has other streams, and system ones
    with_metadata = {e.stream_name for e in all_since(client, start, filter_include=["$$"], filter_by_stream_name=True,
                                                      filter_by_prefix=True)}
    assert {name for name in with_metadata if name[2:] in mine} == {f"$${truncated}", f"$${deleted}"}
    tombstones = [e for e in all_since(client, start, filter_include=["$streamDeleted"], filter_by_prefix=True)]
    assert [e.stream_name for e in tombstones if e.stream_name in mine] == [tombstoned]
    assert [e.stream_position for e in client.get_stream(truncated, limit=1)] == [1]
    with pytest.raises(NotFound):
        client.get_stream(deleted, limit=1)
    with pytest.raises(StreamIsDeleted):
        client.get_stream(tombstoned, limit=1)


def test_tombstoning_a_missing_stream_needs_no_expectation(client: Client):
    stream = new_stream()
    with pytest.raises(NotFound):
        client.tombstone_stream(stream, current_version=StreamState.EXISTS)
    client.tombstone_stream(stream, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeleted):
        client.append_to_stream(stream, events=events(2), current_version=StreamState.NO_STREAM)


# ----------------------------------------------------------------- metadata
def test_stream_metadata_is_a_json_object_with_its_own_revisions(client: Client):
    stream = new_stream()
    assert client.get_stream_metadata(stream) == ({}, StreamState.NO_STREAM)
    settings = {"owner": "contract", "n": 3, "nested": {"list": [1, "two"]}, "$maxAge": 3600}
    client.set_stream_metadata(stream, metadata=settings, current_version=StreamState.NO_STREAM)
    assert client.get_stream_metadata(stream) == (settings, 0)
    with pytest.raises(WrongCurrentVersion):
        client.set_stream_metadata(stream, metadata={}, current_version=StreamState.NO_STREAM)
    client.set_stream_metadata(stream, metadata={"owner": "other"}, current_version=0)
    assert client.get_stream_metadata(stream) == ({"owner": "other"}, 1)
    with pytest.raises(NotFound):  # metadata alone does not make a stream
        client.get_stream(stream)


# ------------------------------------------------------------ subscriptions
def test_a_catch_up_subscription_to_all_sends_checkpoints_and_resumes_after_them(client: Client):
    tag = uuid.uuid4().hex
    start = client.get_commit_position()
    stream = new_stream()
    client.append_to_stream(stream, events=events(5, f"Tracked{tag}"), current_version=StreamState.NO_STREAM)
    written = client.get_stream(stream)
    seen, checkpoints = [], []
    with client.subscribe_to_all(commit_position=start, filter_include=[f"Tracked{tag}"], include_checkpoints=True,
                                 include_caught_up=True, window_size=1, checkpoint_interval_multiplier=1,
                                 timeout=TIMEOUT) as subscription:
        for item in subscription:
            if isinstance(item, CaughtUp):
                break
            if isinstance(item, Checkpoint):
                checkpoints.append(item.commit_position)
            else:
                seen.append(item)
        assert ids(seen) == ids(written)
        assert checkpoints, "a filtered subscription sends checkpoints"
        assert checkpoints == sorted(checkpoints)
        assert max(checkpoints) <= client.get_commit_position(filter_exclude=[])
        live = events(1, f"Tracked{tag}")
        client.append_to_stream(stream, events=live, current_version=4)
        assert next(e for e in subscription if not isinstance(e, Checkpoint)).id == live[0].id

    with client.subscribe_to_all(commit_position=seen[2].commit_position, filter_include=[f"Tracked{tag}"],
                                 timeout=TIMEOUT) as resumed:
        again = [next(resumed) for _ in range(3)]
    assert ids(again) == ids(written[3:]) + [live[0].id]


def test_a_catch_up_subscription_to_a_stream_starts_after_the_given_revision(client: Client):
    stream = new_stream()
    client.append_to_stream(stream, events=events(3), current_version=StreamState.NO_STREAM)
    with client.subscribe_to_stream(stream, stream_position=1, include_caught_up=True,
                                    timeout=TIMEOUT) as subscription:
        history = []
        for item in subscription:
            if isinstance(item, CaughtUp):
                break
            history.append(item.stream_position)
        assert history == [2]
        client.append_to_stream(stream, events=events(1), current_version=2)
        assert next(subscription).stream_position == 3


# -------------------------------------------------------------------- time
def test_the_server_sets_the_created_time_whatever_the_client_sends(client: Client):
    """So a migration keeps the original time in lineage metadata: the new event's own is 'now'."""
    stream = new_stream()
    long_ago = datetime(2001, 1, 1, tzinfo=timezone.utc)
    claims = {"created": long_ago.isoformat(), "$originalCreatedDate": long_ago.isoformat()}
    before = datetime.now(timezone.utc)
    client.append_to_stream(stream, events=[NewEvent(type="Old", data=b"{}", metadata=json.dumps(claims).encode())],
                            current_version=StreamState.NO_STREAM)
    after = datetime.now(timezone.utc)
    recorded = client.get_stream(stream)[0]
    skew = timedelta(minutes=5)  # a real server's clock is not this machine's
    assert before - skew <= recorded.recorded_at <= after + skew
    assert json.loads(recorded.metadata) == claims  # kept, as the client's metadata, and nothing more


# ------------------------------------------------------------------ gossip
def test_a_discover_url_finds_the_node_through_gossip(esdb_uri: str):
    scheme, rest = esdb_uri.split("://", 1)
    with Client(f"{scheme}+discover://{rest}") as discovered:
        stream = new_stream()
        discovered.append_to_stream(stream, events=events(1), current_version=StreamState.NO_STREAM)
        assert len(discovered.get_stream(stream)) == 1
