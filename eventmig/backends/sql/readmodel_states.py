"""Per-partition state tables of a rebuild: the folded state of every key, written and read in bulk.

Workers keep each key's state (msgspec-encoded) in
``eventmig_rbs_<run>_<partition>``, so a resumed rebuild continues from its
checkpoint instead of folding the history again; the tables are dropped once
the rebuild is swapped in or abandoned.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection



if TYPE_CHECKING:
    from eventmig.backends.sql.readmodels import ReadModelDB


class StateTables:
    """State tables of :class:`~eventmig.backends.sql.readmodels.ReadModelDB`, which mixes this in."""

    # ------------------------------------------------------- state tables
    def state_reader(self) -> StateReader:
        """Point reads of state tables on a connection of their own (see :class:`StateReader`)."""
        return StateReader(self)

    @staticmethod
    def state_table(run_id: str, partition: int) -> str:
        return f"eventmig_rbs_{run_id}_{partition}"

    def create_state_table(self, conn: Connection, name: str) -> None:
        table = self.names.quote(name)
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"CREATE UNLOGGED TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, state BYTEA NOT NULL)")
        else:
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID")

    def put_states(
        self, conn: Connection, name: str, items: Sequence[tuple[str, bytes]], deleted: Sequence[str] = (), *,
        empty: bool = False,
    ) -> None:
        """Insert or replace states (and delete some keys) in one partition's state table.

        ``empty``: the table holds no state yet (the keys are distinct), so
        they are simply inserted (PostgreSQL: copied straight in).
        """
        name = self.names.quote(name)
        raw = self.raw(conn)
        if self.dialect == "postgresql":
            with raw.cursor() as cursor:
                if deleted:
                    cursor.execute(f"DELETE FROM {name} WHERE key = ANY(%s)", (list(deleted),))
                if items and empty:
                    with cursor.copy(f"COPY {name} (key, state) FROM STDIN") as copy:
                        write_row = copy.write_row
                        for item in items:
                            write_row(item)
                elif items:
                    cursor.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS eventmig_rbs_stage (key TEXT, state BYTEA) ON COMMIT DELETE ROWS"
                    )
                    with cursor.copy("COPY eventmig_rbs_stage (key, state) FROM STDIN") as copy:
                        write_row = copy.write_row
                        for item in items:
                            write_row(item)
                    cursor.execute(
                        f"INSERT INTO {name} (key, state) SELECT key, state FROM eventmig_rbs_stage "
                        "ON CONFLICT (key) DO UPDATE SET state = excluded.state"
                    )
                    cursor.execute("TRUNCATE eventmig_rbs_stage")
        else:
            cursor = raw.cursor()
            if deleted:
                cursor.executemany(f"DELETE FROM {name} WHERE key = ?", [(k,) for k in deleted])
            if items:
                cursor.executemany(f"INSERT OR REPLACE INTO {name} (key, state) VALUES (?, ?)", items)
            cursor.close()

    def get_states(self, conn: Connection, name: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The stored states of those keys that have one."""
        name = self.names.quote(name)
        raw = self.raw(conn)
        found: dict[str, bytes] = {}
        if self.dialect == "postgresql":
            with raw.cursor() as cursor:
                for chunk in _chunks(keys, 5000):
                    cursor.execute(f"SELECT key, state FROM {name} WHERE key = ANY(%s)", (list(chunk),))
                    found.update((k, bytes(s)) for k, s in cursor.fetchall())
        else:
            cursor = raw.cursor()
            for chunk in _chunks(keys, 500):
                cursor.execute(f"SELECT key, state FROM {name} WHERE key IN ({', '.join('?' * len(chunk))})", chunk)
                found.update(cursor.fetchall())
            cursor.close()
        return found

    def scan_states(
        self, conn: Connection, name: str, batch: int = 5000, *, keys_only: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Every state of a partition, in batches, streamed (a server-side cursor on PostgreSQL)."""
        raw = self.raw(conn)
        columns = "key" if keys_only else "key, state"
        if self.dialect == "postgresql":
            cursor = raw.cursor(name=f"eventmig_scan_{name}"[:60])
            cursor.itersize = batch
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(f"SELECT {columns} FROM {self.names.quote(name)}")
            while True:
                rows = cursor.fetchmany(batch)
                if not rows:
                    return
                yield rows
        finally:
            cursor.close()


class StateReader:
    """Point reads of a worker's state tables: a connection and a cursor kept for the purpose (one prepared
    statement per table), closed before the worker writes (SQLite: an open read would block its own write)."""

    def __init__(self, db: ReadModelDB) -> None:
        self.db = db
        self._conn: Connection | None = None
        self._cursor: Any = None
        self._sql: dict[str, str] = {}

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.db.engine.connect()
        return self._conn

    def get(self, table: str, key: str) -> bytes | None:
        """One state by key."""
        if self._cursor is None:
            self._cursor = self.db.raw(self._connection()).cursor()
        self._cursor.execute(self._sql.get(table) or self._sql.setdefault(
            table, self.db.q(f"SELECT state FROM {self.db.names.quote(table)} WHERE key = ?")), (key,))
        row = self._cursor.fetchone()
        return bytes(row[0]) if row is not None else None

    def keys(self, table: str) -> Iterator[str]:
        """Every key a state table holds."""
        for batch in self.db.scan_states(self._connection(), table, keys_only=True):
            for (text,) in batch:
                yield text

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]

