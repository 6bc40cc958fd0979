"""The read-model database's side of ``follow``: checkpoints, leases, states and row writes.

A follower keeps live read-model tables current. What it needs besides
those tables lives beside them, so that one transaction covers a batch's
rows, the states of its keys and the checkpoint:

* ``eventmig_followers``: one row per projection segment: the rebuild run
  whose tables it follows, the epoch and commit position applied up to,
  counts, the lag it last saw, the error that stopped it, and its lease
  (holder, expiry by the database's clock);
* ``eventmig_follow_states_<projection>``: each key's state (msgspec
  MessagePack), the ``Index`` of a global-order projection under ``#`` keys;
* ``eventmig_follow_gaps``: the positions a follower moved past without an
  event, and why it judged them empty;
* ``eventmig_followed_runs``: the rebuild runs whose tables a follower has
  written to past their rebuild's checkpoint (their rows no longer match
  that checkpoint: tables put back by a rollback cannot be followed again).

Leases make one follower active per segment across hosts without a
coordinator (as Axon's token claims do): a follower claims unheld or
expired rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two claimers never
wait on each other), renews them with every commit, and every commit checks
in its transaction that it still holds the lease and that the checkpoint is
the one it started from: a follower that lost its lease (paused past the
expiry, say) can never apply a batch twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.model.records import Gap
from eventmig.ports_readmodels import FollowerRow, LeaseLost, ReadModelsSwapped

__all__ = ["FOLLOWED_RUNS", "FOLLOWERS", "GAPS", "FollowerDB", "FollowerRow", "LeaseLost", "ReadModelsSwapped"]

FOLLOWERS = "eventmig_followers"
GAPS = "eventmig_follow_gaps"
FOLLOWED_RUNS = "eventmig_followed_runs"
_COLUMNS = (
    "projection, segment, run_id, epoch, checkpoint, events, holder, lease_until, updated_at, "
    "lag_events, lag_seconds, gaps, error"
)


class FollowerDB:
    """Follower bookkeeping in a read-model database (SQLite or PostgreSQL)."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self.postgres = db.dialect == "postgresql"
        if not db.read_only:
            self._ensure_schema()

    def _ensure_schema(self) -> None:
        big = "BIGINT" if self.postgres else "INTEGER"
        with self.db.write() as c:
            if self.postgres:
                c.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('eventmig:follower-schema:' || current_schema()))")
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {FOLLOWERS} (projection TEXT NOT NULL, segment INTEGER NOT NULL, "
                f"run_id TEXT, epoch INTEGER, checkpoint {big}, events {big} NOT NULL, holder TEXT, "
                "lease_until DOUBLE PRECISION, updated_at DOUBLE PRECISION NOT NULL, "
                f"lag_events {big}, lag_seconds DOUBLE PRECISION, gaps {big} NOT NULL, error TEXT, "
                "PRIMARY KEY (projection, segment))"
            )
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {GAPS} (projection TEXT NOT NULL, segment INTEGER NOT NULL, "
                f"epoch INTEGER NOT NULL, first_position {big} NOT NULL, last_position {big} NOT NULL, "
                "how TEXT NOT NULL, waited DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL)"
            )
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {FOLLOWED_RUNS} (run_id TEXT PRIMARY KEY, projection TEXT NOT NULL)"
            )

    # ------------------------------------------------------------ reading
    def now(self, conn: Connection) -> float:
        """The database's clock: leases are compared by one clock, whichever host holds them."""
        if self.postgres:
            return float(conn.exec_driver_sql("SELECT extract(epoch FROM clock_timestamp())").scalar())
        return time.time()

    def followers(self, conn: Connection | None = None) -> list[FollowerRow]:
        if conn is None:
            with self.db.read() as c:
                return self.followers(c)
        if not self.db.table_exists(FOLLOWERS, conn):
            return []
        rows = conn.exec_driver_sql(f"SELECT {_COLUMNS} FROM {FOLLOWERS} ORDER BY projection, segment").fetchall()
        return [FollowerRow(*row) for row in rows]

    def follower(self, conn: Connection, projection: str, segment: int, *, lock: bool = False) -> FollowerRow:
        sql = f"SELECT {_COLUMNS} FROM {FOLLOWERS} WHERE projection = ? AND segment = ?"
        if lock and self.postgres:
            sql += " FOR UPDATE"
        return FollowerRow(*conn.exec_driver_sql(self.db.q(sql), (projection, segment)).one())

    def gaps(self, projection: str | None = None) -> list[tuple[Any, ...]]:
        sql = f"SELECT projection, segment, epoch, first_position, last_position, how, waited, at FROM {GAPS}"
        params: tuple[Any, ...] = ()
        if projection is not None:
            sql += " WHERE projection = ?"
            params = (projection,)
        with self.db.read() as c:
            return [tuple(r) for r in c.exec_driver_sql(self.db.q(sql + " ORDER BY at"), params)]

    # ------------------------------------------------------------- leases
    def claim(self, segments: Iterable[tuple[str, int]], holder: str, lease_s: float) -> list[FollowerRow]:
        """Take the lease of every segment nobody holds, or whose holder let it expire; the rows taken."""
        wanted = list(segments)
        with self.db.write() as c:
            now = self.now(c)
            c.exec_driver_sql(
                self.db.q(
                    f"INSERT INTO {FOLLOWERS} (projection, segment, events, updated_at, gaps) VALUES (?, ?, 0, ?, 0) "
                    "ON CONFLICT (projection, segment) DO NOTHING"
                ),
                [(p, s, now) for p, s in wanted],
            )
            free = (
                f"SELECT projection, segment FROM {FOLLOWERS} WHERE projection = ? AND segment = ? "
                "AND (holder IS NULL OR holder = ? OR lease_until < ?)"
            )
            if self.postgres:
                free += " FOR UPDATE SKIP LOCKED"  # a segment another claimer is taking is not waited for
            taken: list[tuple[str, int]] = []
            for projection, segment in wanted:
                got = c.exec_driver_sql(self.db.q(free), (projection, segment, holder, now)).first()
                if got is not None:
                    taken.append((projection, segment))
            if taken:
                c.exec_driver_sql(
                    self.db.q(f"UPDATE {FOLLOWERS} SET holder = ?, lease_until = ? WHERE projection = ? AND segment = ?"),
                    [(holder, now + lease_s, p, s) for p, s in taken],
                )
            return [self.follower(c, p, s) for p, s in taken]

    def renew(self, segments: Iterable[tuple[str, int]], holder: str, lease_s: float) -> set[tuple[str, int]]:
        """Extend the leases still held; the segments whose lease was lost are left out of the answer."""
        kept: set[tuple[str, int]] = set()
        with self.db.write() as c:
            now = self.now(c)
            for projection, segment in segments:
                done = c.exec_driver_sql(
                    self.db.q(
                        f"UPDATE {FOLLOWERS} SET lease_until = ? WHERE projection = ? AND segment = ? AND holder = ?"
                    ),
                    (now + lease_s, projection, segment, holder),
                ).rowcount
                if done:
                    kept.add((projection, segment))
        return kept

    def release(self, segments: Iterable[tuple[str, int]], holder: str) -> None:
        """Give the leases up at once (a clean stop): a standby need not wait for them to expire."""
        with self.db.write() as c:
            for projection, segment in segments:
                c.exec_driver_sql(
                    self.db.q(
                        f"UPDATE {FOLLOWERS} SET holder = NULL, lease_until = NULL "
                        "WHERE projection = ? AND segment = ? AND holder = ?"
                    ),
                    (projection, segment, holder),
                )

    def held(self, conn: Connection, row: FollowerRow, holder: str, *, tables: Sequence[str] = (),
             live_run: str | None = None) -> FollowerRow:
        """Inside a write transaction: the segment's row, locked, if this holder still holds it as it was, and
        if the live tables (``tables``) are still those of ``live_run`` (default: the run the row follows).

        A swap renames tables and then records the run it made live, in one transaction; the follower locks
        the live tables first (PostgreSQL: the lock its writes would take anyway, so a swap under way is
        waited for, and the swap waits for a batch under way), then reads which run is live: a batch never
        lands in tables swapped in after it started (:class:`ReadModelsSwapped`).
        """
        expected = row.run_id if live_run is None else live_run
        if expected is not None:
            self._live_run_is(conn, row.projection, expected)  # first unlocked: tables of another run may be fewer
            if self.postgres and tables:
                for table in tables:
                    conn.exec_driver_sql(f"LOCK TABLE {self.db.names.quote(table)} IN ROW EXCLUSIVE MODE")
                self._live_run_is(conn, row.projection, expected)  # a swap that committed while this waited
        current = self.follower(conn, row.projection, row.segment, lock=True)
        if current.holder != holder or current.checkpoint != row.checkpoint or current.run_id != row.run_id \
                or current.epoch != row.epoch:
            raise LeaseLost(f"{row.projection}: another follower holds it now")
        return current

    def _live_run_is(self, conn: Connection, projection: str, expected: str) -> None:
        live = conn.exec_driver_sql(
            self.db.q("SELECT run_id FROM eventmig_read_models WHERE projection = ?"), (projection,)
        ).scalar()
        if live != expected:
            raise ReadModelsSwapped(f"{projection}: its live tables are those of run {live} now, not {expected}")

    # ------------------------------------------------------------- states
    def state_table(self, projection: str) -> str:
        return self.db.names.check(f"eventmig_follow_states_{projection}", "follower state table name")

    def load_states(self, conn: Connection, projection: str, keys: Sequence[str]) -> dict[str, bytes]:
        return self.db.get_states(conn, self.state_table(projection), keys)

    def reset_states(self, conn: Connection, projection: str) -> None:
        name = self.state_table(projection)
        self.db.drop_tables(conn, [name])
        self.db.create_state_table(conn, name)

    def put_states(self, conn: Connection, projection: str, items: Sequence[tuple[str, bytes]],
                   deleted: Sequence[str] = (), *, empty: bool = False) -> None:
        self.db.put_states(conn, self.state_table(projection), items, deleted, empty=empty)

    # --------------------------------------------------------------- rows
    def replace_rows(
        self, conn: Connection, table: sa.Table, old: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]]
    ) -> None:
        """The rows of the keys a batch touched: their old rows out (by primary key), their new rows in."""
        columns = [c.name for c in table.columns]
        pk = [columns.index(c.name) for c in table.primary_key.columns]
        if old:
            quote = self.db.names.quote
            where = " AND ".join(f"{quote(columns[i])} = ?" for i in pk)
            self.db.raw(conn).cursor().executemany(
                self.db.q(f"DELETE FROM {quote(table.name)} WHERE {where}"),
                list({tuple(row[i] for i in pk): None for row in old}),
            )
        if new:
            self.db.bulk_insert(conn, table.name, columns, new)

    # ---------------------------------------------------------- checkpoint
    def save(self, conn: Connection, row: FollowerRow, lease_s: float, gaps: Sequence[Gap] = ()) -> None:
        """The segment's new checkpoint (and what it says), its lease renewed; inside the batch's transaction."""
        now = self.now(conn)
        row.updated_at = now
        row.lease_until = now + lease_s
        row.gaps += sum(g.last - g.first + 1 for g in gaps)
        conn.exec_driver_sql(
            self.db.q(
                f"UPDATE {FOLLOWERS} SET run_id = ?, epoch = ?, checkpoint = ?, events = ?, lease_until = ?, "
                "updated_at = ?, lag_events = ?, lag_seconds = ?, gaps = ?, error = ? WHERE projection = ? AND segment = ?"
            ),
            (row.run_id, row.epoch, row.checkpoint, row.events, row.lease_until, now, row.lag_events,
             row.lag_seconds, row.gaps, row.error, row.projection, row.segment),
        )
        if gaps:
            conn.exec_driver_sql(
                self.db.q(f"INSERT INTO {GAPS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                [(row.projection, row.segment, row.epoch, g.first, g.last, g.how, g.waited, now) for g in gaps],
            )

    def mark_followed(self, conn: Connection, run_id: str, projection: str) -> None:
        conn.exec_driver_sql(
            self.db.q(f"INSERT INTO {FOLLOWED_RUNS} (run_id, projection) VALUES (?, ?) ON CONFLICT (run_id) DO NOTHING"),
            (run_id, projection),
        )

    def was_followed(self, conn: Connection, run_id: str) -> bool:
        return conn.exec_driver_sql(
            self.db.q(f"SELECT count(*) FROM {FOLLOWED_RUNS} WHERE run_id = ?"), (run_id,)
        ).scalar() > 0
