"""Migrations across stores: SQLite -> EventStoreDB (the stand-in) -> SQLite or PostgreSQL, verified by digests.

The source is only ever read; the target's first epoch stays empty until
the switch. Verification compares the upcast source with the target by the
same digests as inside one store: stream versions are the target's (from 0
on EventStoreDB, from 1 on SQL), record times are the originals (lineage
carries them through EventStoreDB, which cannot set its own), positions are
never compared.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from eventmig import ConfigError
from eventmig.backends.pair import open_pair
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import migrate
from eventmig.backends import open_store
from eventmig.jobs.verify import verify

REPO = Path(__file__).resolve().parent.parent


def content(url: str) -> list[tuple]:
    """What a reader of the active epoch sees, without positions, versions (each store numbers its own way)
    or lineage: (stream, type, data, event id, record time, user metadata) in stream order."""
    with open_store(url) as s:
        rows = [r for b in s.read_all_rows() for r in b]
    out = []
    for stream, _version, _position, event_id, type_, data, metadata, recorded_at in rows:
        meta = msgspec.json.decode(metadata) if metadata else {}
        meta.pop("eventmig", None)
        out.append((stream, type_, msgspec.json.decode(data), event_id, recorded_at, meta))
    return sorted(out, key=lambda r: (r[0], r[4], r[3]))


def test_sqlite_to_esdb_and_back_through_the_cli(tmp_path: Path, esdb_node, shop_registry):
    """[tool.eventmig] store + target: migrate, verify, switch, there and back; the final SQLite store holds what a
    migration inside one SQLite store produces."""
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    with open_store(f"sqlite:///{source}") as s:
        seed(s, 2000)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "sqlite:///source.db"\ntarget = "{esdb_node.url}"\nupcasters = "upcasters:registry"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("EVENTMIG_STORE", None)

    def run(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "eventmig", *args, "--json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr + done.stdout
        return msgspec.json.decode(done.stdout.strip().splitlines()[-1])

    before = hashlib.sha256(source.read_bytes()).hexdigest()
    there = run("migrate", "--workers", "1")
    assert there["status"] == "completed" and there["events_read"] == 2000
    assert run("verify", "--workers", "1")["ok"]
    assert run("switch", "--workers", "1")["to_epoch"] == 2
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # the source store was only read

    # and back, from the cluster's active epoch into a new SQLite store, with CLI flags this time
    flags = ("--store", esdb_node.url, "--target", f"sqlite:///{back}", "--workers", "1")
    again = run("migrate", *flags)
    assert again["events_read"] == there["events_written"]
    assert run("verify", *flags)["ok"]
    run("switch", *flags)
    with open_store(f"sqlite:///{tmp_path / 'inside.db'}") as inside:  # the same migration inside one store
        seed(inside, 2000)
        migrate(inside, shop_registry, workers=1)
        switch(inside, shop_registry, workers=1)
    assert content(f"sqlite:///{back}") == content(f"sqlite:///{tmp_path / 'inside.db'}")


def test_sqlite_to_esdb_to_postgresql_with_upcasting(tmp_path: Path, esdb_node, postgres_url: str, shop_registry):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_store(source) as s:
        seed(s, 1500)
    with open_pair(source, esdb_node.url) as pair:
        report = migrate(pair, shop_registry, batch_size=300, workers=1)
        assert report.before["OrderPlaced v1"] > 0 and "OrderPlaced v1" not in report.after  # upcast on the way
        assert verify(pair, shop_registry, workers=1).ok
        switch(pair, shop_registry, workers=1)
    from kurrentdbclient import KurrentDBClient

    client = KurrentDBClient(esdb_node.url)  # into an empty cluster: the streams keep their plain names
    names = {e.stream_name for e in client.read_all()}
    assert any(n.startswith("order-") for n in names) and not any(n.startswith("e2.") for n in names)
    client.close()
    with open_pair(esdb_node.url, postgres_url) as pair:
        migrate(pair, shop_registry, workers=1)
        v = verify(pair, shop_registry, workers=1)
        assert v.ok, v.problems
        switch(pair, shop_registry, workers=1)
        back = rollback(pair)  # the target's empty first epoch: the cluster is the store in use again
        assert back.to_epoch == 1 and pair.active_epoch() == 1
    with open_store(postgres_url) as pg:
        assert pg.count_events() == 0 and pg.at_epoch(2).count_events() == report.events_written


def test_a_tampered_target_fails_verification(tmp_path: Path, esdb_node, shop_registry):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_store(source) as s:
        seed(s, 300)
    with open_pair(source, esdb_node.url) as pair:
        migrate(pair, shop_registry, workers=1)
        stream = next(iter(pair.at_epoch(2).list_streams()))
        from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

        client = KurrentDBClient(esdb_node.url)
        client.append_to_stream(stream, current_version=StreamState.ANY, events=[NewEvent("Forged", b"{}")])
        v = verify(pair, shop_registry, workers=1)
        assert not v.ok and stream in v.differing_streams


def test_the_target_must_be_empty_and_another_store(tmp_path: Path, esdb_node, shop_registry):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_store(source) as s:
        seed(s, 10)
    with open_store(esdb_node.url) as busy:
        seed(busy, 10)
    with open_pair(source, esdb_node.url) as pair:
        with pytest.raises(ConfigError, match="already holds 10 event"):
            migrate(pair, shop_registry, workers=1)
    with pytest.raises(ConfigError, match="is the source store"):
        open_pair(source, source)


def test_rebuild_reads_esdb_into_sql_read_models(tmp_path: Path, esdb_node, shop_registry):
    """Read models rebuilt from the cluster are the ones rebuilt from the same history in SQLite (snapshots
    record the stream version their state reflects, which each store numbers its own way: from 0 and from 1)."""
    import projections as shop

    from eventmig.jobs.rebuild import rebuild

    digests = {}
    for name, url in (("esdb", esdb_node.url), ("sqlite", f"sqlite:///{tmp_path / 'events.db'}")):
        with open_store(url) as store:
            seed(store, 1200)
            report = rebuild(store, shop.projections, registry=shop_registry, workers=2,
                             read_models=f"sqlite:///{tmp_path / f'rm-{name}.db'}")
            assert report.ok and report.events_read == 1200, report.problems
            digests[name] = {t.table: t.digest for p in report.projections for t in p.tables}
    snapshots = "order_snapshots"
    assert digests["esdb"].pop(snapshots) != digests["sqlite"].pop(snapshots)
    assert digests["esdb"] == digests["sqlite"] and len(digests["esdb"]) == 2


def test_status_and_quarantine_of_a_pair_never_show_a_password(tmp_path: Path, esdb_node):
    source = tmp_path / "source.db"
    with open_store(f"sqlite:///{source}") as s:
        seed(s, 200)
    cluster = esdb_node.url.replace("esdb://", "esdb://admin:hunter2@")
    env = {**os.environ, "PYTHONPATH": str(REPO), "EVENTMIG_UPCASTERS": "upcasters:registry"}
    env.pop("EVENTMIG_STORE", None)
    outputs = []
    for command in ("migrate", "status", "quarantine"):
        done = subprocess.run([sys.executable, "-m", "eventmig", command, "--store", f"sqlite:///{source}",
                               "--target", cluster, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        outputs.append(done.stdout + done.stderr)
    assert not any("hunter2" in out for out in outputs)
    status = msgspec.json.decode(outputs[1].strip().splitlines()[-1])
    assert "admin:***@" in status["store"]
    written = msgspec.json.decode(outputs[0].strip().splitlines()[-1])["events_written"]
    assert [(e["epoch"], e["status"], e["events"]) for e in status["epochs"]] == [(1, "active", 200), (2, "ready", written)]


def test_switch_across_stores_catches_up_with_the_source(tmp_path: Path, esdb_node, shop_registry):
    """Events appended to the source after the migration are migrated and verified by the switch."""
    from eventmig import new_event

    source = f"sqlite:///{tmp_path / 'source.db'}"
    with open_store(source) as s:
        seed(s, 400)
    with open_pair(source, esdb_node.url) as pair:
        report = migrate(pair, shop_registry, workers=1)
        with open_store(source) as app:  # the application, still on the source
            stream = next(n for n in app.list_streams() if n.startswith("order-"))
            app.append(stream, [new_event("OrderCancelled", {"order_id": stream[6:], "reason": "late",
                                                             "cancelled_at": "2024-06-01T00:00:00Z"})])
        flip = switch(pair, shop_registry, workers=1)
        assert flip.caught_up == 1
        assert pair.at_epoch(2).count_events() == report.events_written + 1
        assert pair.at_epoch(2).read_stream(stream)[-1].type == "OrderCancelled"


def test_one_cluster_into_a_new_one_keeps_the_stream_names(esdb_node, shop_registry):
    """Epoch = a new cluster: the migrated streams keep their names there, so after the switch the applications
    need only the new connection string; the new cluster's own epoch 1 holds nothing and refuses writes."""
    from esdb_standin import StandIn

    from eventmig import StoreError, new_event

    from kurrentdbclient import KurrentDBClient

    with open_store(esdb_node.url) as old:
        seed(old, 500)
        old_streams = set(old.list_streams())
        kept = next(s for s in sorted(old_streams) if len(old.read_stream(s)) >= 2)  # $tb 1 leaves some
    old_client = KurrentDBClient(esdb_node.url)
    old_client.set_stream_metadata(kept, metadata={"$maxAge": 3600, "$acl": {"$r": "ops"}, "$tb": 1})
    old_client.close()
    with StandIn() as new_node:
        with open_pair(esdb_node.url, new_node.url) as pair:
            report = migrate(pair, shop_registry, workers=1)
            assert verify(pair, shop_registry, workers=1).ok
            switch(pair, shop_registry, workers=1)
        with open_store(new_node.url) as app:  # what an application opening the new cluster sees
            assert app.active_epoch() == report.target_epoch and set(app.list_streams()) == old_streams
            stream = next(iter(old_streams))
            assert app.read_stream(stream)[0].decoded_metadata()["eventmig"]["source"]["stream"] == stream
            with pytest.raises(StoreError, match="holds nothing"):
                app.at_epoch(1).append(stream, [new_event("X", {})])
        client = KurrentDBClient(new_node.url)
        assert stream in {e.stream_name for e in client.read_all()}  # under its own name on the server
        # retention and access control came along, truncation did not (what it hid was not copied)
        assert client.get_stream_metadata(kept)[0] == {"$maxAge": 3600, "$acl": {"$r": "ops"}}
        client.close()
