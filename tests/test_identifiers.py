"""Names in SQL: quoted by the dialect, and never longer than the database keeps.

PostgreSQL cuts a name past 63 bytes to 63 with no error, which once made
``<table>_e2`` of a 63-byte events table the live table itself: the
migration appended into it. Every derived name is now checked before
anything is written, and reserved words and mixed case work as names of
events tables, read-model tables and columns, on both backends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from eventmig.jobs.cutover import rollback, rollback_read_models, switch
from eventmig.jobs.seed import seed
from eventmig.errors import ConfigError
from eventmig.backends.sql.identifiers import Identifiers
from eventmig.jobs.migrate import migrate
from eventmig.projection.api import STREAM, Projection
from eventmig.projection.fold import replay
from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.jobs.rebuild import rebuild
from eventmig.backends import open_store
from eventmig.jobs.verify import verify

REPO = Path(__file__).resolve().parent.parent
LONG = "e" * 63


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _rows(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar())
    finally:
        engine.dispose()


def test_a_63_byte_events_table_is_refused_before_anything_is_created(postgres_url: str):
    with pytest.raises(ConfigError) as refused:
        open_store(postgres_url, table=LONG)
    message = str(refused.value)
    # the name, the derived name that would not fit, the limit, and how long the name may be
    assert f"'{LONG}'" in message and f"'{LONG}_e1_stream_version'" in message
    assert "limit of 63 bytes" in message and "at most 45 bytes" in message
    assert _tables(postgres_url) == set()


def test_a_migration_never_writes_into_a_live_table_whose_name_is_too_long(postgres_url: str, shop_registry):
    """A store made before names were checked (its live table named with 63 bytes) refuses to migrate:
    ``<table>_e2`` would be cut back to the live table's name."""
    with open_store(postgres_url) as made:
        seed(made, 300)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as c:
        c.exec_driver_sql(f"ALTER TABLE events RENAME TO {LONG}")
    engine.dispose()
    with open_store(postgres_url, table=LONG) as store:
        before = store.count_events()
        for dry_run in (True, False):
            with pytest.raises(ConfigError, match=f"'{LONG}_e2_stream_version' would be 81 bytes"):
                migrate(store, shop_registry, dry_run=dry_run, workers=1)
        assert store.count_events() == before == 300
        assert [e.epoch for e in store.epochs()] == [1] and store.runs() == []
    # the bookkeeping, and the job lease the refused migration held: nothing of an epoch 2
    assert _tables(postgres_url) == {LONG, "eventmig_epochs", "eventmig_runs", "eventmig_quarantine", "eventmig_switches",
                                     "eventmig_leases"}


