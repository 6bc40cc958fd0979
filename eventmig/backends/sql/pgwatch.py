"""What a follower of a PostgreSQL events table asks of the server besides events.

* **Announcements.** eventmig's appends run ``pg_notify(CHANNEL, <table>)``
  in their transaction, so a listener hears of them when they commit; a
  follower waits on a ``LISTEN`` connection of its own (psycopg's
  synchronous ``Connection.notifies``) and polls as well, for writers that
  do not announce.
* **Gaps that may still fill.** Positions come from an identity column (a
  sequence): a transaction takes its positions when it inserts and may
  commit after a later one, or roll back and leave a hole for ever. A
  reader that sees a hole notes the transactions in progress
  (``pg_snapshot_xmax`` of the current snapshot); once all of them have ended
  (the oldest one still running is newer) and the hole is still there, no
  transaction can fill it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: the channel eventmig's appends announce themselves on; the payload is the events table's name
CHANNEL = "eventmig_appended"


def announce(conn: sa.Connection, table: str) -> None:
    """Inside an append's transaction: tell listeners, at commit, that ``table`` has new events."""
    conn.exec_driver_sql("SELECT pg_notify(%s, %s)", (CHANNEL, table))


def transactions_marker(conn: sa.Connection) -> int:
    """The first transaction id not yet started: every transaction in progress now has a smaller one."""
    return int(conn.exec_driver_sql("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").scalar())


def transactions_ended(conn: sa.Connection, marker: int) -> bool:
    """Whether every transaction in progress when ``marker`` was taken has ended."""
    oldest = int(conn.exec_driver_sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").scalar())
    return oldest >= marker


class Listener:
    """A ``LISTEN`` connection of its own (autocommit), opened on first use."""

    def __init__(self, raw_url: str) -> None:
        url = make_url(raw_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: Any = None

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds for an announcement; True when one came."""
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(self._conninfo, autocommit=True)
            self._conn.execute(f"LISTEN {CHANNEL}")
        heard = False
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            heard = True
        return heard

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
