"""An exclusive lock on an EventStoreDB cluster that dies with its holder: a lease in a stream.

The server has no locks and no sessions, so a lock is a stream
(``$eventmig-lock-<name>``) whose last event says who holds it until when;
taking or renewing it is an append with the expected revision of what was
read, so two jobs cannot both take it. The holder renews it from a thread
while it runs. A holder killed with SIGKILL cannot release it, so a lease
is free again when it has expired, or at once when its holder ran on this
machine and its process is gone.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from eventmig.errors import Busy
from .names import lock_stream

#: seconds a lease lasts without renewal (a holder on another machine that died frees it after this)
LEASE_SECONDS = 30.0


class Lease(msgspec.Struct):
    holder: str
    host: str
    pid: int
    expires: float
    released: bool = False


@contextmanager
def hold(client: Any, name: str, shown_url: str) -> Iterator[None]:
    """Hold the lock ``name`` for the ``with`` block; :class:`Busy` if a live holder has it."""
    stream = lock_stream(name)
    me = uuid.uuid4().hex
    revision = _take(client, stream, me, name, shown_url)
    stop = threading.Event()
    state = {"revision": revision}
    renewer = threading.Thread(target=_renew, args=(client, stream, me, state, stop), daemon=True,
                               name=f"eventmig-lease-{name}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            _write(client, stream, Lease(me, socket.gethostname(), os.getpid(), 0.0, released=True), state["revision"])
        except Exception:  # noqa: BLE001 - not released (the node is gone, or the lease was lost): it expires
            pass


def _take(client: Any, stream: str, me: str, name: str, shown_url: str) -> int:
    from kurrentdbclient.exceptions import NotFoundError, WrongCurrentVersionError

    busy = Busy(f"another eventmig job holds the {name!r} lock on {shown_url}")
    try:
        last = client.get_stream(stream, backwards=True, limit=1)
    except NotFoundError:
        last = ()
    revision = last[0].stream_position if last else None
    if last:
        lease = msgspec.json.decode(last[0].data, type=Lease)
        if _alive(lease):
            raise busy
    try:
        return _write(client, stream, _lease(me), revision)
    except WrongCurrentVersionError:
        raise busy from None


def _alive(lease: Lease) -> bool:
    if lease.released or lease.expires < time.time():
        return False
    if lease.host == socket.gethostname():
        try:
            os.kill(lease.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def _lease(me: str) -> Lease:
    return Lease(me, socket.gethostname(), os.getpid(), time.time() + LEASE_SECONDS)


def _write(client: Any, stream: str, lease: Lease, revision: int | None) -> int:
    from kurrentdbclient import NewEvent, StreamState

    expected = StreamState.NO_STREAM if revision is None else revision
    client.append_to_stream(stream, current_version=expected, events=[NewEvent("Lease", msgspec.json.encode(lease))])
    return (revision if revision is not None else -1) + 1


def _renew(client: Any, stream: str, me: str, state: dict[str, int], stop: threading.Event) -> None:
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            state["revision"] = _write(client, stream, _lease(me), state["revision"])
        except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease outlives two of them
            continue
