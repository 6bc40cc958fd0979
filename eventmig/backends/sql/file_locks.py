"""Job locks on SQLite: an flock beside the database file, released by the kernel when its holder dies.

SQLite has no advisory locks; a lock file does the same job, and unlike a row
in a table it cannot outlive a killed process. A forked worker closes its
copies of the descriptors, so it never keeps its parent's lock alive.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eventmig.errors import Busy

_process_locks: dict[str, threading.Lock] = {}

#: descriptors whose life is a lock's life (an flock'ed file, an advisory-locked session)
_lock_fds: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child, close its copies of lock descriptors.

    Otherwise a worker process would keep its parent's lock alive after the
    parent is killed, and the job could not be resumed until the worker exited.
    Closing the child's copy leaves the parent's lock untouched.
    """
    for fd in list(_lock_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _lock_fds.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def file_lock(path: str | None, name: str, url: str) -> Iterator[None]:
    """An flock beside the SQLite file: the kernel releases it when its holder dies."""
    if not path or path == ":memory:":
        lock = _process_locks.setdefault(name, threading.Lock())
        if not lock.acquire(blocking=False):
            raise Busy(f"another eventmig job holds the {name!r} lock on {url}")
        try:
            yield
        finally:
            lock.release()
        return
    lock_path = f"{os.path.abspath(path)}.{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another eventmig job holds the {name!r} lock on {url}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _lock_fds.add(fd)
        yield
    finally:
        _lock_fds.discard(fd)
        os.close(fd)
