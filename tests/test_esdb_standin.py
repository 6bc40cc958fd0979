"""The stand-in node itself: what the contract cannot ask through a client, and what only a stand-in has.

How fast it starts, that it outlives a client killed with SIGKILL, that it
runs as a process of its own, its scavenge, and the protocol details the
clients never exercise (several batches in one BatchAppend call, metadata
keys a client has no business sending).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from esdb_api import Client, NewEvent, StreamState
from esdb_standin import StandIn
from esdb_standin.protos import shared_pb2, streams_pb2, streams_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def node() -> Iterator[StandIn]:
    """A node of the test's own, where a test needs the whole of $all to itself."""
    with StandIn() as fresh:
        yield fresh


def wait_until(condition, seconds: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_node_starts_and_stops_in_well_under_a_second():
    began = time.perf_counter()
    node = StandIn().start()
    started = time.perf_counter() - began
    with Client(node.url) as client:
        assert client.get_commit_position(filter_exclude=[]) > 0  # it serves at once, system events included
    node.stop()
    assert started < 0.5, f"took {started:.3f}s to start"


def test_each_node_keeps_a_store_of_its_own(node: StandIn, esdb_standin: StandIn):
    assert node.port != esdb_standin.port
    stream = f"own-{uuid.uuid4().hex}"
    with Client(node.url) as client:
        client.append_to_stream(stream, events=[NewEvent(type="T", data=b"{}")], current_version=StreamState.NO_STREAM)
    with Client(esdb_standin.url) as other:
        assert other.get_current_version(stream) is StreamState.NO_STREAM


def test_a_client_killed_with_sigkill_mid_subscription_leaves_the_node_serving(esdb_standin: StandIn):
    before = esdb_standin.live_subscriptions
    script = textwrap.dedent(f"""
        import sys
        from esdb_api import Client
        client = Client({esdb_standin.url!r})
        with client.subscribe_to_all(include_caught_up=True) as subscription:
            for item in subscription:
                if item.is_caught_up:
                    print("live", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=REPO / "tests", env={**os.environ, "PYTHONPATH": str(REPO / "tests")})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "live"
        assert esdb_standin.live_subscriptions == before + 1
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    assert wait_until(lambda: esdb_standin.live_subscriptions == before), "the killed client's subscription lingers"
    stream = f"after-kill-{uuid.uuid4().hex}"
    with Client(esdb_standin.url) as client:
        client.append_to_stream(stream, events=[NewEvent(type="T", data=b"{}")], current_version=StreamState.NO_STREAM)
        assert len(client.get_stream(stream)) == 1


def test_a_node_runs_as_a_process_of_its_own():
    child = subprocess.Popen([sys.executable, "-m", "tests.esdb_standin"], stdout=subprocess.PIPE, text=True,
                             cwd=REPO)
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("esdb://127.0.0.1:") and url.endswith("?Tls=false")
        with Client(url) as client:
            client.append_to_stream("p-1", events=[NewEvent(type="T", data=b"{}")], current_version=StreamState.NO_STREAM)
            assert [e.stream_position for e in client.get_stream("p-1")] == [0]
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 0
    finally:
        child.kill()


def test_all_holds_system_events_from_the_start(node: StandIn):
    with Client(node.url) as client:
        everything = list(client.read_all(filter_exclude=[]))
        assert everything and not list(client.read_all())
    assert {"$metadata", "$statsCollected", "PersistentConfig1"} <= {e.type for e in everything}


def test_a_tombstone_is_a_stream_deleted_record_in_all(node: StandIn):
    """As the server writes it; readers of $all must expect it (its revision is the largest there is)."""
    with Client(node.url) as client:
        client.append_to_stream("t-1", events=[NewEvent(type="T", data=b"{}")], current_version=StreamState.NO_STREAM)
        client.tombstone_stream("t-1", current_version=0)
        last = list(client.read_all(backwards=True, limit=1, filter_exclude=[]))[0]
    assert (last.stream_name, last.type, last.stream_position) == ("t-1", "$streamDeleted", 2**63 - 1)


def test_a_scavenge_drops_what_stream_reads_hide_and_keeps_positions(node: StandIn):
    with Client(node.url) as client:
        for stream in ("soft-1", "tb-1", "kept-1"):
            client.append_to_stream(stream, events=[NewEvent(type="T", data=b"{}") for _ in range(3)],
                                    current_version=StreamState.NO_STREAM)
        client.delete_stream("soft-1", current_version=2)
        client.set_stream_metadata("tb-1", metadata={"$tb": 2})
        positions = {(e.stream_name, e.stream_position): e.commit_position for e in client.read_all()}
        assert node.log.scavenge() > 0
        after = {(e.stream_name, e.stream_position): e.commit_position for e in client.read_all()}
        assert set(after) == {("tb-1", 2), ("kept-1", 0), ("kept-1", 1), ("kept-1", 2)}
        assert all(positions[key] == position for key, position in after.items())
        assert [e.stream_position for e in client.get_stream("tb-1")] == [2]


# ----------------------------------------------------- below the client API
@pytest.fixture
def streams(esdb_standin: StandIn) -> Iterator[streams_pb2_grpc.StreamsStub]:
    with grpc.insecure_channel(f"127.0.0.1:{esdb_standin.port}") as channel:
        yield streams_pb2_grpc.StreamsStub(channel)


def proposed(type_: str, metadata: dict[str, str] | None = None) -> object:
    return streams_pb2.BatchAppendReq.ProposedMessage(
        id=shared_pb2.UUID(string=str(uuid.uuid4())),
        metadata=metadata if metadata is not None else {"type": type_, "content-type": "application/json"},
        data=b"{}")


def batch(correlation: str, stream: str | None, messages: list[object], final: bool, **options: object) -> object:
    request = streams_pb2.BatchAppendReq(correlation_id=shared_pb2.UUID(string=correlation),
                                         proposed_messages=messages, is_final=final)
    if stream is not None:
        request.options.stream_identifier.stream_name = stream.encode()
        request.options.no_stream.SetInParent()
        for name, value in options.items():
            getattr(request.options, name).CopyFrom(value)
    return request


def test_one_batch_append_call_carries_several_batches_in_parts(streams, esdb_standin: StandIn):
    """How a writer keeps several streams in flight on one call: answers come by correlation id."""
    a, b = (str(uuid.uuid4()) for _ in range(2))
    sa, sb = (f"multi-{uuid.uuid4().hex}" for _ in range(2))
    requests = [batch(a, sa, [proposed("A")], final=False), batch(b, sb, [proposed("B")], final=True),
                batch(a, None, [proposed("A"), proposed("A")], final=True)]
    answers = {r.correlation_id.string: r for r in streams.BatchAppend(iter(requests))}
    assert set(answers) == {a, b}
    assert answers[a].success.current_revision == 2 and answers[b].success.current_revision == 0
    with Client(esdb_standin.url) as client:
        assert [e.type for e in client.get_stream(sa)] == ["A", "A", "A"]


def test_a_batch_whose_deadline_has_passed_times_out_and_writes_nothing(streams, esdb_standin: StandIn):
    from google.protobuf.duration_pb2 import Duration

    correlation, stream = str(uuid.uuid4()), f"late-{uuid.uuid4().hex}"
    [answer] = streams.BatchAppend(iter([batch(correlation, stream, [proposed("T")], final=True,
                                               deadline=Duration(seconds=0))]))
    assert answer.WhichOneof("result") == "error" and answer.error.details.Is(shared_pb2.Timeout.DESCRIPTOR)
    with Client(esdb_standin.url) as client:
        assert client.get_current_version(stream) is StreamState.NO_STREAM


def test_a_created_time_sent_by_a_client_is_ignored(streams, esdb_standin: StandIn):
    stream = f"created-{uuid.uuid4().hex}"
    message = proposed("T", {"type": "T", "content-type": "application/json", "created": "0", "is-json": "x"})
    [answer] = streams.BatchAppend(iter([batch(str(uuid.uuid4()), stream, [message], final=True)]))
    assert answer.WhichOneof("result") == "success"
    with Client(esdb_standin.url) as client:
        recorded = client.get_stream(stream)[0]
    assert abs(recorded.recorded_at.timestamp() - time.time()) < 60


def test_an_event_without_a_type_is_a_bad_request(streams):
    [answer] = streams.BatchAppend(iter([batch(str(uuid.uuid4()), f"bad-{uuid.uuid4().hex}",
                                               [proposed("T", {"content-type": "application/json"})], final=True)]))
    detail = shared_pb2.BadRequest()
    assert answer.error.details.Unpack(detail) and "'type' is missing" in detail.message


def test_json_metadata_that_is_not_an_object_is_no_metadata(node: StandIn):
    with Client(node.url) as client:
        client.append_to_stream("m-1", events=[NewEvent(type="T", data=b"{}") for _ in range(3)],
                                current_version=StreamState.NO_STREAM)
        client.append_to_stream("$$m-1", events=[NewEvent(type="$metadata", data=json.dumps([2]).encode())],
                                current_version=StreamState.ANY)
        assert len(client.get_stream("m-1")) == 3
