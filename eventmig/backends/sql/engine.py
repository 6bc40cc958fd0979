"""SQLAlchemy engines for SQLite and PostgreSQL, set up the way eventmig's databases need them.

Both the event store and the read-model database open their engines here,
so they agree on what a URL means, how errors read and how transactions
begin:

* SQLite in WAL mode (readers never block the writer), ``synchronous=NORMAL``
  (safe from corruption in WAL mode; a power cut can lose the last commits,
  a killed process cannot), and eventmig issuing ``BEGIN`` itself, because
  pysqlite's own transaction handling does not cover DDL and a switch is DDL.
  Write transactions take the lock up front (``BEGIN IMMEDIATE``) so two
  writers never deadlock upgrading a read lock, and eventmig's own writers
  of one file (a migration's, a rebuild's workers) queue for it on a lock
  file beside it first: SQLite's busy handler sleeps in growing steps (up
  to 100 ms) and would leave the file idle long after its lock is free.
* SQLite connections know ``eventmig_crc32(blob)``, the CRC-32 the event
  store hashes stream names by (``EventStore.stream_partition``), so a read
  of some hash partitions keeps only their streams where the rows are (a
  rebuild cuts SQLite streams into name ranges instead, which SQLite
  compares without calling back into Python).
* ``postgresql://`` and ``postgres://`` mean the psycopg 3 driver.
* Table, index and column names go into SQL through :attr:`SQLDatabase.names`
  (:class:`~eventmig.backends.sql.identifiers.Identifiers`): quoted by the dialect, checked
  against its length limit.
* A URL is printed only masked; driver errors become one-line StoreErrors.
* Read-only handles (``read_only=True``, for the commands that only look)
  write nothing: SQLite opens the file with ``mode=ro`` (and, where even the
  WAL's shared-memory file cannot be created, as ``immutable``), PostgreSQL
  sessions are ``READ ONLY``, and neither creates eventmig's tables.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from eventmig.errors import ConfigError, StoreError, TransientStoreError, first_line
from eventmig.backends.sql.identifiers import Identifiers
from eventmig.urls import mask_url, url_shown_unparsed
from eventmig.retry import register_transient


def normalize_sql_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` onto the psycopg 3 driver SQLAlchemy needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


#: how to write a URL whose user name or password holds characters a URL reserves
_ENCODE_HINT = "write '@', ':', '/' and '%' in a user name or password as %40, %3A, %2F and %25"


def parse_sql_url(url: str, what: str) -> sa.URL:
    """``url`` parsed by SQLAlchemy, or a one-line error that shows no part of its password.

    A password ends at the first ``@`` after the user name (as libpq reads
    it too): one holding an ``@`` of its own is cut there, and the rest of it
    would be taken for a host, a port or a database, and printed as one in
    some later message. Such a URL is refused here, with how to write it.
    """
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number; the text quotes it
        raise ConfigError(f"invalid {what} URL {url_shown_unparsed(url)}: expected sqlite:///PATH or "
                          f"postgresql+psycopg://USER@HOST:PORT/DATABASE; {_ENCODE_HINT}") from None
    if parsed.password is not None:
        rest = url.partition("://")[2]
        after_password = rest[rest.index("@", rest.index(":")) + 1:]
        if "@" in after_password:
            raise ConfigError(f"invalid {what} URL {url_shown_unparsed(url)}: {_ENCODE_HINT}")
    return parsed


#: SQLSTATEs worth another try: connection exceptions (class 08), the server shutting down, crashed or
#: starting up (57P01-57P03), too many connections, a serialization failure, a deadlock
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")


def is_transient(exc: BaseException) -> bool:
    """Whether a driver error is one that trying again may cure (see :mod:`eventmig.retry`).

    PostgreSQL says so with a SQLSTATE; a connection that broke under psycopg
    (the server closed it, the network went away) carries none, but is an
    ``OperationalError`` and SQLAlchemy marks it invalidated. SQLite's errors
    are never transient here: its file does not go away, and a busy file has
    already been waited for.
    """
    if isinstance(exc, TransientStoreError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig  # type: ignore[assignment]
    if isinstance(exc, sqlite3.Error) or exc is None:
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_TRANSIENT_SQLSTATES)
    module = type(exc).__module__ or ""
    return module.startswith("psycopg") and type(exc).__name__ in ("OperationalError", "InterfaceError")


def is_driver_error(exc: BaseException) -> bool:
    """An error of SQLAlchemy or of a driver itself (raw cursors: COPY, streamed reads), not eventmig's."""
    return isinstance(exc, sa.exc.DBAPIError) or type(exc).__module__.split(".")[0] in ("sqlite3", "psycopg")


