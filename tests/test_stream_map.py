"""``--stream-map``: a rename onto a name some stream keeps would merge two histories into one stream.

A dry run reports every such collision; the real run refuses it before
creating anything; a stream created under a taken name after the
migration started stops the resumed migration, and the switch, before
anything of it is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventmig import ConfigError, new_event
from eventmig.jobs.cutover import switch
from eventmig.jobs.migrate import migrate
from eventmig.ports import EventStore

REPO = Path(__file__).resolve().parent.parent


def _streams(store: EventStore, *names: str) -> None:
    for name in names:
        store.append(name, [new_event("X", {"in": name})])


def test_a_dry_run_reports_a_collision_with_a_stream_that_keeps_its_name(store: EventStore, shop_registry):
    _streams(store, "a", "b", "c")
    dry = migrate(store, shop_registry, stream_map={"a": "b"}, dry_run=True, workers=1)
    assert dry.events_read == 3
    assert dry.problems == [
        "stream map renames 'a' onto 'b', a stream of epoch 1 that keeps its name (two histories would merge into one stream)"
    ]
    # a chain of renames frees each name it takes
    assert migrate(store, shop_registry, stream_map={"a": "b", "b": "c", "c": "d"}, dry_run=True).problems == []


def test_the_real_run_refuses_a_collision_before_creating_anything(store: EventStore, shop_registry):
    _streams(store, "a", "b")
    with pytest.raises(ConfigError, match="renames 'a' onto 'b': existing stream"):
        migrate(store, shop_registry, stream_map={"a": "b"})
    assert [e.epoch for e in store.epochs()] == [1] and store.runs() == []


def test_a_stream_created_under_a_taken_name_after_the_start_stops_the_resumed_migration(store: EventStore, shop_registry):
    _streams(store, "a")
    first = migrate(store, shop_registry, stream_map={"a": "b"}, workers=1)
    target = store.at_epoch(first.target_epoch)
    _streams(store, "b")  # an application creates "b" while the migration waits for its switch
    with pytest.raises(ConfigError, match="streams created since it started collide: stream map renames 'a' onto 'b'"):
        migrate(store, shop_registry, stream_map={"a": "b"}, workers=1)
    with pytest.raises(ConfigError, match="switch refused, events appended during the switch collide"):
        switch(store, shop_registry, workers=1)
    assert store.active_epoch() == 1
    assert [e.decoded_data() for e in target.read_stream("b")] == [{"in": "a"}]  # nothing merged into a's history


def _cli(*args: str, store: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVENTMIG_STORE": store}
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_dry_run_reports_and_the_real_run_refuses_with_exit_2(store: EventStore, store_url: str, tmp_path: Path):
    _streams(store, "order-1", "order-2")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"order-1": "order-2"}))
    dry = _cli("migrate", "--stream-map", str(mapping), "--dry-run", store=store_url)
    assert dry.returncode == 2, dry.stderr
    assert "error: stream map renames 'order-1' onto 'order-2'" in dry.stderr and "Dry run" in dry.stdout
    as_json = _cli("migrate", "--stream-map", str(mapping), "--dry-run", "--json", store=store_url)
    assert as_json.returncode == 2 and len(json.loads(as_json.stdout)["problems"]) == 1
    real = _cli("migrate", "--stream-map", str(mapping), store=store_url)
    assert real.returncode == 2 and len(real.stderr.strip().splitlines()) == 1
    assert "renames 'order-1' onto 'order-2'" in real.stderr
    assert [e.epoch for e in store.epochs()] == [1] and store.runs() == []
