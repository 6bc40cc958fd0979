"""Translations between the v1 protocol's messages and the stand-in's records and rules.

Kept apart from the service so that the service reads as the server's
behaviour, and this as the wire format: how a record becomes a ``ReadEvent``,
how an expected revision arrives, how each failure is reported (a field of
the response, a status inside a BatchAppend response, or a gRPC status with
the server's own wording, which the clients parse).
"""

from __future__ import annotations

import time
import uuid
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from .protos import has_field, shared_pb2, status_pb2, streams_pb2
from .store import ANY, MAX_APPEND_SIZE, NO_STREAM, STREAM_EXISTS, ProposedEvent, Record

_EXPECTED_BY_CASE = {"any": ANY, "no_stream": NO_STREAM, "stream_exists": STREAM_EXISTS}


class BadRequest(Exception):
    """A proposed event the server refuses to read (a required metadata property is missing)."""


# ------------------------------------------------------------------ requests
def expected_revision(options: object, oneof: str, revision_field: str) -> int:
    """The expected revision of an Append, BatchAppend, Delete or Tombstone request, as a number."""
    case = options.WhichOneof(oneof)  # type: ignore[attr-defined]
    if case == revision_field:
        return int(getattr(options, revision_field))
    return _EXPECTED_BY_CASE[case]


def uuid_text(message: object) -> str:
    """A ``shared.UUID`` as text, whichever of its two forms the client chose."""
    if message.WhichOneof("value") == "structured":  # type: ignore[attr-defined]
        s = message.structured  # type: ignore[attr-defined]
        raw = (s.most_significant_bits.to_bytes(8, "big", signed=True)
               + s.least_significant_bits.to_bytes(8, "big", signed=True))
        return str(uuid.UUID(bytes=raw))
    return str(uuid.UUID(message.string))  # type: ignore[attr-defined]


def proposed_event(message: object) -> ProposedEvent:
    """One proposed message; 'created' or any other metadata key a client sends is ignored."""
    metadata = message.metadata  # type: ignore[attr-defined]
    for required in ("type", "content-type"):
        if required not in metadata:
            raise BadRequest(f"Required Metadata Property '{required}' is missing")
    return ProposedEvent(uuid_text(message.id), metadata["type"], metadata["content-type"],  # type: ignore[attr-defined]
                         bytes(message.data), bytes(message.custom_metadata))  # type: ignore[attr-defined]


# ----------------------------------------------------------------- responses
def uuid_message(text: str, structured: bool) -> object:
    if not structured:
        return shared_pb2.UUID(string=text)
    raw = uuid.UUID(text).bytes
    return shared_pb2.UUID(structured=shared_pb2.UUID.Structured(
        most_significant_bits=int.from_bytes(raw[:8], "big", signed=True),
        least_significant_bits=int.from_bytes(raw[8:], "big", signed=True)))


def stream_identifier(name: str) -> object:
    return shared_pb2.StreamIdentifier(stream_name=name.encode())


def read_event(record: Record, structured_ids: bool = False) -> object:
    """A record as the server sends it: system metadata in the map, the client's own as bytes."""
    event = streams_pb2.ReadResp.ReadEvent.RecordedEvent(
        id=uuid_message(record.event_id, structured_ids),
        stream_identifier=stream_identifier(record.stream),
        stream_revision=record.revision,
        prepare_position=record.position,
        commit_position=record.position,
        metadata={"type": record.type, "content-type": record.content_type, "created": str(record.created)},
        custom_metadata=record.metadata,
        data=record.data,
    )
    return streams_pb2.ReadResp(event=streams_pb2.ReadResp.ReadEvent(event=event, commit_position=record.position))


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def checkpoint(position: int) -> object:
    message = streams_pb2.ReadResp.Checkpoint(commit_position=position, prepare_position=position)
    if has_field(message, "timestamp"):
        message.timestamp.CopyFrom(_now())
    return streams_pb2.ReadResp(checkpoint=message)


def caught_up(position: int | None = None, revision: int | None = None) -> object:
    """The switch to live delivery; newer generations also carry where to resume from."""
    message = streams_pb2.ReadResp.CaughtUp()
    if has_field(message, "timestamp"):
        message.timestamp.CopyFrom(_now())
        if revision is not None:
            message.stream_revision = revision
        if position is not None:
            message.position.CopyFrom(streams_pb2.ReadResp.Position(commit_position=position, prepare_position=position))
    return streams_pb2.ReadResp(caught_up=message)


def confirmation() -> object:
    return streams_pb2.ReadResp(confirmation=streams_pb2.ReadResp.SubscriptionConfirmation(
        subscription_id=str(uuid.uuid4())))


