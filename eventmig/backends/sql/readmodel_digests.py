"""Row digests of read-model tables: how a shadow table is verified against what it replaces.

Digests are computed over rows in key order, and kept up to date as rows are
written, so comparing a rebuilt table with the live one costs one scan at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from eventmig.backends.sql.rowdigests import WrittenDigest, _needs_plain, digest_rows, merge_compare, replace_in_digest
from eventmig.ports_readmodels import TableDiff


class ShadowDigests:
    """Digests and comparisons of :class:`~eventmig.backends.sql.readmodels.ReadModelDB`, which mixes this in."""

    # ------------------------------------------------------------- digests
    def new_digest(self) -> WrittenDigest:
        return WrittenDigest()

    def replace_in_digest(self, digest: str, removed: str, added: str) -> str:
        return replace_in_digest(digest, removed, added)

    def scratch_digest(
        self, tx: Connection, table: sa.Table, scratch_id: str, rows: list[tuple[Any, ...]]
    ) -> tuple[str, int]:
        """The digest and count of ``rows`` as this database gives them back (a float column, a date), from a
        scratch copy of ``table`` (``<table>__<scratch id>``) written, read and dropped again."""
        name = self.shadow_name(table.name, scratch_id)
        tx.execute(CreateTable(self.shadow_table(table, name, scratch_id)))
        self.bulk_insert(tx, name, [c.name for c in table.columns], rows)
        digest = self.table_digest(tx, table, name)
        self.drop_tables(tx, [name])
        return digest

    def compare(
        self, conn: Connection, table: sa.Table, live: str | None, shadow: str, sample: int = 10, *,
        written: WrittenDigest | None = None,
    ) -> TableDiff:
        """Row digests of the shadow table against the live one, joined on the primary key.

        Both tables are read in primary-key order and merged, so memory stays
        flat whatever their size. ``written``: the digest of every row of the
        shadow table as the rebuild wrote them, when it is exact; the shadow
        table is then not read again unless its digest differs from the live
        table's (to tell which rows differ).
        """
        columns = [c.name for c in table.columns]
        pk = [columns.index(c.name) for c in table.primary_key.columns]
        plain = _needs_plain(table)
        if written is not None and written.exact:
            if live is None:
                return TableDiff(table.name, 0, written.rows, None, written.digest, added=written.rows, sample=[])
            live_digest, live_count = digest_rows(self._ordered_rows(conn, table, live, ordered=False), pk, plain=plain)
            if live_digest == written.digest and live_count == written.rows:
                return TableDiff(table.name, live_count, written.rows, live_digest, written.digest)
        if live is None:  # nothing to merge with: any order will do
            digest, rows = digest_rows(self._ordered_rows(conn, table, shadow, ordered=False), pk, plain=plain)
            return TableDiff(table.name, 0, rows, None, digest, added=rows, sample=[])
        shadow_rows = self._ordered_rows(conn, table, shadow)
        live_rows = self._ordered_rows(conn, table, live)
        return merge_compare(table.name, live_rows, shadow_rows, pk, sample, plain=plain)

    def table_digest(self, conn: Connection, table: sa.Table, name: str) -> tuple[str, int]:
        """The digest and row count :meth:`compare` finds for the table ``name`` (shaped like ``table``)."""
        columns = [c.name for c in table.columns]
        pk = [columns.index(c.name) for c in table.primary_key.columns]
        return digest_rows(self._ordered_rows(conn, table, name, ordered=False), pk, plain=_needs_plain(table))

    def _ordered_rows(
        self, conn: Connection, table: sa.Table, name: str, *, ordered: bool = True
    ) -> Iterator[tuple[Any, ...]]:
        quote = self.names.quote
        columns = [quote(c.name) for c in table.columns]
        order = []
        for c in table.primary_key.columns:
            text = isinstance(c.type, (sa.String, sa.Text))
            order.append(f'{quote(c.name)} COLLATE "C"' if text and self.dialect == "postgresql" else quote(c.name))
        sql = f"SELECT {', '.join(columns)} FROM {quote(name)}" + (f" ORDER BY {', '.join(order)}" if ordered else "")
        raw = self.raw(conn)
        if self.dialect == "postgresql":
            cursor = raw.cursor(name=f"eventmig_cmp_{name}"[:60])
            cursor.itersize = 5000
        else:
            cursor = raw.cursor()
        try:
            cursor.execute(sql)
            while True:
                rows = cursor.fetchmany(5000)
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()