def test_the_cli_refuses_a_long_events_table_in_one_line_with_exit_2(postgres_url: str, tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "{postgres_url}"\nupcasters = "upcasters:registry"\nevents_table = "{LONG}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EVENTMIG_STORE", None)
    result = subprocess.run([sys.executable, "-m", "eventmig", "migrate"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{LONG}_e1_stream_version" in result.stderr and "63 bytes" in result.stderr
    assert _tables(postgres_url) == set()


def test_names_count_bytes_not_characters():
    dialect = sa.create_engine("postgresql+psycopg://").dialect
    dialect.max_identifier_length = 63
    names = Identifiers(dialect)
    assert names.quote("é" * 31) == '"' + "é" * 31 + '"'  # 62 bytes
    with pytest.raises(ConfigError, match="64 bytes long, over PostgreSQL's limit of 63 bytes"):
        names.quote("é" * 32)
    assert names.quote("order_summary") == "order_summary"
    assert [names.quote(n) for n in ("select", "Order", "order")] == ['"select"', '"Order"', '"order"']


@pytest.mark.parametrize("table", ["select", "Events"])
def test_migrate_verify_switch_rollback_with_a_reserved_or_mixed_case_events_table(store_url: str, shop_registry, table: str):
    with open_store(store_url, table=table) as store:
        seed(store, 800)
        report = migrate(store, shop_registry, workers=2, batch_size=300)
        assert report.events_written > 0 and report.quarantined == 0
        assert verify(store, shop_registry, workers=2).ok
        switch(store, shop_registry, workers=1)
        assert store.active_epoch() == 2 and store.count_events() == report.events_written
        tables = _tables(store_url)
        # exactly the names given: "Events" is not the "events" PostgreSQL would fold it to
        assert {table, f"{table}_e1"} <= tables and "events" not in tables
        rollback(store)
        assert store.active_epoch() == 1 and store.count_events() == 800
        assert _rows(store_url, table) == 800


# ------------------------------------------------------------------ read models
class Tally(msgspec.Struct):
    events: int = 0


def _awkward(version: int = 1, table: str = "Order", index: str = "Where", indexed_column: bool = True) -> Projection:
    """A projection whose table, columns, index and constraint are reserved words and mixed case
    (``indexed_column``: with an index SQLAlchemy names ``ix_<table>_group``)."""
    awkward = sa.Table(
        table, sa.MetaData(),
        sa.Column("select", sa.Text, primary_key=True),
        sa.Column("Order", sa.BigInteger, nullable=False),
        sa.Column("group", sa.Text, nullable=False, index=indexed_column),
        sa.Index(index, "Order"),
        sa.UniqueConstraint("group", "select", name="Unique"),
    )
    projection = Projection("Select", version=version, tables=[awkward], state=Tally, key=STREAM)

    @projection.on("OrderPlaced", "LineItemAdded", "OrderCancelled")
    def count(s: Tally, _e: object) -> None:
        s.events += 1

    @projection.rows
    def rows(stream: str, s: Tally) -> list[tuple[str, int, str]]:
        return [(stream, s.events * version, stream.split("-")[0])]

    return projection


def _table_rows(url: str, table: sa.Table) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return sorted(tuple(r) for r in c.execute(sa.select(table)))
    finally:
        engine.dispose()


def test_rebuild_swap_and_rollback_of_reserved_and_mixed_case_names(store_url: str, shop_registry):
    with open_store(store_url) as store:
        seed(store, 1500)
        first = rebuild(store, [_awkward()], registry=shop_registry, read_models=store_url, workers=2)
        assert first.ok and first.swapped
        expected = replay([_awkward()], shop_registry, [r for b in store.read_all_rows() for r in b])["Order"]
        table = _awkward().tables[0]
        assert _table_rows(store_url, table) == sorted(expected) and expected
        again = rebuild(store, [_awkward(2)], registry=shop_registry, read_models=store_url, workers=2,
                        accept_changes=True, restart=True)
        assert again.ok and again.swapped
        assert _table_rows(store_url, table) == sorted((k, n * 2, g) for k, n, g in expected)
        tables = _tables(store_url)
        assert {"Order", "Order__prev"} <= tables and "order" not in tables
    with ReadModelDB(store_url) as db:
        back = rollback_read_models(db)
    assert [(s.projection, s.to_version) for s in back.swaps] == [("Select", 1)]
    assert _table_rows(store_url, table) == sorted(expected)


def test_read_model_names_at_the_limit_work_and_past_it_are_refused_before_anything(postgres_url: str, shop_registry):
    with open_store(postgres_url) as store:
        seed(store, 300)
        fits = rebuild(store, [_awkward(table="t" * 49, index="i" * 49, indexed_column=False)],
                       registry=shop_registry, read_models=postgres_url, workers=1)
        assert fits.ok and "t" * 49 in _tables(postgres_url)  # its shadow table had 63 bytes
        for table, index, derived in (("u" * 50, "Where", "u" * 50), ("Order", "j" * 50, "j" * 50),
                                      ("v" * 45, "Where", f"ix_{'v' * 45}_group")):
            before = _tables(postgres_url)
            with pytest.raises(ConfigError) as refused:
                rebuild(store, [_awkward(table=table, index=index, indexed_column=table.startswith("v"))],
                        registry=shop_registry, read_models=postgres_url, workers=1)
            assert str(refused.value).startswith(f"projection Select: read-model name '{derived}' is too long")
            size = len(derived) + 14
            assert f"'{derived}__<12-character run id>' would be {size} bytes, over its limit of 63 bytes" in str(refused.value)
            assert _tables(postgres_url) == before
        with ReadModelDB(postgres_url) as db:
            assert len(db.runs()) == 1
