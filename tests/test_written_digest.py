"""A rebuild's digest of the rows it wrote equals the digest of the same rows read back, or it is not used."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections as shop
from eventmig.jobs.seed import seed
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.backends.sql.rowdigests import WrittenDigest
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store

_names = itertools.count()

EXACT = [
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("code", sa.String(40), nullable=True),
    sa.Column("big", sa.BigInteger, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=True),
    sa.Column("blob", sa.LargeBinary, nullable=True),
]
# PostgreSQL text holds no NUL; ints within BIGINT
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)
exact_rows = st.lists(
    st.tuples(
        st.none() | text, st.none() | text, st.none() | st.integers(-(2**63), 2**63 - 1),
        st.none() | st.booleans(), st.none() | st.binary(max_size=20),
    ),
    max_size=25,
)


def _table(columns: list[sa.Column]) -> sa.Table:
    return sa.Table(f"digest_{next(_names)}", sa.MetaData(), *[c._copy() for c in columns])


def _read_back(db: ReadModelDB, table: sa.Table, rows: list[tuple]) -> tuple[str, int, WrittenDigest]:
    """Write the rows as a rebuild does, then: the digest read back, its row count, and the written digest."""
    written = WrittenDigest()
    with db.write() as conn:
        table.create(conn)
        db.bulk_insert(conn, table.name, [c.name for c in table.columns], rows)
        written.add(table, rows)
    try:
        with db.read() as conn:
            diff = db.compare(conn, table, None, table.name)
        return diff.digest, diff.rows, written
    finally:
        with db.write() as conn:
            table.drop(conn)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=exact_rows)
def test_exact_values_digest_as_they_read_back(store_url, rows):
    numbered = [(i, *row) for i, row in enumerate(rows)]
    with ReadModelDB(store_url) as db:
        digest, count, written = _read_back(db, _table(EXACT), numbered)
    assert written.exact
    assert (written.digest, written.rows) == (digest, count)


@pytest.mark.parametrize("column, value", [
    (sa.Column("v", sa.Float), 0.1),  # a 4-byte REAL on some servers
    (sa.Column("v", sa.Numeric(10, 2)), 1.5),  # a Decimal back from PostgreSQL
    (sa.Column("v", sa.DateTime), "2026-01-02 03:04:05"),  # a datetime back from PostgreSQL
    (sa.Column("v", sa.CHAR(5)), "ab"),  # padded on PostgreSQL
    (sa.Column("v", sa.Text), 5),  # an int into text comes back as text
    (sa.Column("v", sa.Integer), "5"),  # text into an integer comes back as an int
])
def test_values_the_database_converts_leave_the_digest_to_the_read_back(store_url, column, value):
    with ReadModelDB(store_url) as db:
        _digest, count, written = _read_back(db, _table([sa.Column("id", sa.Integer, primary_key=True), column]),
                                             [(1, value)])
    assert count == 1 and not written.exact


def test_verification_reads_shadow_tables_back_only_when_it_must(store_url, shop_registry, monkeypatch):
    """A first build is not read back; a resumed build (a partition written by an earlier invocation) and a
    build that differs from the live tables are, and say which rows differ."""
    reads: list[str] = []
    ordered_rows = ReadModelDB._ordered_rows

    def counting(self, conn, table, name, **kwargs):
        reads.append(name)
        return ordered_rows(self, conn, table, name, **kwargs)

    monkeypatch.setattr(ReadModelDB, "_ordered_rows", counting)
    with open_store(store_url) as store:
        seed(store, 1500)
        first = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
        assert first.ok and first.swapped and reads == []
        # the same code again: the live tables are read, the shadow ones are not (same digests)
        again = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2,
                        restart=True)
        assert again.ok and again.swapped
        assert reads and all("__" not in name for name in reads)
        assert {t.table: t.digest for p in again.projections for t in p.tables} == \
            {t.table: t.digest for p in first.projections for t in p.tables}
        # a live row changed by hand: the digests differ, both sides are merged to find the row
        reads.clear()
        with ReadModelDB(store_url) as db, db.write() as conn:
            conn.exec_driver_sql("UPDATE order_summary SET status = 'lost' WHERE order_id = "
                                 "(SELECT min(order_id) FROM order_summary)")
        third = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2,
                        restart=True, swap=False)
        summary = next(t for p in third.projections for t in p.tables if t.table == "order_summary")
        assert summary.changed == 1 and not third.ok
        assert any(name.startswith("order_summary__") for name in reads)
