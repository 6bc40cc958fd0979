"""BatchAppend: many streams' appends in one call, on the stand-in and through the backend's writer.

The server's rules for one BatchAppend call: each request (a correlation
id, a stream, an expected revision, events) is appended atomically to its
stream or not at all, with the same revision check and event-id
idempotency as Append, and answered by its correlation id; nothing is
atomic across requests. The backend writes a migration's batch as one such
call (eventmig.backends.esdb.batch_append), with ids derived from the
source events, so a repeated batch is a no-op and never a duplicate.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import WrongCurrentVersionError

from esdb_standin import StandIn
from esdb_standin.protos import shared_pb2, streams_pb2, streams_pb2_grpc
from eventmig.backends import open_store
from eventmig.backends.esdb import batch_append, writing
from eventmig.backends.esdb.batch_append import Request
from eventmig.backends.esdb.lineage import server_id
from eventmig.backends.esdb.names import plain
from eventmig.model.records import TargetEvent


# ------------------------------------------------------------ the stand-in, below the client
def message(event_id: uuid.UUID, type_: str = "T") -> object:
    return streams_pb2.BatchAppendReq.ProposedMessage(
        id=shared_pb2.UUID(string=str(event_id)), metadata={"type": type_, "content-type": "application/json"},
        data=b"{}")


def request(stream: str, events: list[object], expected: int | None) -> object:
    r = streams_pb2.BatchAppendReq(correlation_id=shared_pb2.UUID(string=str(uuid.uuid4())),
                                   proposed_messages=events, is_final=True)
    r.options.stream_identifier.stream_name = stream.encode()
    if expected is None:
        r.options.no_stream.SetInParent()
    else:
        r.options.stream_position = expected
    return r


def call(stub: streams_pb2_grpc.StreamsStub, requests: list[object]) -> dict[str, object]:
    """Each request's answer, by stream name."""
    by_id = {r.correlation_id.string: r.options.stream_identifier.stream_name.decode() for r in requests}
    return {by_id[a.correlation_id.string]: a for a in stub.BatchAppend(iter(requests))}


@pytest.fixture
def stub(esdb_standin: StandIn):
    with grpc.insecure_channel(f"127.0.0.1:{esdb_standin.port}") as channel:
        yield streams_pb2_grpc.StreamsStub(channel)


def streams(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"ba{tag}-{i}" for i in range(n)]


def test_a_conflict_refuses_its_request_whole_and_leaves_the_others_written(stub, esdb_standin: StandIn):
    a, b, c = streams(3)
    ids = {s: [uuid.uuid4() for _ in range(3)] for s in (a, b, c)}
    call(stub, [request(b, [message(ids[b][0])], None)])  # b already has revision 0
    answers = call(stub, [request(s, [message(i) for i in ids[s]], None) for s in (a, b, c)])
    assert {s: answers[s].WhichOneof("result") for s in (a, b, c)} == {a: "success", b: "error", c: "success"}
    wrong = shared_pb2.WrongExpectedVersion()
    assert answers[b].error.details.Unpack(wrong) and wrong.current_stream_revision == 0
    with KurrentDBClient(esdb_standin.url) as client:
        assert [e.id for e in client.get_stream(a)] == ids[a] and [e.id for e in client.get_stream(c)] == ids[c]
        assert [e.id for e in client.get_stream(b)] == ids[b][:1]  # nothing of the refused request, not even its first


def test_a_repeated_call_with_the_same_ids_is_a_no_op_with_the_first_answers(stub, esdb_standin: StandIn):
    names = streams(4)
    ids = {s: [uuid.uuid4() for _ in range(2)] for s in names}
    first = call(stub, [request(s, [message(i) for i in ids[s]], None) for s in names])
    again = call(stub, [request(s, [message(i) for i in ids[s]], None) for s in names])  # new correlation ids
    assert all(again[s].WhichOneof("result") == "success" for s in names)
    assert {s: (a.success.current_revision, a.success.position.commit_position) for s, a in again.items()} == \
        {s: (a.success.current_revision, a.success.position.commit_position) for s, a in first.items()}
    with KurrentDBClient(esdb_standin.url) as client:
        assert all([e.id for e in client.get_stream(s)] == ids[s] for s in names)