def stream_not_found(name: str) -> object:
    return streams_pb2.ReadResp(stream_not_found=streams_pb2.ReadResp.StreamNotFound(
        stream_identifier=stream_identifier(name)))


def append_success(last_revision: int, position: int) -> object:
    success = streams_pb2.AppendResp.Success(
        position=streams_pb2.AppendResp.Position(commit_position=position, prepare_position=position))
    if last_revision < 0:
        success.no_stream.CopyFrom(shared_pb2.Empty())
    else:
        success.current_revision = last_revision
    return streams_pb2.AppendResp(success=success)


def append_wrong_expected_version(current: int, expected: int) -> object:
    wrong = streams_pb2.AppendResp.WrongExpectedVersion()
    if current < 0:
        wrong.current_no_stream.CopyFrom(shared_pb2.Empty())
    else:
        wrong.current_revision = current
    if expected == ANY:
        wrong.expected_any.CopyFrom(shared_pb2.Empty())
    elif expected == STREAM_EXISTS:
        wrong.expected_stream_exists.CopyFrom(shared_pb2.Empty())
    elif expected == NO_STREAM:
        wrong.expected_no_stream.CopyFrom(shared_pb2.Empty())
    else:
        wrong.expected_revision = expected
    return streams_pb2.AppendResp(wrong_expected_version=wrong)


def batch_success(last_revision: int, position: int) -> object:
    success = streams_pb2.BatchAppendResp.Success(
        position=shared_pb2.AllStreamPosition(commit_position=position, prepare_position=position))
    if last_revision < 0:
        success.no_stream.CopyFrom(empty_pb2.Empty())
    else:
        success.current_revision = last_revision
    return success


def batch_error(code: grpc.StatusCode, name: str, detail: object) -> object:
    """An error inside a BatchAppend response: a status whose details name the failure."""
    packed = any_pb2.Any()
    packed.Pack(detail)
    return status_pb2.Status(code=code.value[0], message=name, details=packed)


def batch_wrong_expected_version(current: int, expected: int) -> object:
    wrong = shared_pb2.WrongExpectedVersion()
    if current < 0:
        wrong.current_no_stream.CopyFrom(empty_pb2.Empty())
    else:
        wrong.current_stream_revision = current
    if expected == ANY:
        wrong.expected_any.CopyFrom(empty_pb2.Empty())
    elif expected == STREAM_EXISTS:
        wrong.expected_stream_exists.CopyFrom(empty_pb2.Empty())
    elif expected == NO_STREAM:
        wrong.expected_no_stream.CopyFrom(empty_pb2.Empty())
    else:
        wrong.expected_stream_position = expected
    return batch_error(grpc.StatusCode.ALREADY_EXISTS, "WrongExpectedVersion", wrong)


def batch_stream_deleted(stream: str) -> object:
    return batch_error(grpc.StatusCode.NOT_FOUND, "StreamDeleted",
                       shared_pb2.StreamDeleted(stream_identifier=stream_identifier(stream)))


def batch_too_large() -> object:
    return batch_error(grpc.StatusCode.INVALID_ARGUMENT, "MaximumAppendSizeExceeded",
                       shared_pb2.MaximumAppendSizeExceeded(maxAppendSize=MAX_APPEND_SIZE))


def batch_timeout() -> object:
    return batch_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Timeout", shared_pb2.Timeout())


def batch_bad_request(message: str) -> object:
    return batch_error(grpc.StatusCode.INVALID_ARGUMENT, "BadRequest", shared_pb2.BadRequest(message=message))


# ------------------------------------------------ failures as gRPC statuses
def abort_stream_deleted(context: grpc.ServicerContext, stream: str) -> NoReturn:
    context.set_trailing_metadata((("exception", "stream-deleted"), ("stream-name", stream)))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Event stream '{stream}' is deleted.")


def abort_wrong_expected_version(context: grpc.ServicerContext, operation: str, stream: str,
                                 expected: int, current: int) -> NoReturn:
    """The wording kurrentdbclient parses (an actual version of -1 means 'not found')."""
    context.set_trailing_metadata((("exception", "wrong-expected-version"), ("stream-name", stream),
                                   ("expected-version", str(expected)), ("actual-version", str(current))))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                  f"{operation} failed due to WrongExpectedVersion. Stream: {stream}, "
                  f"Expected version: {expected}, Actual version: {current}")


def abort_too_large(context: grpc.ServicerContext) -> NoReturn:
    context.set_trailing_metadata((("exception", "maximum-append-size-exceeded"),
                                   ("maximum-append-size", str(MAX_APPEND_SIZE))))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Maximum Append Size of {MAX_APPEND_SIZE} Exceeded.")


def abort_bad_request(context: grpc.ServicerContext, message: str) -> NoReturn:
    context.set_trailing_metadata((("exception", "missing-required-metadata-property"),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
