"""Read models across an epoch rollback: never left silently built from the epoch that was left.

The full cycle, migrate, switch, rebuild, rollback, rebuild, on SQLite and
PostgreSQL: the rollback takes read models and snapshots back to the tables
built from the restored epoch when their last swap kept such tables, and
names them stale otherwise; ``status`` says which and why; the next
rebuild replaces stale tables without flags, and its rows equal those of a
fresh rebuild of the restored epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

import projections as shop
from eventmig import command
from eventmig.config import Settings
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import migrate
from eventmig.jobs.rebuild import rebuild
from eventmig.ports import EventStore

REPO = Path(__file__).resolve().parent.parent
TABLES = [t for p in shop.projections for t in p.tables]


def _rows(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {t.name: sorted(tuple(r) for r in c.execute(sa.select(t))) for t in TABLES}
    finally:
        engine.dispose()


def _fresh(store: EventStore, registry, tmp_path: Path) -> dict[str, list[tuple]]:
    """The rows a rebuild of the active epoch makes into a read-model database of its own."""
    url = f"sqlite:///{tmp_path}/fresh-{store.active_epoch()}.db"
    assert rebuild(store, shop.projections, registry=registry, read_models=url, workers=2).swapped
    return _rows(url)


def test_rollback_puts_back_read_models_built_from_the_restored_epoch(store: EventStore, store_url: str, shop_registry,
                                                                      tmp_path: Path):
    seed(store, 2500)
    assert rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2).ok
    on_epoch_1 = _rows(store_url)
    migrate(store, shop_registry, workers=1)
    switch(store, shop_registry, workers=1)
    forward = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
    # snapshots hold stream versions, which the migration renumbered: stale rows replaced without flags, and said
    assert forward.ok and forward.swapped
    assert any("replacing stale tables built from epoch 1 (epoch 2 is active)" in n for n in forward.notes)
    assert _rows(store_url) != on_epoch_1

    back = rollback(store, read_models=store_url)
    assert back.to_epoch == 1 and back.stale_read_models == [] and back.notes == []
    assert sorted(s.projection for s in back.read_models) == sorted(p.name for p in shop.projections)
    assert _rows(store_url) == on_epoch_1  # the tables built from epoch 1 are live again
    status = command.status(Settings(store=store_url))
    assert {(m.projection, m.epoch, m.stale) for m in status.read_models} == {(p.name, 1, None) for p in shop.projections}
    again = rebuild(store, shop.projections, registry=shop_registry, read_models=store_url, workers=2)
    assert again.ok and again.swapped and all(t.added == t.removed == t.changed == 0 for p in again.projections for t in p.tables)
    assert _rows(store_url) == _fresh(store, shop_registry, tmp_path)


def test_rollback_names_read_models_it_cannot_put_back_and_rebuild_replaces_them(store: EventStore, store_url: str,
                                                                                 shop_registry, tmp_path: Path):
    """The cycle through the CLI, the first rebuild after the switch: no tables of epoch 1 to go back to."""
    seed(store, 2500)
    env = {**os.environ, "EVENTMIG_STORE": store_url}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)

    for step in (("migrate",), ("switch",), ("rebuild", "--workers", "2")):
        done = cli(*step)
        assert done.returncode == 0, done.stderr
    rolled = cli("rollback", "--json")
    assert rolled.returncode == 0, rolled.stderr
    report = json.loads(rolled.stdout)
    assert report["to_epoch"] == 1 and report["read_models"] == []
    assert sorted(report["stale_read_models"]) == sorted(p.name for p in shop.projections)
    status = json.loads(cli("status", "--json").stdout)
    stale = {m["projection"]: m["stale"] for m in status["read_models"]}
    assert stale["order_snapshots"] == (
        "built from epoch 2; epoch 1 is active since the rollback from it: `eventmig rebuild` rebuilds it")
    human = cli("status")
    assert "stale: order_snapshots built from epoch 2" in human.stderr

    rebuilt = cli("rebuild", "--workers", "2", "--json")  # no --accept-changes, no --restart
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert json.loads(rebuilt.stdout)["swapped"]
    assert all(m["stale"] is None for m in json.loads(cli("status", "--json").stdout)["read_models"])
    assert _rows(store_url) == _fresh(store, shop_registry, tmp_path)
