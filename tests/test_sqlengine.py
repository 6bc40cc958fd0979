"""How eventmig's SQLite writers share one file: a queue on ``<file>.writers`` before SQLite's own lock."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from pathlib import Path

from eventmig.backends.sql.engine import SQLDatabase


def _held_by_someone_else(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_write_transaction_holds_the_writer_queue_and_releases_it(tmp_path: Path):
    db = SQLDatabase(f"sqlite:///{tmp_path / 'x.db'}", what="database")
    queue = f"{tmp_path / 'x.db'}.writers"
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        assert _held_by_someone_else(queue)
    assert not _held_by_someone_else(queue)
    with db.read() as conn:  # readers never queue
        assert not _held_by_someone_else(queue)
    db.engine.dispose()


def _child_takes_a_turn(db: SQLDatabase, started: object, done: object) -> None:
    started.set()  # type: ignore[attr-defined]
    assert db._writers is not None
    with db._writers.turn():  # the handle inherited from the parent, which holds its turn
        done.set()  # type: ignore[attr-defined]


def test_a_forked_process_waits_for_its_parents_turn(tmp_path: Path):
    """A child inheriting the parent's handle has a lock of its own: sharing the parent's would let it in."""
    db = SQLDatabase(f"sqlite:///{tmp_path / 'x.db'}", what="database")
    ctx = multiprocessing.get_context("fork")
    started, done = ctx.Event(), ctx.Event()
    with db.write():
        child = ctx.Process(target=_child_takes_a_turn, args=(db, started, done))
        child.start()
        assert started.wait(10)
        assert not done.wait(0.3)
    assert done.wait(10)
    child.join(10)
    assert child.exitcode == 0
    db.engine.dispose()


def test_nested_turns_in_one_thread_do_not_wait_for_themselves(tmp_path: Path):
    db = SQLDatabase(f"sqlite:///{tmp_path / 'x.db'}", what="database")
    queue = db._writers
    assert queue is not None
    with queue.turn():
        with queue.turn():
            assert _held_by_someone_else(queue.path)
        assert _held_by_someone_else(queue.path)  # the outer turn still holds it
    assert not _held_by_someone_else(queue.path)
    db.engine.dispose()


def _sleep() -> None:
    import time

    time.sleep(60)


def _hold_a_turn_and_fork(url: str, pids: object) -> None:
    import time

    db = SQLDatabase(url, what="database")
    with db.write():
        child = multiprocessing.get_context("fork").Process(target=_sleep)
        child.start()
        pids.put(child.pid)  # type: ignore[attr-defined]
        time.sleep(60)


def test_a_killed_writers_turn_ends_with_it_even_if_its_child_lives_on(tmp_path: Path):
    import signal
    import time

    url = f"sqlite:///{tmp_path / 'x.db'}"
    queue = f"{tmp_path / 'x.db'}.writers"
    ctx = multiprocessing.get_context("fork")
    pids = ctx.Queue()
    writer = ctx.Process(target=_hold_a_turn_and_fork, args=(url, pids))
    writer.start()
    child = pids.get(timeout=10)
    try:
        assert _held_by_someone_else(queue)
        os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while _held_by_someone_else(queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _held_by_someone_else(queue)
        os.kill(child, 0)  # the child is still alive: it just does not hold its parent's turn
    finally:
        os.kill(child, signal.SIGKILL)
        writer.join(10)  # (its end of the pipe join waits on lives on in the child)