def store_error(exc: BaseException, url: str) -> StoreError:
    """A driver error as a one-line StoreError naming the (masked) URL; transient ones as TransientStoreError."""
    kind = TransientStoreError if is_transient(exc) else StoreError
    return kind(f"{url}: {first_line(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc)}")


register_transient(is_transient)


class SQLDatabase:
    """A parsed URL and its engine: what a store or a read-model database is built on."""

    def __init__(
        self,
        url: str,
        *,
        what: str,
        create: bool = True,
        busy_timeout_s: int = 30,
        sqlite_pragmas: Mapping[str, object] | None = None,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only
        self.raw_url = normalize_sql_url(url)
        parsed = parse_sql_url(self.raw_url, what)
        # SQLAlchemy hides the password of user:password@ but not a ?password= parameter
        self.url = mask_url(parsed.render_as_string(hide_password=True))
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(f"unsupported {what} {self.url}: use sqlite:/// or postgresql+psycopg://")
        self.sqlite_path = parsed.database if self.dialect == "sqlite" else None
        if self.dialect == "sqlite" and (not self.sqlite_path or self.sqlite_path == ":memory:"):
            # every connection would see a database of its own, and worker processes none at all
            raise ConfigError(f"{what} {self.url} is in memory: give it a file, sqlite:///PATH")
        if self.sqlite_path:
            directory = os.path.dirname(os.path.abspath(self.sqlite_path))
            if not os.path.isdir(directory):
                raise ConfigError(f"cannot open {self.url}: directory {directory} does not exist")
            if (read_only or not create) and not os.path.exists(self.sqlite_path):
                raise ConfigError(f"no {what} at {self.url}: {os.path.abspath(self.sqlite_path)} does not exist")
        pragmas = dict(sqlite_pragmas or {})
        self.engine = _engine(parsed, busy_timeout_s, pragmas, what, read_only=read_only)
        self._writers = _WriterQueue(self.sqlite_path, busy_timeout_s) if self.sqlite_path and not read_only else None
        try:
            self._probe()
        except sa.exc.DBAPIError as exc:
            self.engine.dispose()
            if not (read_only and self.sqlite_path):
                kind = TransientStoreError if is_transient(exc) else StoreError
                raise kind(f"cannot connect to {self.url}: {first_line(exc.orig)}") from None
            # a WAL file whose shared-memory index cannot be made (a directory this process may not write
            # to, and no other connection open, or the index would exist): read it as it is on disk
            self.engine = _engine(parsed, busy_timeout_s, pragmas, what, read_only=True, immutable=True)
            try:
                self._probe()
            except sa.exc.DBAPIError as again:
                self.engine.dispose()
                raise StoreError(f"cannot open {self.url} read-only: {first_line(again.orig)}") from None
        #: how names are quoted and how long they may be here (PostgreSQL's limit is known once connected)
        self.names = Identifiers(self.engine.dialect)
        #: the leases (:class:`~eventmig.stores.sql_lease.LeaseFence`) every write transaction checks first
        self.fences: list[Any] = []

    def _probe(self) -> None:
        """Connect once, and (SQLite) read the schema: a file that opens may still not be readable."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master" if self.sqlite_path else "SELECT 1")

    def q(self, sql: str) -> str:
        """Write SQL once with ``?`` placeholders; psycopg wants ``%s``."""
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def write(self, *, durable: bool = True, fenced: bool = True) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on success.

        ``durable=False`` is for transactions that redo themselves when lost:
        a batch committed with the checkpoint that covers it (a new epoch, a
        rebuild's states and shadow rows). On PostgreSQL its commit does not
        wait for the WAL to reach the disk; a server crash may lose it, and
        its checkpoint with it, never one without the other. (SQLite in WAL
        mode with ``synchronous=NORMAL`` never waits at a commit anyway.)

        While a job holds a lease on this database (:attr:`fences`), every
        write transaction first checks that the lease is still the job's, and
        rolls back with LeaseLost if not; ``fenced=False`` is for the lease's
        own bookkeeping.
        """
        try:
            with self._writers.turn() if self._writers else _no_queue(), self.engine.connect() as conn:
                conn = conn.execution_options(eventmig_write=True)
                with conn.begin():
                    if not durable:
                        self.commit_without_flush(conn)
                    if fenced:
                        for fence in self.fences:
                            fence.check(conn, self.dialect)
                    yield conn
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise store_error(exc, self.url) from None

    def commit_without_flush(self, conn: Connection) -> None:
        """Within a write transaction: make it a ``durable=False`` one (see :meth:`write`)."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; ``snapshot``: all its statements see the database as at its first (PostgreSQL:
        ``REPEATABLE READ``; a SQLite read transaction always does), for reads that must agree with each other
        while writers commit."""
        try:
            with self.engine.connect() as conn:
                if snapshot and self.dialect == "postgresql":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except Exception as exc:
            if not is_driver_error(exc):
                raise
            raise store_error(exc, self.url) from None


@contextmanager
def _no_queue() -> Iterator[None]:
    yield


class _WriterQueue:
    """eventmig's writers of one SQLite file take turns on an ``flock`` of ``<file>.writers``.

    A writer waiting here notices within a millisecond that the last one is
    done, where SQLite's own busy handler may sleep 100 ms. Writers that do
    not know this queue (other applications) still meet SQLite's lock, so
    it only orders eventmig's writers, never excludes anyone. Re-entrant
    within a thread; a forked process opens a lock of its own (a shared one
    would let parent and child in together). Waits at most as long as the
    busy timeout, then leaves the wait to SQLite, which reports it.
    """

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = f"{os.path.abspath(path)}.writers"
        self.timeout_s = timeout_s
        self._guard = threading.RLock()
        self._fd: int | None = None
        self._pid = 0
        self._depth = 0
        _queues.add(self)

    @contextmanager
    def turn(self) -> Iterator[None]:
        if self._pid != os.getpid():
            self._open()
        with self._guard:
            locked = self._depth > 0 or self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if locked and self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _open(self) -> None:
        self.forget_parent()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            self._fd = None  # a read-only directory: SQLite's lock alone
        self._pid = os.getpid()

    def forget_parent(self) -> None:
        """In a forked process: none of the parent's turn, lock or descriptor is this one's.

        The inherited descriptor is closed, not just left unused: while a
        child kept it open, a lock its parent held would outlive the parent.
        """
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._pid, self._depth = None, 0, 0
        self._guard = threading.RLock()

    def _acquire(self) -> bool:
        if self._fd is None:
            return False
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0005)


