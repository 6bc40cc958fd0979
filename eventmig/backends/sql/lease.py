"""A job's lease on a SQL database: the lock that a lost connection cannot take away unnoticed.

A session advisory lock lives and dies with one connection: when the server
drops that connection, the job carries on without its lock and a second job
is admitted beside it. A lease is a row instead, in ``eventmig_leases``:

    name | owner (random, per acquisition) | generation | expires_at | holder (host:pid)

* **acquire**: in one transaction, take the row if it is free, expired, or
  held by a process of this host that no longer exists (a job killed with
  SIGKILL frees its lease at once for a job on the same host, as the old
  lock did); the generation goes up by one. Otherwise :class:`~eventmig.errors.Busy`
  (exit 4), naming the holder and how long the lease has left.
* **renew**: a heartbeat thread pushes ``expires_at`` forward every third of
  the lease's time, on connections of its own; a connection lost meanwhile
  is simply reopened at the next beat. Times are the database's clock, so
  hosts whose clocks disagree still agree on expiry.
* **fence**: every write transaction of a leased handle first reads the
  row (``FOR SHARE`` on PostgreSQL: a takeover waits for the transaction,
  and the transaction sees a takeover that committed first) and goes on only
  if owner and generation are still this job's; otherwise it rolls back
  with :class:`~eventmig.errors.LeaseLost`. A write therefore never lands
  beside another job's, however long the job was cut off: the generation is
  the fencing token.
* **release**: after the work, the row is marked expired. A release that
  fails (the connection is gone) is no failure: the lease expires by itself,
  and this process remembers it gave it up, so a next job here need not wait.

Why a row rather than the advisory lock re-taken after each reconnect: a
re-taken lock leaves a window (between the loss and the re-take) in which
another job may get in, and the writes of other connections cannot check a
lock held by a third one in their own transaction; a row can be checked in
the very transaction that writes, on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

from eventmig.errors import Busy, EventmigError, LeaseLost

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from eventmig.backends.sql.engine import SQLDatabase

#: how long a lease lives without a heartbeat: how long a job cut off from its database keeps others out,
#: and how long a job killed on another host keeps its lease
DEFAULT_LEASE_TTL_S = 30.0
TABLE = "eventmig_leases"

_log = logging.getLogger(__name__)
#: owners of leases this process gave up without managing to mark them expired
_released: set[str] = set()


def _now_sql(dialect: str) -> str:
    """The database's clock in seconds since the epoch, as SQL."""
    if dialect == "postgresql":
        return "EXTRACT(EPOCH FROM clock_timestamp())::float8"
    return "((julianday('now') - 2440587.5) * 86400.0)"


class LeaseFence(NamedTuple):
    """What a write transaction checks: the lease ``name`` is still ``owner``'s, at ``generation``.

    A plain record, so it crosses into forked worker processes, whose
    commits check it as the parent's do.
    """

    name: str
    owner: str
    generation: int
    url: str
    label: str

    def check(self, conn: Connection, dialect: str) -> None:
        """Inside a write transaction: raise LeaseLost unless the lease is still this job's."""
        sql = f"SELECT owner, generation FROM {TABLE} WHERE name = ?" + (" FOR SHARE" if dialect == "postgresql" else "")
        row = conn.exec_driver_sql(sql.replace("?", "%s") if dialect == "postgresql" else sql, (self.name,)).first()
        if row is None or row[0] != self.owner or row[1] != self.generation:
            by = f"generation {row[1]}" if row is not None and row[1] != self.generation else "another job"
            raise LeaseLost(
                f"this job lost its {self.label!r} lock on {self.url} ({by} took it over after it expired): "
                "it stopped writing; what it committed is kept, and the job that holds the lease now carries on"
            )