def test_a_repeat_that_matches_only_in_part_is_a_conflict_never_a_duplicate(stub, esdb_standin: StandIn):
    [s] = streams(1)
    ids = [uuid.uuid4() for _ in range(3)]
    call(stub, [request(s, [message(i) for i in ids[:2]], None)])
    [answer] = call(stub, [request(s, [message(i) for i in ids], None)]).values()  # two written, one new
    assert answer.WhichOneof("result") == "error"
    with KurrentDBClient(esdb_standin.url) as client:
        assert [e.id for e in client.get_stream(s)] == ids[:2]


# ------------------------------------------------------------ the backend's side
def test_append_many_reports_each_refused_request_and_writes_the_rest(esdb_standin: StandIn):
    a, b, c = streams(3)
    with KurrentDBClient(esdb_standin.url) as client:
        client.append_to_stream(b, events=[NewEvent("T", b"{}")], current_version=StreamState.NO_STREAM)
        requests = [Request(s, None, [NewEvent("T", b"{}") for _ in range(2)]) for s in (a, b, c)]
        failures = batch_append.append_many(client, requests)
        assert [f.request.stream for f in failures] == [b]
        assert isinstance(failures[0].error, WrongCurrentVersionError) and failures[0].error.actual_version == 0
        assert [client.get_current_version(s) for s in (a, b, c)] == [1, 0, 1]
        assert batch_append.append_many(client, []) == []


def test_correlation_ids_are_read_in_both_forms_the_server_sends():
    value = uuid.uuid4()
    msb, lsb = (int.from_bytes(value.bytes[i:i + 8], "big", signed=True) for i in (0, 8))
    structured = shared_pb2.UUID(structured=shared_pb2.UUID.Structured(most_significant_bits=msb,
                                                                          least_significant_bits=lsb))
    assert batch_append._correlation(structured) == value == batch_append._correlation(shared_pb2.UUID(string=str(value)))


def target(stream: str, version: int, source_position: int) -> TargetEvent:
    """A migrated event whose id is derived from its source, as the migration derives it (not a UUID)."""
    meta = ('{"eventmig":{"source":{"epoch":1,"stream":"%s","version":%d,"position":%d,"event_id":"x"},"chain":[]}}'
            % (stream, version, source_position)).encode()
    return TargetEvent(stream, version, f"src/{stream}/{version}", "T", b'{"v":%d}' % version, meta, 1_000_000)


def test_the_planned_ids_are_the_same_every_time_and_derived_from_the_source():
    events = [target("s", v, 10 + v) for v in range(3)]
    ids = [[e.id for a in writing.plan(events, plain(), 0) for e in a.events] for _ in range(2)]
    assert ids[0] == ids[1] == [server_id(f"src/s/{v}")[0] for v in range(3)]


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[TargetEvent], int]:
    """Interleaved events of a few streams, numbered from 0, and where a crashed first attempt stopped."""
    order = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=30))
    seen: dict[str, int] = {}
    events = []
    for position, stream in enumerate(order):
        events.append(target(stream, seen.get(stream, 0), position))
        seen[stream] = seen.get(stream, 0) + 1
    return events, draw(st.integers(0, len(events)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches(), chunk_bytes=st.sampled_from([200, 10_000]))
def test_a_batch_written_again_after_a_partial_write_holds_each_event_once(esdb_standin: StandIn, batch, chunk_bytes,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """A job killed after part of a batch landed, resumed with the whole batch (and with chunks cut small,
    so a stream takes several rounds): every event once, at its revision, with its derived id."""
    events, landed = batch
    monkeypatch.setattr(writing, "MAX_APPEND_BYTES", chunk_bytes)
    tag = uuid.uuid4().hex[:8]
    events = [e._replace(stream=f"p{tag}-{e.stream}") for e in events]
    with open_store(esdb_standin.url) as store:
        store.write_batch(events[:landed])
        store.write_batch(events)
        store.write_batch(events)  # and once more: the retry after a lost answer
        for stream in {e.stream for e in events}:
            held = store.read_stream(stream)
            wanted = [e for e in events if e.stream == stream]
            assert [(e.version, e.event_id, e.data) for e in held] == [(e.version, e.event_id, e.data) for e in wanted]


def test_a_node_lost_before_a_batch_is_a_failure_the_jobs_retry(esdb_node):
    from eventmig import retry

    with open_store(esdb_node.url) as store:
        pinned = store.at_epoch(1)  # asks the pointer nothing more: the batch itself meets the lost node
        esdb_node.stop()
        with pytest.raises(Exception) as failure:
            pinned.write_batch([target("s", 0, 1), target("t", 0, 2)])
        assert retry.is_transient(failure.value), repr(failure.value)
