"""The EventStoreDB backend against the stand-in: a migration on one cluster, and the server's hazards.

Each test gets a fresh stand-in node (``esdb_node``): an empty cluster.
The hazards are the server's, pinned in test_esdb_contract.py; here the
backend is shown to handle each: a read resumed from a commit position
includes it, ``$all`` still holds deleted and truncated streams' events,
and the created time cannot be set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import json
import time

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kurrentdbclient import KurrentDBClient, StreamState as ClientState
from kurrentdbclient.exceptions import DeadlineExceededError, ServiceUnavailableError, SSLError, WrongCurrentVersionError

from eventmig import StreamState, new_event
from eventmig.backends.esdb import EpochPointer, is_transient
from eventmig.backends.esdb.connection import ENV_PASSWORD, ENV_USERNAME, with_credentials
from eventmig.backends.esdb.lineage import CHAIN, CREATED, NUMBER, POSITION, STREAM, iso_micros
from eventmig.jobs.cutover import rollback, switch
from eventmig.jobs.seed import seed
from eventmig.jobs.migrate import migrate
from eventmig.backends import open_store
from eventmig.model.records import TargetEvent
from eventmig.jobs.verify import verify


def raw(url: str) -> KurrentDBClient:
    return KurrentDBClient(url)


def test_migrate_verify_switch_rollback_on_one_cluster(esdb_node, shop_registry):
    with open_store(esdb_node.url) as store:
        seed(store, 1500)
        report = migrate(store, shop_registry, batch_size=400, workers=1)
        assert report.status == "completed" and report.events_read == 1500
        v = verify(store, shop_registry, workers=1)
        assert v.ok, v.problems
        assert v.expected_events == report.events_written == store.at_epoch(2).count_events()
        flip = switch(store, shop_registry, workers=1)
        assert (flip.from_epoch, flip.to_epoch) == (1, 2)
    client = raw(esdb_node.url)
    names = {e.stream_name for e in client.read_all(filter_include=("e2.",), filter_by_prefix=True, filter_by_stream_name=True)}
    assert names and all(n.startswith("e2.") for n in names)  # epoch 2 is a prefix: its own $ce- category
    pointer = EpochPointer(client, refresh_seconds=0)  # what service code resolves names through
    assert pointer.epoch() == 2 and pointer.stream("order-7") == "e2.order-7"
    with open_store(esdb_node.url) as app:
        assert app.active_epoch() == 2
        stream = next(s for s in app.list_streams() if s.startswith("order-"))
        events = app.read_stream(stream)
        assert [e.version for e in events] == list(range(len(events)))  # revisions from 0
        assert events[0].type == "OrderPlaced" and events[0].decoded_metadata()["eventmig"]["source"]["stream"] == stream
        assert len(app.at_epoch(1).read_stream(stream)) > 0  # the old epoch is kept
        back = rollback(app)
        assert back.to_epoch == 1
    with open_store(esdb_node.url) as app:
        assert app.active_epoch() == 1
    assert pointer.stream("order-7") == "order-7"


def test_a_resumed_read_skips_the_event_at_its_checkpoint(esdb_node):
    """read_all from commit position P includes P on the server; resuming after P must not return it again."""
    with open_store(esdb_node.url) as store:
        for i in range(5):
            store.append(f"s-{i}", [new_event("E", {"i": i})])
        rows = [r for b in store.read_all_rows() for r in b]
        p = rows[2][2]
        client = raw(esdb_node.url)
        served = [e.commit_position for e in client.read_all(commit_position=p)]
        assert served[0] == p  # the server's behaviour: the event at P comes back
        assert [r[2] for b in store.read_all_rows(p) for r in b] == [r[2] for r in rows[3:]]
        assert store.count_events(after=p) == 2 and store.position_after(p, 1) == rows[3][2]


def test_deleted_and_truncated_streams_are_not_resurrected(esdb_node, shop_registry):
    """$all keeps the events of soft-deleted, $tb-truncated and tombstoned streams until a scavenge: not copied."""
    client = raw(esdb_node.url)
    with open_store(esdb_node.url) as store:
        for name in ("kept-1", "deleted-1", "truncated-1", "tombstoned-1", "recreated-1"):
            store.append(name, [new_event("Noted", {"n": i}) for i in range(4)])
        client.delete_stream("deleted-1", current_version=ClientState.ANY)
        client.set_stream_metadata("truncated-1", metadata={"$tb": 2})
        client.tombstone_stream("tombstoned-1", current_version=ClientState.ANY)
        client.delete_stream("recreated-1", current_version=ClientState.ANY)
        store.append("recreated-1", [new_event("Noted", {"n": 9})])  # recreated: only the new event is visible
    in_all = {e.stream_name for e in client.read_all()}
    assert {"deleted-1", "truncated-1", "tombstoned-1"} <= in_all  # the hazard: still in $all
    with open_store(esdb_node.url) as store:
        visible = [(r[0], r[1]) for b in store.read_all_rows() for r in b]
        assert sorted(visible) == [*[("kept-1", i) for i in range(4)], ("recreated-1", 4),
                                   ("truncated-1", 2), ("truncated-1", 3)]
        report = migrate(store, shop_registry, workers=1)
        assert report.events_read == 7
        copied = {r[0] for b in store.at_epoch(report.target_epoch).read_all_rows() for r in b}
        assert copied == {"kept-1", "recreated-1", "truncated-1"}
        assert verify(store, shop_registry, workers=1).ok


def test_lineage_is_flat_strings_with_the_original_time(esdb_node, shop_registry):
    with open_store(esdb_node.url) as store:
        seed(store, 50)
        source = {(r[0], r[1]): r for b in store.read_all_rows() for r in b}
        migrate(store, shop_registry, workers=1)
    client = raw(esdb_node.url)
    migrated = [e for e in client.read_all(filter_include=("e2.",), filter_by_prefix=True, filter_by_stream_name=True)]
    assert migrated
    for e in migrated:
        meta = json.loads(e.metadata)
        assert "eventmig" not in meta  # nothing nested
        for key in (CREATED, STREAM, NUMBER, POSITION, CHAIN):
            assert isinstance(meta[key], str), key
        original = source[(meta[STREAM], int(meta[NUMBER]))]
        assert meta[CREATED] == iso_micros(original[7]) and int(meta[POSITION]) == original[2]
    with open_store(esdb_node.url) as store:  # read back: the original record time, not the server's
        for row in (r for b in store.at_epoch(2).read_all_rows() for r in b):
            came_from = msgspec.json.decode(row[6])["eventmig"]["source"]
            assert row[7] == source[(came_from["stream"], came_from["version"])][7]


def test_a_repeated_batch_is_a_no_op_and_resumes_number_from_the_checkpoint(esdb_node):
    """A job killed after appending but before saving its checkpoint: the same batch again writes nothing twice."""
    with open_store(esdb_node.url) as store:
        epoch = store.create_epoch(1)
        target = store.at_epoch(epoch)

        def batch(position: int, stream: str, version: int) -> TargetEvent:
            meta = ('{"eventmig":{"source":{"epoch":1,"stream":"%s","version":%d,"position":%d,"event_id":"x"},'
                    '"chain":[]}}' % (stream, version, position)).encode()
            return TargetEvent(stream, version, f"00000000-0000-4000-8000-{position:012d}", "T", b"{}", meta, 1)

        first = [batch(10, "a", 0), batch(20, "b", 0), batch(30, "a", 1)]
        target.write_batch(first)  # written, checkpoint 30 never saved
        second = [batch(40, "a", 2)]
        target.write_batch(second)
        assert target.stream_versions_as_of(30) == {"a": 1, "b": 0}
        assert target.stream_versions_as_of(None) == {}
        target.write_batch(second)  # the retry: a no-op on the server
        target.write_batch(first)
        assert target.count_events() == 4
        with pytest.raises(Exception, match="not where the migration left it"):
            target.write_batch([batch(50, "a", 2)])  # another event at a taken revision: a conflict, never a duplicate
        # resumed with other batch boundaries: a batch repeating some of what is there, then more
        target.write_batch([batch(20, "b", 0), batch(40, "a", 2), batch(60, "a", 3), batch(70, "b", 1)])
        assert sorted((r[0], r[1], r[3][-2:]) for b in target.read_all_rows() for r in b) == [
            ("a", 0, "10"), ("a", 1, "30"), ("a", 2, "40"), ("a", 3, "60"), ("b", 0, "20"), ("b", 1, "70")]


def test_sigkill_mid_migration_into_esdb_resumes_with_nothing_twice(esdb_node, shop_registry):
    url = esdb_node.url
    with open_store(url) as s:
        seed(s, 4000)
        expected = migrate(s, shop_registry, dry_run=True, workers=1)
    env = {**os.environ, "EVENTMIG_STORE": url}
    command = [sys.executable, "-m", "eventmig", "migrate", "--batch-size", "100", "--workers", "1", "--json"]
    for _ in range(2):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        with open_store(url) as s:
            while time.monotonic() < deadline and not (s.runs("migrate") and s.runs("migrate")[-1].checkpoint):
                time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert '"resumed_from":null' not in done.stdout
    with open_store(url) as s:
        (run,) = s.runs("migrate")
        rows = [r for b in s.at_epoch(run.target_epoch).read_all_rows() for r in b]
        assert len(rows) == expected.events_written
        assert len({(r[0], r[1]) for r in rows}) == len(rows)
        assert len({(r[0], r[3]) for r in rows}) == len(rows)
        assert verify(s, shop_registry, workers=1).ok


def test_transient_errors_are_classified_for_the_retry_policy():
    assert is_transient(ServiceUnavailableError("node down"))
    assert is_transient(DeadlineExceededError("deadline"))
    assert not is_transient(SSLError("bad certificate"))  # a ServiceUnavailable that a retry cannot cure
    assert not is_transient(WrongCurrentVersionError("conflict"))
    assert not is_transient(ValueError("x"))


def test_an_unavailable_node_is_retried_by_the_jobs_and_a_bad_certificate_is_not():
    """The jobs' one retry policy knows this backend's transient errors once the backend is loaded."""
    from eventmig import retry

    calls: list[int] = []

    def work(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise ServiceUnavailableError("node restarting")  # escaped the backend unwrapped
        return "done"

    quick = retry.RetryPolicy(attempts=5, max_wait_s=0.01)
    assert retry.with_retries(work, job="migrate", store_url="esdb://node", resume="eventmig migrate",
                              policy=quick) == "done"
    assert calls == [1, 2, 3]

    def bad_certificate(attempt: int) -> str:
        calls.append(attempt)
        raise SSLError("certificate verify failed")

    calls.clear()
    with pytest.raises(Exception):
        retry.with_retries(bad_certificate, job="migrate", store_url="esdb://node", resume="eventmig migrate",
                           policy=quick)
    assert calls == [1]


def test_a_node_lost_during_a_job_fails_in_a_way_the_jobs_retry(esdb_node):
    from eventmig import retry

    store = open_store(esdb_node.url)
    try:
        esdb_node.stop()
        with pytest.raises(Exception) as failure:
            store.head_position()
        assert retry.is_transient(failure.value), repr(failure.value)
    finally:
        store.close()


def test_credentials_come_from_the_environment_and_are_never_shown(esdb_node, monkeypatch):
    monkeypatch.setenv(ENV_USERNAME, "admin")
    monkeypatch.setenv(ENV_PASSWORD, "s3cr@t")
    assert with_credentials("esdb://node:2113?Tls=true") == "esdb://admin:s3cr%40t@node:2113?Tls=true"
    assert with_credentials("esdb://ops:pw@node:2113") == "esdb://ops:pw@node:2113"  # the URL's own user wins
    with open_store(esdb_node.url.replace("esdb://", "esdb://admin:hunter2@")) as s:
        assert "hunter2" not in s.url and "***" in s.url
    with pytest.raises(Exception) as refused:
        open_store("esdb://admin:hunter2@127.0.0.1:1?Tls=true&tlsCaFile=/nonexistent")
    assert "hunter2" not in str(refused.value)


def test_append_conflicts_read_as_eventmig_errors(esdb_node):
    with open_store(esdb_node.url) as store:
        assert store.append("s", [new_event("A", {})], StreamState.NO_STREAM) == 0
        assert store.append("s", [new_event("A", {}), new_event("A", {})], 0) == 2
        assert store.append("s", [new_event("A", {})]) == 3
        with pytest.raises(Exception, match="expected version 1, the stream is at version 3"):
            store.append("s", [new_event("A", {})], 1)


def test_unknown_scheme_names_esdb():
    with pytest.raises(Exception, match="esdb://HOST:PORT"):
        open_store("mongodb://x")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    user=st.dictionaries(st.text(max_size=8).filter(lambda k: not k.startswith(("$original", "eventmig"))),
                         st.one_of(st.integers(), st.text(max_size=8), st.booleans(), st.none()), max_size=4),
    recorded_at=st.integers(min_value=0, max_value=4_102_444_800_000_000),
    event_id=st.one_of(st.uuids().map(str), st.text(min_size=1, max_size=20)),
    source=st.fixed_dictionaries({"epoch": st.integers(1, 9), "stream": st.text(max_size=10),
                                  "version": st.integers(0, 2**40), "position": st.integers(0, 2**62),
                                  "event_id": st.text(max_size=12)}),
    chain=st.lists(st.text(max_size=10), max_size=3),
    with_lineage=st.booleans(),
)
def test_lineage_round_trips_through_flat_string_keys(user, recorded_at, event_id, source, chain, with_lineage):
    """What eventmig writes comes back as it was (user metadata, lineage, record time, id); on the server
    the lineage is flat string values and the id a UUID."""
    from eventmig.backends.esdb import lineage

    meta = dict(user)
    if with_lineage:
        meta["eventmig"] = {"source": source, "chain": chain}
    stored, uid = lineage.to_server(msgspec.json.encode(meta), recorded_at, event_id)
    flat = msgspec.json.decode(stored)
    assert "eventmig" not in flat
    assert all(isinstance(v, str) for k, v in flat.items() if k.startswith(("$original", "eventmig.")))
    back, at, read_id = lineage.from_server(stored, 0, str(uid))
    assert (msgspec.json.decode(back), at, read_id) == (meta, recorded_at, event_id)


@pytest.mark.parametrize(("url", "code", "said"), [
    ("esdb://admin:hunter2@127.0.0.1:1?Tls=false", 3, "esdb://admin:***@127.0.0.1:1?Tls=false: ServiceUnavailableError"),
    ("esdb://127.0.0.1:1", 2, "Username and password are required"),  # TLS, the client's default, needs a user
])
def test_an_unreachable_or_misconfigured_cluster_is_one_masked_line(url: str, code: int, said: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    done = subprocess.run([sys.executable, "-m", "eventmig", "status", "--store", url, "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code
    error = json.loads(done.stdout.strip().splitlines()[-1])
    assert said in error["error"] and "hunter2" not in done.stdout + done.stderr


def test_switch_catches_up_with_events_appended_since_the_migration(esdb_node, shop_registry):
    with open_store(esdb_node.url) as store:
        seed(store, 600)
        migrate(store, shop_registry, workers=1)
        stream = next(s for s in store.list_streams() if s.startswith("order-"))
        late = store.append(stream, [new_event("OrderCancelled", {"order_id": stream[6:], "reason": "late",
                                                                  "cancelled_at": "2024-06-01T00:00:00Z"})])
        with pytest.raises(Exception, match="appended to epoch 1 after the migration"):
            switch(store, shop_registry, workers=1, catch_up=False)
        flip = switch(store, shop_registry, workers=1)
        assert flip.caught_up == 1 and flip.to_epoch == 2
        moved = store.at_epoch(2).read_stream(stream)
        assert moved[-1].type == "OrderCancelled" and moved[-1].decoded_metadata()["eventmig"]["source"]["version"] == late


def test_restart_soft_deletes_the_unfinished_epoch_and_never_reuses_its_prefix(esdb_node, shop_registry):
    with open_store(esdb_node.url) as store:
        seed(store, 300)
        first = migrate(store, shop_registry, workers=1)
        again = migrate(store, shop_registry, workers=1, restart=True)
        assert (first.target_epoch, again.target_epoch) == (2, 3)
        assert [e.epoch for e in store.epochs()] == [1, 3]
        assert verify(store, shop_registry, workers=1).ok
    client = raw(esdb_node.url)
    e2 = {e.stream_name for e in client.read_all(filter_include=("e2.",), filter_by_prefix=True, filter_by_stream_name=True)}
    assert e2  # still in $all until a scavenge: soft-deleted, not gone
    assert client.get_current_version(next(iter(e2))) is ClientState.NO_STREAM  # but reads as deleted


_operations = st.lists(st.tuples(st.sampled_from(["append", "delete", "truncate", "max-count", "tombstone"]),
                                 st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=14)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(operations=_operations)
def test_reading_an_epoch_returns_exactly_what_stream_reads_return(operations):
    """Whatever mix of appends, soft deletes, $tb, $maxCount and tombstones: the backend's $all read holds
    exactly the events stream reads show, each once, in commit order, and nothing else $all still has."""
    from esdb_standin import StandIn

    with StandIn() as node, open_store(node.url) as store:
        client = raw(node.url)
        for op, which, n in operations:
            stream = f"s-{which}"
            try:
                if op == "append":
                    store.append(stream, [new_event("E", {"i": i}) for i in range(n)])
                elif op == "delete":
                    client.delete_stream(stream, current_version=ClientState.ANY)
                elif op == "truncate":
                    client.set_stream_metadata(stream, metadata={"$tb": n})
                elif op == "max-count":
                    client.set_stream_metadata(stream, metadata={"$maxCount": n})
                else:
                    client.tombstone_stream(stream, current_version=ClientState.ANY)
            except Exception:  # noqa: BLE001 - deleting what is not there, writing to a tombstone: the server refuses
                pass
        expected = []
        for which in range(4):
            try:
                expected += [(e.commit_position, e.stream_name, e.stream_position) for e in client.get_stream(f"s-{which}")]
            except Exception:  # noqa: BLE001 - not found or tombstoned: nothing visible
                pass
        got = [(r[2], r[0], r[1]) for b in store.read_all_rows(batch_size=3) for r in b]
        assert got == sorted(expected)
        assert store.count_events() == len(expected) and store.head_position() == (max(expected)[0] if expected else None)
        client.close()


def test_stream_metadata_is_carried_to_the_new_epoch_without_truncate_before(esdb_node, shop_registry):
    client = raw(esdb_node.url)
    with open_store(esdb_node.url) as store:
        for name in ("kept-1", "plain-1"):
            store.append(name, [new_event("Noted", {"n": i}) for i in range(3)])
        client.set_stream_metadata("kept-1", metadata={"$maxAge": 86400, "$acl": {"$r": "ops"}, "owner": "billing",
                                                       "$tb": 1})
        report = migrate(store, shop_registry, workers=1)
        assert report.events_read == 5  # kept-1 from revision 1 on (2), plain-1 whole (3)
    assert client.get_stream_metadata("e2.kept-1")[0] == {"$maxAge": 86400, "$acl": {"$r": "ops"}, "owner": "billing"}
    assert client.get_stream_metadata("e2.plain-1")[0] == {}
    assert [e.stream_position for e in client.get_stream("e2.kept-1")] == [0, 1]  # no $tb: nothing hidden


def test_every_scheme_of_the_client_opens_the_backend(esdb_node):
    with open_store(esdb_node.url) as store:
        store.append("s-1", [new_event("E", {})])
    for url in (esdb_node.discover_url, esdb_node.url.replace("esdb://", "kurrentdb://"),
                esdb_node.url.replace("esdb://", "kdb://")):
        with open_store(url) as store:
            assert [e.stream for e in store.read_stream("s-1")] == ["s-1"], url
