"""The v1 ``Streams`` service: Read (reads and catch-up subscriptions), Append, BatchAppend, Delete, Tombstone.

Each handler decodes its request (:mod:`.wire`), asks the event log
(:mod:`.store`) and answers the way the server does, including the way it
fails, since clients map those answers to their exceptions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from . import wire
from .filters import filter_from
from .protos import streams_pb2, streams_pb2_grpc
from .store import (
    AppendTooLarge,
    EventLog,
    StreamDeleted,
    StreamNotFound,
    WrongExpectedVersion,
)
from .subscriptions import CaughtUp, Checkpoint, Event, Item, subscribe_to_all, subscribe_to_stream

_FORWARDS_FROM_END = 2**64  # a revision no stream reaches: reading forwards from the end finds nothing


class StreamsService(streams_pb2_grpc.StreamsServicer):
    def __init__(self, log: EventLog, stopping: threading.Event) -> None:
        self._log = log
        self._stopping = stopping
        self._live = 0
        self._live_lock = threading.Lock()

    @property
    def live_subscriptions(self) -> int:
        """Subscriptions still being served: a client that went away, killed or not, leaves none behind."""
        with self._live_lock:
            return self._live

    # ------------------------------------------------------------------ Read
    def Read(self, request: object, context: grpc.ServicerContext) -> Iterator[object]:  # noqa: N802
        options = request.options  # type: ignore[attr-defined]
        structured = options.uuid_option.WhichOneof("content") == "structured"
        if options.WhichOneof("count_option") == "subscription":
            yield from self._subscribe(options, structured, context)
        elif options.WhichOneof("stream_option") == "stream":
            yield from self._read_stream(options, structured, context)
        else:
            yield from self._read_all(options, structured)

    def _read_stream(self, options: object, structured: bool, context: grpc.ServicerContext) -> Iterator[object]:
        spec = options.stream  # type: ignore[attr-defined]
        name = spec.stream_identifier.stream_name.decode()
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards  # type: ignore[attr-defined]
        case = spec.WhichOneof("revision_option")
        start = {"revision": spec.revision, "start": 0, "end": None if backwards else _FORWARDS_FROM_END}[case]
        try:
            records = self._log.read_stream(name, start, backwards, options.count)  # type: ignore[attr-defined]
        except StreamNotFound:
            yield wire.stream_not_found(name)
            return
        except StreamDeleted:
            wire.abort_stream_deleted(context, name)
        for record in records:
            yield wire.read_event(record, structured)

    def _read_all(self, options: object, structured: bool) -> Iterator[object]:
        spec = options.all  # type: ignore[attr-defined]
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards  # type: ignore[attr-defined]
        case = spec.WhichOneof("all_option")
        if (case == "end" and not backwards) or (case == "start" and backwards):
            return
        position = spec.position.commit_position if case == "position" else None
        flt = filter_from(options)
        for record in self._log.read_all(position, backwards, options.count, flt.accept):  # type: ignore[attr-defined]
            yield wire.read_event(record, structured)

    def _subscribe(self, options: object, structured: bool, context: grpc.ServicerContext) -> Iterator[object]:
        cancelled = threading.Event()
        context.add_callback(lambda: (cancelled.set(), self._log.wake()))

        def stopped() -> bool:
            return cancelled.is_set() or self._stopping.is_set()

        yield wire.confirmation()
        if options.WhichOneof("stream_option") == "stream":  # type: ignore[attr-defined]
            spec = options.stream  # type: ignore[attr-defined]
            name = spec.stream_identifier.stream_name.decode()
            case = spec.WhichOneof("revision_option")
            items = subscribe_to_stream(self._log, name, spec.revision if case == "revision" else None,
                                        case == "end", stopped)
        else:
            spec = options.all  # type: ignore[attr-defined]
            case = spec.WhichOneof("all_option")
            start = {"start": lambda: 0, "end": self._log.end_index,
                     "position": lambda: self._log.index_after(spec.position.commit_position)}[case]()
            name = ""
            items = subscribe_to_all(self._log, start, filter_from(options), stopped)
        with self._live_lock:
            self._live += 1
        try:
            for item in items:
                yield _subscription_message(item, structured)
        except StreamDeleted:
            wire.abort_stream_deleted(context, name)
        finally:
            with self._live_lock:
                self._live -= 1

    # ---------------------------------------------------------------- Append
    def Append(self, request_iterator: Iterator[object], context: grpc.ServicerContext) -> object:  # noqa: N802
        options = next(request_iterator).options  # type: ignore[attr-defined]
        stream = options.stream_identifier.stream_name.decode()
        expected = wire.expected_revision(options, "expected_stream_revision", "revision")
        try:
            events = [wire.proposed_event(r.proposed_message) for r in request_iterator]  # type: ignore[attr-defined]
            result = self._log.append(stream, expected, events)
        except wire.BadRequest as e:
            wire.abort_bad_request(context, str(e))
        except WrongExpectedVersion as e:
            return wire.append_wrong_expected_version(e.current, expected)
        except StreamDeleted:
            wire.abort_stream_deleted(context, stream)
        except AppendTooLarge:
            wire.abort_too_large(context)
        return wire.append_success(result.last_revision, result.position)

    # ----------------------------------------------------------- BatchAppend
    def BatchAppend(self, request_iterator: Iterator[object], context: grpc.ServicerContext) -> Iterator[object]:  # noqa: N802
        """Batches arrive in parts under a correlation id; each is appended when its final part arrives."""
        pending: dict[str, _PendingBatch] = {}
        for request in request_iterator:
            correlation = wire.uuid_text(request.correlation_id)  # type: ignore[attr-defined]
            if request.HasField("options"):  # type: ignore[attr-defined]
                pending[correlation] = _PendingBatch.start(request.options)  # type: ignore[attr-defined]
            batch = pending.get(correlation)
            if batch is None:
                continue
            batch.parts.append(request.proposed_messages)  # type: ignore[attr-defined]
            if not request.is_final:  # type: ignore[attr-defined]
                continue
            del pending[correlation]
            response = streams_pb2.BatchAppendResp(correlation_id=request.correlation_id,  # type: ignore[attr-defined]
                                                   stream_identifier=wire.stream_identifier(batch.stream))
            outcome = self._append_batch(batch)
            if outcome.DESCRIPTOR.name == "Success":
                response.success.CopyFrom(outcome)
            else:
                response.error.CopyFrom(outcome)
            yield response

    def _append_batch(self, batch: _PendingBatch) -> object:
        if batch.expired:
            return wire.batch_timeout()
        try:
            events = [wire.proposed_event(m) for part in batch.parts for m in part]
            result = self._log.append(batch.stream, batch.expected, events)
        except wire.BadRequest as e:
            return wire.batch_bad_request(str(e))
        except WrongExpectedVersion as e:
            return wire.batch_wrong_expected_version(e.current, batch.expected)
        except StreamDeleted:
            return wire.batch_stream_deleted(batch.stream)
        except AppendTooLarge:
            return wire.batch_too_large()
        return wire.batch_success(result.last_revision, result.position)

    # ------------------------------------------------------ Delete, Tombstone
    def Delete(self, request: object, context: grpc.ServicerContext) -> object:  # noqa: N802
        position = self._remove(request, context, hard=False)
        return streams_pb2.DeleteResp(position=streams_pb2.DeleteResp.Position(
            commit_position=position, prepare_position=position))

    def Tombstone(self, request: object, context: grpc.ServicerContext) -> object:  # noqa: N802
        position = self._remove(request, context, hard=True)
        return streams_pb2.TombstoneResp(position=streams_pb2.TombstoneResp.Position(
            commit_position=position, prepare_position=position))

    def _remove(self, request: object, context: grpc.ServicerContext, hard: bool) -> int:
        options = request.options  # type: ignore[attr-defined]
        stream = options.stream_identifier.stream_name.decode()
        expected = wire.expected_revision(options, "expected_stream_revision", "revision")
        try:
            return (self._log.tombstone if hard else self._log.delete)(stream, expected)
        except WrongExpectedVersion as e:
            wire.abort_wrong_expected_version(context, "Delete", stream, expected, e.current)
        except StreamDeleted:
            wire.abort_stream_deleted(context, stream)


@dataclass(slots=True)
class _PendingBatch:
    stream: str
    expected: int
    expired: bool
    parts: list[Iterable[object]] = field(default_factory=list)

    @classmethod
    def start(cls, options: object) -> _PendingBatch:
        """A zero deadline has already passed: the server answers such a batch with a timeout."""
        deadline = options.deadline if options.WhichOneof("deadline_option") == "deadline" else None  # type: ignore[attr-defined]
        expired = deadline is not None and deadline.seconds <= 0 and deadline.nanos <= 0
        return cls(options.stream_identifier.stream_name.decode(),  # type: ignore[attr-defined]
                   wire.expected_revision(options, "expected_stream_position", "stream_position"), expired)


def _subscription_message(item: Item, structured: bool) -> object:
    if isinstance(item, Event):
        return wire.read_event(item.record, structured)
    if isinstance(item, Checkpoint):
        return wire.checkpoint(item.position)
    assert isinstance(item, CaughtUp)
    return wire.caught_up(item.position, item.revision)

