"""An application written with the ``eventsourcing`` library, migrated by eventmig, on SQLite and PostgreSQL.

The application wrote its history with version-1 event classes; eventmig
copies it through upcasters registered with eventmig into a new epoch (a
sibling of the application's table, built from its own DDL), verifies it and
swaps it in under the application's table name. The same application, now
with version-3 classes and no ``upcast_`` methods, loads every aggregate,
and a follower that tracked the old positions carries on from where it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
import sqlalchemy as sa
from eventsourcing.system import ProcessApplication

import eventsourcing_app as v1
import eventsourcing_app_v3 as v3
from eventmig.backends import open_store
from eventmig.backends.sql.engine import normalize_sql_url
from eventmig.backends.sql.layouts import EVENTSOURCING
from eventmig.errors import ConfigError
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.migrate import migrate
from eventmig.jobs.verify import verify
from eventmig.model.registry import Registry
from eventmig.model.steps import emit
from eventsourcing_upcasters import NEW, OLD, registry
from test_cli import eventmig
from test_false_clean import expected_table


class Tally(ProcessApplication):
    """A follower: notes every event of the dog school it processes (its position is in its tracking table)."""

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.seen: list[tuple[UUID, int, str]] = []

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        self.seen.append((domain_event.originator_id, domain_event.originator_version, type(domain_event).__qualname__))


def follower(url: str, leader: Any, tmp_path: Any) -> Tally:
    env = v1.persistence_env(url)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":  # its own file: eventsourcing fixes SQLite's table names
        env["SQLITE_DBNAME"] = str(tmp_path / "tally.db")
    tally = Tally(env=env)
    tally.follow(leader.name, leader.notification_log)
    return tally


def rows(url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(normalize_sql_url(url))
    try:
        with engine.connect() as c:
            return list(c.exec_driver_sql(sql).fetchall())
    finally:
        engine.dispose()


def history(url: str) -> tuple[list[UUID], Any]:
    """Three dogs with two tricks each, written by the version-1 application, the first one snapshotted."""
    app = v1.DogSchool(env={**v1.persistence_env(url), "IS_SNAPSHOTTING_ENABLED": "y"})
    ids = [app.register(f"dog-{i}") for i in range(3)]
    for dog_id in ids:
        for t in range(2):
            app.add_trick(dog_id, f"trick-{t}")
    app.take_snapshot(ids[0])
    return ids, app


def snapshot_table(url: str) -> str:
    return expected_table(url).replace("events", "snapshots")


def test_an_eventsourcing_application_reads_its_migrated_history_with_version_3_classes(store_url: str, tmp_path):
    ids, app = history(store_url)
    tally = follower(store_url, app, tmp_path)
    tally.pull_and_process(app.name)
    assert len(tally.seen) == 9 and tally.recorder.max_tracking_id(app.name) == 9
    app.close()
    assert rows(store_url, f"SELECT count(*) FROM {snapshot_table(store_url)}")[0][0] == 1

    compiled = registry.compile()
    table = expected_table(store_url)
    with open_store(store_url, table=table, layout=EVENTSOURCING, init=True) as store:
        assert store.capabilities.lineage == frozenset({"table"})
        report = migrate(store, compiled, workers=1)
        assert report.events_written == 9 and report.after == {
            f"{NEW}.Registered v3": 3, f"{NEW}.TrickLearned v3": 6}
        assert verify(store, compiled, workers=1).ok
        lineage = store.at_epoch(2).lineage(range(1, 10))
        assert sorted(lineage) == list(range(1, 10))  # kept beside the events, keyed by their (unchanged) positions
        assert all(found["source"]["position"] == p for p, found in lineage.items())
        assert switch(store, compiled, workers=1).to_epoch == 2
    # the application's table kept its name and its positions; the state keeps its wrappers, gains class_version
    state = rows(store_url, f"SELECT topic, state FROM {table} WHERE originator_version = 1 LIMIT 1")[0]
    stored = msgspec.json.decode(bytes(state[1]))
    assert state[0] == f"{NEW}.Registered" and stored["class_version"] == 3 and stored["breed"] == "mixed"
    assert stored["timestamp"]["_type_"] == "datetime_iso" and "eventmig" not in stored
    assert rows(store_url, f"SELECT count(*) FROM {snapshot_table(store_url)}")[0][0] == 0  # stale: deleted

    with v3.dog_school(store_url) as new_app:
        for n, dog_id in enumerate(ids):
            dog = new_app.get_dog(dog_id)
            assert isinstance(dog, v3.Dog) and dog.version == 3
            assert (dog.display_name, dog.breed, dog.tricks) == (f"dog-{n}", "mixed", [("trick-0", 1), ("trick-1", 1)])
        new_app.learn_trick(ids[1], "roll over", 2)
        assert new_app.get_dog(ids[1]).tricks[-1] == ("roll over", 2)
        # the follower, now running the new code, carries on from its tracked position
        tally = follower(store_url, new_app, tmp_path)
        tally.pull_and_process(new_app.name)
        assert tally.seen == [(ids[1], 4, "Dog.TrickLearned")]
        assert tally.recorder.max_tracking_id(new_app.name) == 10
        tally.close()

    with open_store(store_url, table=table, layout=EVENTSOURCING) as store:
        back = rollback(store, force=True)  # the trick learned since exists only in epoch 2: kept there, hidden
        assert (back.to_epoch, back.hidden_events) == (1, 1)
    with v1.dog_school(store_url) as old_app:
        for n, dog_id in enumerate(ids):
            dog = old_app.repository.get(dog_id)
            assert isinstance(dog, v1.Dog) and (dog.name, dog.tricks) == (f"dog-{n}", ["trick-0", "trick-1"])


def test_a_rollback_right_after_the_switch_restores_the_old_history(store_url: str):
    ids = v1.write_history(store_url, dogs=2, tricks=1)
    before = rows(store_url, f"SELECT * FROM {expected_table(store_url)} ORDER BY 1, 2")
    compiled = registry.compile()
    with open_store(store_url, table=expected_table(store_url), layout=EVENTSOURCING, init=True) as store:
        migrate(store, compiled, workers=1)
        switch(store, compiled, workers=1)
        assert rollback(store).to_epoch == 1
    assert rows(store_url, f"SELECT * FROM {expected_table(store_url)} ORDER BY 1, 2") == before
    with v1.dog_school(store_url) as app:
        assert [app.repository.get(i).name for i in ids] == ["dog-0", "dog-1"]


def dropping_tricks() -> Registry:
    dropping = Registry(version_location="metadata:class_version")
    dropping.drop(f"{OLD}.TrickAdded", 1)
    return dropping


def test_a_split_that_would_move_positions_is_refused_and_a_drop_keeps_them(store_url: str):
    """Followers track positions: a split moves the events after it (refused in one line); a drop leaves a gap."""
    ids = v1.write_history(store_url, dogs=2, tricks=1)  # positions 1, 2 registered; 3, 4 tricks
    with v1.dog_school(store_url) as app:
        app.register("last")  # position 5
    split = Registry(version_location="metadata:class_version")
    split.split(f"{OLD}.Registered", 1, into=[(f"{OLD}.Registered", 2), (f"{OLD}.TrickAdded", 2)],
                fn=lambda d: [emit(f"{OLD}.Registered", 2, d), emit(f"{OLD}.TrickAdded", 2, {"trick": "sit"})])
    split.fields(f"{OLD}.TrickAdded", 1)
    table = expected_table(store_url)
    with open_store(store_url, table=table, layout=EVENTSOURCING, init=True) as store:
        with pytest.raises(ConfigError, match="an event from position 1 at 2") as refused:
            migrate(store, split.compile(), workers=1)
        assert "\n" not in str(refused.value) and store.active_epoch() == 1
        migrate(store, dropping_tricks().compile(), workers=1, restart=True)
        switch(store, dropping_tricks().compile(), workers=1)
    position = "rowid" if store_url.startswith("sqlite") else "notification_id"
    assert [r[0] for r in rows(store_url, f"SELECT {position} FROM {table} ORDER BY 1")] == [1, 2, 5]
    with v1.dog_school(store_url) as app:
        app.add_trick(ids[0], "sit")
        assert app.recorder.max_notification_id() == 6


def test_dropping_the_last_events_never_hands_their_positions_out_again(store_url: str):
    v1.write_history(store_url, dogs=2, tricks=1)  # the tricks, at 3 and 4, are the last events
    with open_store(store_url, table=expected_table(store_url), layout=EVENTSOURCING, init=True) as store:
        migrate(store, dropping_tricks().compile(), workers=1)
        if store_url.startswith("sqlite"):  # a rowid table's next rowid is its largest plus one, and nothing else
            with pytest.raises(ConfigError, match="dropped the last events .positions 3 to 4."):
                switch(store, dropping_tricks().compile(), workers=1)
            assert store.active_epoch() == 1
            return
        switch(store, dropping_tricks().compile(), workers=1)
    with v1.dog_school(store_url) as app:  # PostgreSQL: the sequence was set past the old table's head
        app.register("next")
        assert app.recorder.max_notification_id() == 5


def test_a_compressed_store_is_refused_in_one_line(store_url: str):
    app = v1.DogSchool(env={**v1.persistence_env(store_url), "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"})
    app.register("fido")
    app.close()
    with open_store(store_url, table=expected_table(store_url), layout=EVENTSOURCING, init=True) as store:
        with pytest.raises(ConfigError, match="zlib-compressed") as refused:
            migrate(store, registry.compile(), workers=1)
        assert "\n" not in str(refused.value)


def test_events_the_running_application_saves_meanwhile_are_caught_up_under_the_switch_lock(store_url: str):
    ids = v1.write_history(store_url, dogs=2, tricks=1)
    compiled = registry.compile()
    table = expected_table(store_url)
    with v1.dog_school(store_url) as running:
        with open_store(store_url, table=table, layout=EVENTSOURCING, init=True) as store:
            migrate(store, compiled, workers=1)
            running.add_trick(ids[0], "late")  # position 5, after the migration read the table
            flipped = switch(store, compiled, workers=1)
            assert flipped.caught_up == 1 and flipped.verification.ok
        # the running application, its connections and statements as they were, reads and writes the new table
        assert running.recorder.max_notification_id() == 5
        topics = [r[0] for r in rows(store_url, f"SELECT topic FROM {table} ORDER BY originator_version DESC LIMIT 1")]
        assert topics == [f"{NEW}.TrickLearned"]
    with v3.dog_school(store_url) as app:
        assert app.get_dog(ids[0]).tricks == [("trick-0", 1), ("late", 1)]
        app.learn_trick(ids[0], "later", 2)
        assert app.recorder.max_notification_id() == 6


def test_the_commands_migrate_switch_and_roll_back_an_eventsourcing_store(store_url: str, tmp_path):
    ids = v1.write_history(store_url, dogs=1, tricks=1)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nstore = "{store_url}"\nupcasters = "eventsourcing_upcasters:registry"\n'
        f'events_table = "{expected_table(store_url)}"\nlayout = "eventsourcing"\n')
    config = ("--config", str(tmp_path / "pyproject.toml"))
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    for command in ("migrate", "verify", "switch"):
        done = eventmig(command, *config, env=env)
        assert done.returncode == 0, (command, done.stderr)
    with v3.dog_school(store_url) as app:
        assert app.get_dog(ids[0]).display_name == "dog-0"
    back = eventmig("rollback", *config, env=env)
    assert back.returncode == 0, back.stderr
    with v1.dog_school(store_url) as app:
        assert app.repository.get(ids[0]).name == "dog-0"


def test_postgres_insert_functions_write_into_the_switched_table(postgres_url: str):
    """With POSTGRES_ENABLE_DB_FUNCTIONS the application inserts through a PL/pgSQL function naming its table:
    after the swap by rename the name is the new table's, and the running application's next save lands there."""
    env = {**v1.persistence_env(postgres_url), "POSTGRES_ENABLE_DB_FUNCTIONS": "y"}
    running = v1.DogSchool(env=env)
    try:
        dog = running.register("fido")
        compiled = registry.compile()
        with open_store(postgres_url, table="dogschool_events", layout=EVENTSOURCING, init=True) as store:
            migrate(store, compiled, workers=1)
            running.add_trick(dog, "late")
            assert switch(store, compiled, workers=1).caught_up == 1
        running.register("rex")  # through the function, into the new table
        assert rows(postgres_url, "SELECT max(notification_id) FROM dogschool_events")[0][0] == 3
        assert rows(postgres_url, "SELECT count(*) FROM dogschool_events_e1")[0][0] == 2
    finally:
        running.close()


def test_an_encrypted_state_is_refused_in_one_line(store_url: str):
    """AES-GCM state as eventsourcing's cipher writes it (nonce, ciphertext, tag: bytes that are not JSON)."""
    v1.write_history(store_url, dogs=1, tricks=0)
    table = expected_table(store_url)
    engine = sa.create_engine(normalize_sql_url(store_url))
    with engine.begin() as c:
        c.exec_driver_sql(f"UPDATE {table} SET state = %s" if "postgresql" in store_url else
                          f"UPDATE {table} SET state = ?", (bytes(range(7, 40)),))
    engine.dispose()
    with open_store(store_url, table=table, layout=EVENTSOURCING, init=True) as store:
        with pytest.raises(ConfigError, match=r"not JSON \(encrypted\?\)") as refused:
            migrate(store, registry.compile(), workers=1)
        assert "\n" not in str(refused.value) and store.active_epoch() == 1
