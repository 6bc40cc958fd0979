"""Many streams' appends in one BatchAppend call: every stream of a batch in flight at once.

BatchAppend is a bidirectional gRPC stream: the client sends requests,
each carrying a correlation id, a stream, its expected revision and
events; the server appends each request atomically to its stream (with
the same expected-revision check and event-id idempotency as Append) and
answers each by its correlation id, in whatever order the writes
complete. Nothing is atomic across requests: one request's conflict
leaves the others written.

kurrentdbclient sends one request per call (``append_to_stream`` with a
list of events opens a call, sends, waits): a batch touching thousands of
streams would be thousands of round trips. Here one call carries a
request per stream, built and read with the client's own request and
response converters, so the server's answers map to the client's
exceptions exactly as they do for ``append_to_stream``. Those converters
and the stub are the client's internals (kurrentdbclient 1.x, which the
extra pins); every test that writes through the backend exercises them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec


class Request(msgspec.Struct, frozen=True):
    """One atomic append: ``events`` (client NewEvents) to ``stream`` after revision ``expected``
    (None: the stream must not exist yet)."""

    stream: str
    expected: int | None
    events: list[Any]


class Failure(msgspec.Struct, frozen=True):
    """A request the server refused, with the client's exception for its answer."""

    request: Request
    error: Exception


def append_many(client: Any, requests: Sequence[Request]) -> list[Failure]:
    """Send every request in one BatchAppend call; return those the server refused (the rest are written).

    A failure of the call itself (node down, deadline) is raised as the
    client's exception: then any of the requests may or may not have been
    written, and repeating them with the same event ids is a no-op for
    those that were.
    """
    if not requests:
        return []
    import grpc
    from kurrentdbclient import StreamState
    from kurrentdbclient.common import handle_rpc_error
    from kurrentdbclient.exceptions import KurrentDBClientError

    service = client.streams
    timeout = client._default_deadline  # as append_to_stream: the connection string's DefaultDeadline
    pending: dict[uuid.UUID, Request] = {}

    def messages() -> Iterator[Any]:
        """Built as gRPC sends them, so the server works on the first while the rest are encoded."""
        for request in requests:
            correlation = uuid.uuid4()
            pending[correlation] = request  # before it is sent: its answer finds it
            current = StreamState.NO_STREAM if request.expected is None else request.expected
            yield service._construct_batch_append_req(
                stream_name=request.stream, current_version=current, events=request.events,
                timeout=timeout, correlation_id=correlation)

    failures: list[Failure] = []
    unanswered = len(requests)
    try:
        answers = service._stub.BatchAppend(
            messages(), timeout=timeout, metadata=service._metadata(client._call_metadata, requires_leader=True),
            credentials=client._call_credentials)
        for answer in answers:
            request = pending.pop(_correlation(answer.correlation_id), None)
            if request is None:
                continue  # not one of ours (the server echoes ids; this would be its bug): ignore
            unanswered -= 1
            current = StreamState.NO_STREAM if request.expected is None else request.expected
            try:
                service._convert_batch_append_resp(answer, request.stream, current)
            except KurrentDBClientError as exc:
                failures.append(Failure(request, exc))
    except grpc.RpcError as exc:
        if unanswered:  # the call failed before every request was answered (after: nothing is lost)
            raise handle_rpc_error(exc) from None
    if unanswered:
        raise KurrentDBClientError(f"BatchAppend ended with {unanswered} request(s) unanswered")
    return failures


def _correlation(message: Any) -> uuid.UUID:
    """A ``shared.UUID`` as sent or as the server rebuilt it (its timeouts answer in the structured form)."""
    if message.WhichOneof("value") == "structured":
        s = message.structured
        return uuid.UUID(bytes=s.most_significant_bits.to_bytes(8, "big", signed=True)
                         + s.least_significant_bits.to_bytes(8, "big", signed=True))
    return uuid.UUID(message.string)