_queues: weakref.WeakSet[_WriterQueue] = weakref.WeakSet()


def _queues_after_fork() -> None:
    for queue in list(_queues):
        queue.forget_parent()


os.register_at_fork(after_in_child=_queues_after_fork)


#: what to install for a database whose driver is missing
_DRIVER_EXTRAS = {"postgresql": ("psycopg", "pip install 'eventmig[postgres]'")}


def _create_engine(parsed: sa.URL, what: str, **options: Any) -> Engine:
    """``sa.create_engine``, with a missing driver reported as what to install (a configuration error)."""
    try:
        return sa.create_engine(parsed, **options)
    except ImportError as exc:  # SQLAlchemy imports the driver as the engine is created
        driver, install = _DRIVER_EXTRAS.get(parsed.get_backend_name(), (exc.name or "its driver", ""))
        if exc.name and exc.name.split(".")[0] != driver.split(".")[0]:
            raise
        hint = f": {install}" if install else ""
        raise ConfigError(f"the {what} needs the {driver} driver, which is not installed{hint}") from None


def _engine(
    parsed: sa.URL, busy_timeout_s: int, pragmas: dict[str, object], what: str, *, read_only: bool = False,
    immutable: bool = False,
) -> Engine:
    if parsed.get_backend_name() != "sqlite":
        engine = _create_engine(parsed, what, pool_pre_ping=True)
        if read_only:
            sa.event.listen(engine, "connect", _read_only_session)
        return engine
    options: dict[str, Any] = {"connect_args": {"timeout": busy_timeout_s}}
    if read_only:
        # a file: URI says read-only to SQLite itself (SQLAlchemy's URL has no place for it)
        uri = f"file:{quote(os.path.abspath(parsed.database or ''))}?mode=ro{'&immutable=1' if immutable else ''}"
        options = {"creator": lambda: sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)}
    engine = _create_engine(parsed, what, **options)
    settings = {
        "journal_mode": "WAL", "synchronous": "NORMAL", "busy_timeout": busy_timeout_s * 1000,
        # sorts (index builds after a bulk load above all) may use a helper thread per core
        "threads": os.cpu_count() or 1,
        **pragmas,
    }
    if read_only:
        del settings["journal_mode"]  # setting it writes the file's header; a reader takes the file as it is

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # eventmig issues BEGIN itself, DDL included
        # zlib's C function straight from SQLite: no Python frame per row (give it the name as a BLOB)
        dbapi_conn.create_function("eventmig_crc32", 1, zlib.crc32, deterministic=True)
        cur = dbapi_conn.cursor()
        for name, value in settings.items():
            cur.execute(f"PRAGMA {name}={value}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("eventmig_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _read_only_session(dbapi_conn: Any, _record: Any) -> None:
    """PostgreSQL: every transaction of the session is read-only, whatever the role may do."""
    with dbapi_conn.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_conn.commit()