class SQLLease:
    """One acquisition of a lease: the row's owner and generation, and the heartbeat that keeps it."""

    def __init__(self, db: SQLDatabase, name: str, *, ttl_s: float = DEFAULT_LEASE_TTL_S, label: str | None = None) -> None:
        self.db, self.name, self.ttl_s = db, name, ttl_s
        #: the name messages give the lease (the job's lock name, without the scope the row name adds)
        self.label = label or name
        self.owner = uuid.uuid4().hex
        self.generation = 0
        #: why the lease was lost, once the heartbeat found it taken over
        self.lost: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def fence(self) -> LeaseFence:
        return LeaseFence(self.name, self.owner, self.generation, self.db.url, self.label)

    # ----------------------------------------------------------- acquire
    def acquire(self) -> None:
        """Take the lease, or raise Busy naming who holds it and for how long yet."""
        try:
            self._take()
        except Exception:
            # a commit whose answer was lost may have made the lease this one's: a retry in this process must
            # not find itself in its own way
            _released.add(self.owner)
            raise

    def _take(self) -> None:
        q, now = self.db.q, _now_sql(self.db.dialect)
        with self.db.write(fenced=False) as c:
            self._ensure_table(c)
            c.exec_driver_sql(q(f"INSERT INTO {TABLE} (name, owner, generation, expires_at, holder) "
                                "VALUES (?, '', 0, 0, '') ON CONFLICT (name) DO NOTHING"), (self.name,))
            lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
            owner, generation, expires_at, holder, at = c.exec_driver_sql(
                q(f"SELECT owner, generation, expires_at, holder, {now} FROM {TABLE} WHERE name = ?{lock}"), (self.name,)
            ).one()
            if owner and expires_at > at and not _gone(holder, owner):
                raise Busy(f"another eventmig job ({holder}) holds the {self.label!r} lock on {self.db.url} (a lease "
                           f"for {expires_at - at:.0f}s more unless it renews it); try again when it is done")
            self.generation = int(generation) + 1
            c.exec_driver_sql(
                q(f"UPDATE {TABLE} SET owner = ?, generation = ?, expires_at = {now} + ?, holder = ? WHERE name = ?"),
                (self.owner, self.generation, self.ttl_s, _holder(), self.name),
            )

    def _ensure_table(self, c: Connection) -> None:
        if self.db.dialect == "postgresql":  # concurrent CREATE TABLE IF NOT EXISTS may collide: serialise them
            c.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('eventmig:schema:' || current_schema()))")
        c.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, owner TEXT NOT NULL, "
            "generation BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, holder TEXT NOT NULL)"
        )

    # ------------------------------------------------------------- renew
    def renew(self) -> bool:
        """Push the expiry forward; False if another job took the lease over (then :attr:`lost` says so)."""
        q = self.db.q
        with self.db.write(fenced=False) as c:
            renewed = c.exec_driver_sql(
                q(f"UPDATE {TABLE} SET expires_at = {_now_sql(self.db.dialect)} + ? "
                  "WHERE name = ? AND owner = ? AND generation = ?"),
                (self.ttl_s, self.name, self.owner, self.generation),
            ).rowcount
        if not renewed:
            self.lost = f"the {self.label!r} lock on {self.db.url} was taken over by another job"
        return bool(renewed)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    _log.warning("%s", self.lost)
                    return
            except EventmigError as exc:  # the database is away: the next beat tries again on a new connection
                _log.info("lease %r not renewed: %s", self.name, exc)

    # ----------------------------------------------------------- release
    def release(self) -> None:
        """Mark the lease expired; never raises: a lease not released expires by itself."""
        try:
            with self.db.write(fenced=False) as c:
                c.exec_driver_sql(
                    self.db.q(f"UPDATE {TABLE} SET expires_at = 0 WHERE name = ? AND owner = ? AND generation = ?"),
                    (self.name, self.owner, self.generation),
                )
        except Exception as exc:  # noqa: BLE001 - the work is done; the lease expires on its own
            _released.add(self.owner)
            _log.info("lease %r not released (it expires by itself): %s", self.name, exc)

    # ----------------------------------------------------------- holding
    @contextmanager
    def held(self) -> Iterator[SQLLease]:
        """Acquire, keep renewed and fence the database's writes for the duration; release afterwards."""
        self.acquire()
        fence = self.fence
        self.db.fences.append(fence)
        self._beat = threading.Thread(target=self._heartbeat, name=f"eventmig-lease-{self.name}", daemon=True)
        self._beat.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._beat.join()
            if fence in self.db.fences:
                self.db.fences.remove(fence)
            self.release()


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(holder: str, owner: str) -> bool:
    """Whether the lease's holder certainly no longer works: this process gave it up, or it was a process
    of this host that has exited (a job killed with SIGKILL). A holder on another host is waited for."""
    if owner in _released:
        return True
    host, _, pid_text = holder.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

