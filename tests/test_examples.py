"""The scripts in examples/ run as a newcomer runs them, and still show what they say they show.

Each runs in a process of its own, from an empty directory that must stay
empty (the examples clean up after themselves), with no ``EVENTMIG_*``
variable of the caller's leaking in. The PostgreSQL ones use the suite's
server: skipped without one, failing under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
#: nothing listens on port 1
UNREACHABLE = "postgresql+psycopg://admin:s3cret-pw@127.0.0.1:1/test"


def run_example(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert list(cwd.iterdir()) == [], "the example left files behind"
    return result


def number(pattern: str, text: str) -> int:
    """The number the pattern's group captures in ``text`` (thousands separators allowed)."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return int(match.group(1).replace(",", ""))


def schema_exists(server: str, schema: str) -> bool:
    engine = sa.create_engine(server)
    try:
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).scalar())
    finally:
        engine.dispose()


def test_rename_split_drop(tmp_path: Path):
    result = run_example("rename_split_drop.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 8 legacy events: 2 CartViewed dropped, 1 OrderCheckedOut split in two
    assert "migrate epoch 1 -> 2: read 8, wrote 7, dropped 2, quarantined 0" in out
    table = out.split("before (epoch 1)")[1].split("order-1 in the new epoch")[0].strip("\n").splitlines()[1:]
    before = dict(re.findall(r"(\w+ v\d) +(\d+)", "\n".join(line[:28] for line in table)))
    after = dict(re.findall(r"(\w+ v\d) +(\d+)", "\n".join(line[28:] for line in table)))
    assert before == {"BasketCreated v1": "2", "CartViewed v1": "2", "ItemAdded v1": "2", "ItemAdded v2": "1",
                      "OrderCheckedOut v1": "1"}
    assert after == {"ItemAdded v2": "3", "OrderShipped v1": "1", "OrderStarted v1": "2", "PaymentCaptured v1": "1"}

    new_epoch = out.split("order-1 in the new epoch 2:")[1].split("verify:")[0]
    assert '{"price_cents":1490,"quantity":2,"sku":"beans-1kg"}' in new_epoch  # renamed and in cents
    assert "from epoch 1 order-1 #1 via rename BasketCreated v1 -> OrderStarted v1" in new_epoch
    assert new_epoch.count("from epoch 1 order-1 #5 via __main__.checkout_was_two_facts") == 2  # the split
    assert "CartViewed" not in new_epoch
    assert '"eventmig":{"source":{"epoch":1,"stream":"order-1","version":5' in new_epoch  # the lineage metadata

    assert "verify: digests match (2 streams, 7 events" in out
    assert "switch: epoch 1 -> 2 is active" in out
    assert "now reads: ['OrderStarted', 'ItemAdded', 'ItemAdded', 'PaymentCaptured', 'OrderShipped']" in out
    assert "rollback: epoch 2 -> 1 is active again" in out
    assert "reads again: ['BasketCreated', 'ItemAdded', 'CartViewed', 'ItemAdded', 'OrderCheckedOut']" in out
    assert 'epochs: {"1": "active", "2": "retired"}' in out


def test_postgres(postgres_server: str, tmp_path: Path):
    result = run_example("postgres.py", "--url", postgres_server, "--events", "5000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    schema = re.search(r"schema (eventmig_example_\w+) \(dropped at the end\)", out).group(1)
    assert f"dropped schema {schema}" in out and not schema_exists(postgres_server, schema)

    assert number(r"seed: (\d[\d,]*) legacy", out) == 5000
    read = number(r"migrate epoch 1 -> 2: (\d[\d,]*) read", out)
    written = number(r"(\d[\d,]*) written", out)
    dropped = number(r"(\d[\d,]*) dropped", out)
    split = number(r"OrderShipped v1 +(\d[\d,]*)", out)  # each becomes an address and a shipment
    assert read == 5000 and written == read - dropped + split
    assert " 0 quarantined" in out
    assert re.search(rf"verify: digests match \(\d[\d,]* streams, {written:,} events", out)

    assert "switch: epoch 1 -> 2 is active, 2 late events migrated and verified by the switch" in out
    after_switch = out.split("now reads:")[1].split("rollback:")[0]
    assert '"total_cents":1250' in after_switch and '"currency":"EUR"' in after_switch  # upcast by the switch
    assert "LineItemAdded v1" in after_switch
    after_rollback = out.split("reads again:")[1]
    assert "OrderPlaced v1" in after_rollback and '"total":12.5' in after_rollback
    assert "rollback: epoch 2 -> 1 is active again" in out


def test_postgres_unreachable_is_one_line_and_exit_3(tmp_path: Path):
    result = run_example("postgres.py", "--url", UNREACHABLE, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: PostgreSQL at postgresql+psycopg://admin:***@127.0.0.1:1/test is unreachable")
    assert "s3cret-pw" not in result.stderr


def check_read_models(out: str) -> None:
    """The rebuild's report and the queries after it, whichever database the read models went to."""
    assert "rebuild of epoch 1: 3,000 events replayed, verified and swapped in" in out
    orders = number(r"order_summary +swapped +(\d[\d,]*) rows", out)
    assert orders > 0 and number(r"order_snapshots +swapped +(\d[\d,]*) rows", out) == orders
    assert number(r"customer_totals +swapped +(\d[\d,]*) rows", out) > 0
    assert f"{orders:,} added, 0 changed, 0 removed" in out
    statuses = re.search(r"orders by status: (.*)", out).group(1)
    assert sum(int(n.replace(",", "")) for n in re.findall(r"(\d[\d,]*)", statuses)) == orders
    assert re.search(r"snapshot of order-\S+ at version \d+: shipped, \d+ lines, [\d,.]+ [A-Z]{3}, shipped by ", out)
    tables = re.search(r"in the read-model database: (.*)", out).group(1).split(", ")
    assert {"order_summary", "customer_totals", "order_snapshots", "eventmig_rebuilds"} <= set(tables)
    in_store = re.search(r"in the event store, no read-model table: (.*)", out).group(1).split(", ")
    assert "events" in in_store and not {"order_summary", "eventmig_rebuilds"} & set(in_store)


def test_read_models_in_postgres(postgres_server: str, tmp_path: Path):
    result = run_example("read_models_elsewhere.py", "--url", postgres_server, "--events", "3000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    schema = re.search(r"read models: PostgreSQL at .*, schema (eventmig_example_\w+) \(dropped at the end\)", out).group(1)
    check_read_models(out)
    assert not schema_exists(postgres_server, schema)


def test_read_models_fall_back_to_sqlite(tmp_path: Path):
    result = run_example("read_models_elsewhere.py", "--url", UNREACHABLE, "--events", "3000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "PostgreSQL at postgresql+psycopg://admin:***@127.0.0.1:1/test is not available" in out
    assert "read models: a second SQLite file instead" in out and "s3cret-pw" not in out
    check_read_models(out)


def test_esdb_against_the_stand_in(tmp_path: Path):
    result = run_example("esdb.py", "--events", "1500", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "the test suite's stand-in (in memory, not a real EventStoreDB server)" in out
    written = number(r"from SQLite into ([\d,]+) on the cluster", out)
    assert number(r"verify: ([\d,]+) expected events", out) == written == number(r"expected events, ([\d,]+) on the cluster", out)
    assert "digests match" in out and "starts at revision 0 with OrderPlaced" in out
    for key in ("$originalCreatedDate: '2024-", "$originalStreamId: 'order-", "$originalEventNumber: '1'",
                "eventmig.chain: '[", "eventmig.sourceEpoch: '1'"):
        assert key in out, key
    assert "switch: epoch 2 (the cluster) is active" in out and "rollback: epoch 1 (SQLite, never written)" in out


def test_every_example_is_listed_and_tested():
    readme = (EXAMPLES / "README.md").read_text()
    this_file = Path(__file__).read_text()
    for script in sorted(EXAMPLES.glob("*.py")):
        assert f".venv/bin/python examples/{script.name}" in readme, f"{script.name} is not in examples/README.md"
        assert f'"{script.name}"' in this_file, f"{script.name} is not run by {Path(__file__).name}"


def test_adopt_existing_store(tmp_path: Path):
    result = run_example("adopt_existing_store.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stored_events: eventsourcing layout, 2 events" in out
    assert "no events table 'events' and no eventmig state: refusing to create eventmig's tables" in out
    assert "events: columns layout, 3 events (OrderPlaced v1: 3)" in out
    assert "migrate: read 3, wrote 3; verify: digests match" in out
    assert 'the application reads: {"order_id":"o-1","total_cents":125}' in out
    assert out.rstrip().endswith('the application reads: {"order_id": "o-1", "total": 1.25}')


def test_eventsourcing_upgrade(tmp_path: Path):
    result = run_example("eventsourcing_upgrade.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "the old application wrote 6 events and a snapshot; the follower tracked up to 6" in out
    assert "migrate: read 6, wrote 6: {'__main__:After.Dog.Registered v3': 2, '__main__:After.Dog.TrickLearned v3': 4}" in out
    assert "verify: digests match" in out and "switch: epoch 1 -> 2 is active in table stored_events" in out
    assert "After.Dog Fido (mixed): [('sit', 1), ('roll over', 1)]" in out  # not the stale snapshot's Before.Dog
    assert "the follower carries on: up to 7, 1 new event(s)" in out
    assert out.rstrip().endswith("Before.Dog Fido: ['sit', 'roll over']")
