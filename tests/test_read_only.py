"""The commands that only look (status, plan, quarantine, check, verify) work where nothing may be written.

SQLite: a file and directory without write permission. The suite runs as
root, whom permissions do not stop, so the commands run in a process that
gave up the capability to override them (as any other user would be): a
write would fail, and every file must come out unchanged. PostgreSQL: a
connection whose transactions are read-only, and a role that may only
SELECT (roles belong to the whole server: each test makes its own and drops
it). Neither may create eventmig's tables, nor anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
#: what a command reads: each must succeed on a store it cannot write to
LOOKING = [("status",), ("plan",), ("quarantine",), ("verify",), ("check", "--examples", "3")]

#: run in a fresh interpreter before exec: drops the capabilities that let root ignore file permissions
#: (a wrapper process rather than ``preexec_fn``: a test process that has loaded grpc must not run Python
#: code between fork and exec, or grpc's fork handlers can abort the child)
_AS_ANY_USER = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def eventmig(*args: str, store: str, bound: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    wrapper = [sys.executable, "-c", _AS_ANY_USER] if bound else [sys.executable]
    return subprocess.run([*wrapper, "-m", "eventmig", *args, "--store", store], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def prepared(store: str) -> None:
    """A store with a finished migration and one event in its quarantine."""
    from eventmig import new_event
    from eventmig.backends import open_store

    assert eventmig("demo", "--seed-only", "--events", "400", store=store).returncode == 0
    with open_store(store) as s:
        s.append("order-bad", [new_event("OrderPlaced", b'{"order_id": "trunc', {})])
    assert eventmig("migrate", store=store).returncode == 0


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "store"
    directory.mkdir()
    yield directory
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def test_a_read_only_sqlite_file_can_be_looked_at(read_only_directory: Path):
    url = f"sqlite:///{read_only_directory}/events.db"
    prepared(url)
    for path in read_only_directory.iterdir():
        path.chmod(0o444)
    read_only_directory.chmod(0o555)
    before = snapshot(read_only_directory)

    # the test means something: a command that writes is stopped
    refused = eventmig("migrate", "--restart", store=url, bound=True)
    assert refused.returncode == 3 and "readonly database" in refused.stderr, refused.stderr
    for args in LOOKING:
        result = eventmig(*args, "--json", store=url, bound=True)
        assert result.returncode == (1 if args[0] in ("verify", "check") else 0), (args, result.stderr, result.stdout)
        report = json.loads(result.stdout)
        assert "error" not in report, report
    listed = json.loads(eventmig("quarantine", "--json", store=url, bound=True).stdout)
    assert [e["stream"] for e in listed["entries"]] == ["order-bad"]
    assert snapshot(read_only_directory) == before  # no file changed, none appeared


def test_a_sqlite_file_being_written_can_be_looked_at_read_only(tmp_path: Path):
    """While an application holds it open (its WAL files exist), a reader uses them and changes nothing."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/events.db"
    prepared(url)
    application = sqlite3.connect(tmp_path / "events.db")
    try:
        application.execute("SELECT count(*) FROM events").fetchall()
        assert (tmp_path / "events.db-wal").exists()
        before = snapshot(tmp_path)
        for args in LOOKING[:3]:
            result = eventmig(*args, "--json", store=url)
            assert result.returncode == 0, result.stderr
        assert snapshot(tmp_path) == before
    finally:
        application.close()


@pytest.fixture
def select_only_role(postgres_url: str) -> Iterator[str]:
    """The store's URL for a new role that may only read its schema; the role is dropped afterwards."""
    url = sa.engine.make_url(postgres_url)
    role = f"eventmig_ro_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        yield url.set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")  # its privileges
            conn.exec_driver_sql(f"DROP ROLE {role}")
        admin.dispose()


def grant_reading(postgres_url: str, role_url: str) -> None:
    role = sa.engine.make_url(role_url).username
    schema = sa.engine.make_url(postgres_url).query["options"].split("=", 1)[1]
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    finally:
        admin.dispose()


def tables(postgres_url: str) -> list[str]:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            return sorted(conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").scalars())
    finally:
        engine.dispose()


def read_only_transactions(url: str) -> str:
    return url.replace("options=-csearch_path%3D", "options=-cdefault_transaction_read_only%3Don%20-csearch_path%3D")


def test_postgresql_through_connections_that_cannot_write(postgres_url: str, select_only_role: str):
    prepared(postgres_url)
    grant_reading(postgres_url, select_only_role)
    before = tables(postgres_url)
    for url in (read_only_transactions(postgres_url), select_only_role):
        refused = eventmig("quarantine", "--accept", store=url)
        assert refused.returncode == 3, refused.stderr  # the test means something: writing is stopped
        for args in LOOKING:
            result = eventmig(*args, "--json", store=url)
            assert result.returncode == (1 if args[0] in ("verify", "check") else 0), (url, args, result.stderr)
            assert "error" not in json.loads(result.stdout)
    assert tables(postgres_url) == before


def test_an_application_table_eventmig_never_touched_is_planned_read_only(postgres_url: str, select_only_role: str):
    """A first look at a store: its events table, no eventmig tables yet, and a role that cannot create them."""
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE events (global_position BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                "stream TEXT NOT NULL, version BIGINT NOT NULL, event_id TEXT NOT NULL, type TEXT NOT NULL, "
                "data BYTEA NOT NULL, metadata BYTEA NOT NULL, recorded_at BIGINT NOT NULL)")
            conn.exec_driver_sql(
                "INSERT INTO events (stream, version, event_id, type, data, metadata, recorded_at) VALUES "
                "('order-1', 1, 'e-1', 'OrderPlaced', '{\"order_id\": \"1\", \"total\": 2.5}', '{}', 0), "
                "('order-1', 2, 'e-2', 'CartViewed', '{}', '{}', 0)")
    finally:
        engine.dispose()
    grant_reading(postgres_url, select_only_role)
    plan = eventmig("plan", "--json", store=select_only_role)
    assert plan.returncode == 0, plan.stderr
    stored = {(p["type"], p["version"]): (p["events"], p["treatment"]) for p in json.loads(plan.stdout)["stored"]}
    assert stored == {("OrderPlaced", 1): (1, "upcast"), ("CartViewed", 1): (1, "dropped")}
    status = json.loads(eventmig("status", "--json", store=select_only_role).stdout)
    assert status["active_epoch"] == 1 and [(e["epoch"], e["events"]) for e in status["epochs"]] == [(1, 2)]
    assert status["runs"] == [] and status["switches"] == []
    assert json.loads(eventmig("quarantine", "--json", store=select_only_role).stdout)["run_id"] is None
    assert tables(postgres_url) == ["events"]
