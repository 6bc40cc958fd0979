"""The ``eventmig`` command end to end, as an operator runs it: real processes, real stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventmig.urls import mask_url
from eventmig.backends import open_store

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, store: str | None = None, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("EVENTMIG_STORE", None)
    if store:
        environment["EVENTMIG_STORE"] = store
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def as_json(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_pipeline_through_the_cli(store_url: str):
    seeded = eventmig("demo", "--seed-only", "--events", "4000", "--store", store_url, "--json")
    assert seeded.returncode == 0, seeded.stderr
    assert as_json(seeded)["steps"][0]["events"] == 4000

    plan = eventmig("plan", "--json", store=store_url)
    assert plan.returncode == 0, plan.stderr
    stored = {(p["type"], p["version"]): p["treatment"] for p in as_json(plan)["stored"]}
    assert stored[("OrderPlaced", 1)] == "upcast" and stored[("OrderCancelled", 1)] == "head"
    assert stored[("CartViewed", 1)] == "dropped"

    dry = as_json(eventmig("migrate", "--dry-run", "--json", store=store_url))
    assert dry["dry_run"] and dry["events_read"] == 4000

    migrated = eventmig("migrate", "--json", "--batch-size", "700", "--workers", "1", store=store_url)
    assert migrated.returncode == 0, migrated.stderr
    report = as_json(migrated)
    assert report["events_written"] == dry["events_written"] and report["after"] == dry["after"]

    verified = eventmig("verify", "--json", "--workers", "2", "--batch-size", "500", store=store_url)
    assert verified.returncode == 0 and as_json(verified)["ok"]

    status = as_json(eventmig("status", "--json", store=store_url))
    assert status["active_epoch"] == 1
    assert [(e["epoch"], e["status"]) for e in status["epochs"]] == [(1, "active"), (2, "ready")]
    assert status["runs"][0]["status"] == "completed" and status["pending_events"] == 0

    switched = eventmig("switch", "--json", store=store_url)
    assert switched.returncode == 0, switched.stderr
    assert as_json(switched)["to_epoch"] == 2

    human = eventmig("status", store=store_url)
    assert "epoch 2 is active" in human.stdout

    rolled = eventmig("rollback", "--json", store=store_url)
    assert rolled.returncode == 0 and as_json(rolled)["to_epoch"] == 1


def test_verify_failure_exits_1_and_names_the_stream(sqlite_url: str):
    assert eventmig("demo", "--seed-only", "--events", "500", "--store", sqlite_url).returncode == 0
    assert eventmig("migrate", store=sqlite_url).returncode == 0
    with open_store(sqlite_url) as s:
        target = s.at_epoch(2)
        row = next(target.read_all_rows())[0]
        with target.engine.begin() as c:  # type: ignore[attr-defined]
            c.exec_driver_sql("DELETE FROM events_e2 WHERE global_position = ?", (row[2],))
    result = eventmig("verify", store=sqlite_url)
    assert result.returncode == 1
    assert row[0] in result.stderr and "verification FAILED" in result.stdout
    refused = eventmig("switch", store=sqlite_url)
    assert refused.returncode == 1 and "switch refused" in refused.stderr


def test_quarantine_listing_and_accepting(sqlite_url: str):
    with open_store(sqlite_url) as s:
        from eventmig import new_event

        s.append("order-x", [new_event("OrderPlaced", b'{"order_id": "trunc', {})])
    assert eventmig("migrate", store=sqlite_url).returncode == 0
    listed = as_json(eventmig("quarantine", "--json", store=sqlite_url))
    assert len(listed["entries"]) == 1 and "not valid JSON" in listed["entries"][0]["reason"]
    assert eventmig("switch", store=sqlite_url).returncode == 1
    (run,) = as_json(eventmig("status", "--json", store=sqlite_url))["runs"]
    assert (run["quarantined"], run["unaccepted_quarantine"], run["read"], run["written"]) == (1, 1, 1, 0)
    assert run["checkpoint"] is not None and run["status"] == "completed"
    assert "1 (1 unaccepted)" in eventmig("status", store=sqlite_url).stdout
    wrong = eventmig("quarantine", "--accept", "--id", "999", store=sqlite_url)
    assert wrong.returncode == 2 and "no quarantined event with id 999" in wrong.stderr
    assert as_json(eventmig("status", "--json", store=sqlite_url))["runs"][0]["unaccepted_quarantine"] == 1
    accepted = as_json(eventmig("quarantine", "--accept", "--json", store=sqlite_url))
    assert accepted["accepted_now"] == 1
    (run,) = as_json(eventmig("status", "--json", store=sqlite_url))["runs"]
    assert (run["quarantined"], run["unaccepted_quarantine"]) == (1, 0)
    assert eventmig("switch", store=sqlite_url).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("migrate", "--store", "mongodb://localhost/x"), "unknown store URL"),
        (("migrate", "--batch-size", "0", "--store", "sqlite:///:memory:"), "batch"),
        (("verify", "--config", "/nonexistent/pyproject.toml"), "does not exist"),
        (("migrate", "--store", "sqlite:////nonexistent/dir/x.db"), "does not exist"),
        (("status", "--store", "sqlite:///:memory:"), "is in memory: give it a file"),
        (("status", "--store", "sqlite://"), "is in memory: give it a file"),
        (("status", "--store", "postgresql://u:pw@127.0.0.1:port/x"), "invalid event store URL"),
        (("status", "--store", "postgresql://u:p@ss-word@127.0.0.1:1/x"), "write '@', ':', '/' and '%' in a user name or password as %40"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], message: str):
    result = eventmig(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pw" not in result.stderr and "ss-word" not in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("store = 5", "setting store must be a string, got 5"),
        ("read_models = 5", "setting read_models must be a string, got 5"),
        ('upcasters = ["svc"]', "setting upcasters must be a string"),
        ("batch_size = true", "setting batch_size must be an integer from 1 to 1,000,000, got True"),
        ("workers = 0", "setting workers must be an integer from 1 to 64, got 0"),
        ("store = ", "invalid TOML"),
        ("stor = 'x'", "unknown [tool.eventmig] setting(s) stor"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path: Path, setting: str, message: str):
    (tmp_path / "pyproject.toml").write_text(f"[tool.eventmig]\n{setting}\n")
    for flags in ((), ("--json",)):
        result = eventmig("status", *flags, cwd=tmp_path)
        assert result.returncode == 2, result.stderr + result.stdout
        if flags:
            assert message in as_json(result)["error"] and as_json(result)["exit_code"] == 2
        else:
            assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("migrate", "--bogus"), "No such option: --bogus"),
        (("verify", "--workers", "0"), "--workers"),
        (("no-such-command",), "No such command"),
    ],
)
def test_usage_errors_are_json_with_json(args: tuple[str, ...], message: str):
    result = eventmig(*args, "--json")
    assert result.returncode == 2
    report = as_json(result)
    assert message in report["error"] and report["exit_code"] == 2
    plain = eventmig(*args)
    assert plain.returncode == 2 and message in plain.stderr and not plain.stdout


def test_names_are_printed_as_they_are_not_as_markup(sqlite_url: str, tmp_path: Path):
    from eventmig import new_event

    with open_store(sqlite_url) as s:
        s.append("[/oops]", [new_event("OrderPlaced", b"{not json", {})])
        s.append("[bold]b", [new_event("[red]Odd", {"a": 1})])
    assert eventmig("migrate", store=sqlite_url).returncode == 0
    listed = eventmig("quarantine", store=sqlite_url)
    assert listed.returncode == 0, listed.stderr
    assert "[/oops]" in listed.stdout
    planned = eventmig("plan", store=sqlite_url)
    assert planned.returncode == 0 and "[red]Odd" in planned.stdout
    scaffolded = eventmig("init", str(tmp_path))
    assert "[tool.eventmig]" in scaffolded.stdout
    assert "[tool.eventmig]" in eventmig("init", "--help").stdout


PRICED_SERVICE = """
import msgspec
from eventmig import Registry

registry = Registry()

@registry.schema("Priced", 1)
class V1(msgspec.Struct):
    price: float

@registry.schema("Priced", 2)
class V2(msgspec.Struct):
    cents: int

@registry.upcaster
def cents(e: V1) -> V2:
    return V2(round(e.price * 100))
"""


@pytest.mark.parametrize(
    ("version_key", "stored", "expected"),
    [
        # the version in a metadata key of the service's choosing; absent means version 1
        ("metadata:v", [("Priced", {}), ("Priced", {"v": 1}), ("Priced", {"v": 2})],
         [("Priced", {"v": 2})] * 3),
        # the version as a suffix of the type name
        ("type-suffix:.v", [("Priced", {}), ("Priced.v1", {}), ("Priced.v2", {})],
         [("Priced.v2", {})] * 3),
    ],
)
def test_where_the_version_lives_comes_from_the_config(tmp_path: Path, version_key: str, stored: list, expected: list):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text(PRICED_SERVICE)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.eventmig]\nupcasters = "svc:registry"\nstore = "sqlite:///s.db"\nversion_key = "{version_key}"\n')
    from eventmig import new_event

    payloads = [{"price": 1.5}, {"price": 2.0}, {"cents": 7}]
    with open_store(f"sqlite:///{tmp_path}/s.db") as s:
        s.append("p-1", [new_event(t, data, meta) for (t, meta), data in zip(stored, payloads)])
    migrated = eventmig("migrate", "--json", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    report = as_json(migrated)
    assert report["before"] == {"Priced v1": 2, "Priced v2": 1} and report["after"] == {"Priced v2": 3}
    assert report["unknown"] == 0 and report["quarantined"] == 0
    assert eventmig("verify", cwd=tmp_path).returncode == 0
    with open_store(f"sqlite:///{tmp_path}/s.db") as s:
        target = s.at_epoch(report["target_epoch"]).read_stream("p-1")
    assert [e.decoded_data() for e in target] == [{"cents": 150}, {"cents": 200}, {"cents": 7}]
    assert [(e.type, {k: v for k, v in e.decoded_metadata().items() if k != "eventmig"}) for e in target] == expected


def test_invalid_registry_exits_2_naming_the_problem(tmp_path: Path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text(textwrap.dedent("""
        from eventmig import Registry
        registry = Registry()
        registry.rename_type("A", 1, to="B", to_version=1)
        registry.rename_type("B", 1, to="A", to_version=1)
    """))
    (tmp_path / "pyproject.toml").write_text('[tool.eventmig]\nupcasters = "svc:registry"\nstore = "sqlite:///e.db"\n')
    result = eventmig("plan", cwd=tmp_path)
    assert result.returncode == 2
    assert "cycle: A v1 -> B v1 -> A v1" in result.stderr


def test_unreachable_postgres_is_a_runtime_error_without_the_password():
    result = eventmig("status", "--store", "postgresql+psycopg://admin:s3cret-pw@127.0.0.1:1/db")
    assert result.returncode == 3
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "admin:***@" in result.stderr
    as_js = eventmig("status", "--json", "--store", "postgresql://admin:s3cret-pw@127.0.0.1:1/db")
    assert "s3cret-pw" not in as_js.stdout + as_js.stderr and as_json(as_js)["exit_code"] == 3


@pytest.mark.parametrize("command", ["status", "migrate", "plan", "switch"])
def test_a_password_in_the_query_string_is_masked_too(command: str):
    url = "postgresql+psycopg://admin@127.0.0.1:1/db?sslmode=disable&password=s3cret-pw"
    for flags in ((), ("--json",)):
        result = eventmig(command, "--store", url, *flags)
        assert result.returncode == 3
        assert "s3cret-pw" not in result.stderr + result.stdout
        assert "password=***" in result.stderr + result.stdout


def test_mask_url_finds_passwords_inside_messages():
    assert mask_url("cannot connect to x://u:pw@h/d?password=pw2: refused") == (
        "cannot connect to x://u:***@h/d?password=***: refused")
    assert mask_url("x://u@h/d?password=p:w&a=1") == "x://u@h/d?password=***&a=1"
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert mask_url("'x://u:p@ss@h/d': user a@b") == "'x://u:***@h/d': user a@b"


def test_second_migration_at_once_exits_4(sqlite_url: str):
    assert eventmig("demo", "--seed-only", "--events", "100", "--store", sqlite_url).returncode == 0
    with open_store(sqlite_url) as s, s.lock("migrate"):
        result = eventmig("migrate", store=sqlite_url)
    assert result.returncode == 4
    assert "another eventmig job holds the 'migrate' lock" in result.stderr


def test_init_scaffolds_a_service(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "svc"\n')
    result = eventmig("init", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "pyproject.toml").read_text()
    assert '[project]\nname = "svc"' in text and '[tool.eventmig]' in text
    assert (tmp_path / "upcasters" / "__init__.py").exists() and (tmp_path / "projections" / "__init__.py").exists()
    again = as_json(eventmig("init", str(tmp_path), "--json"))
    assert again["created"] == [] and len(again["skipped"]) == 3
    plan = eventmig("plan", "--no-store", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert as_json(plan)["chains"] == {}


def test_the_scaffolds_commented_upcaster_passes_a_strict_check_once_uncommented(tmp_path: Path):
    assert eventmig("init", str(tmp_path)).returncode == 0
    module = tmp_path / "upcasters" / "__init__.py"
    lines = module.read_text().splitlines()
    module.write_text("\n".join(line[2:] if line.startswith("# ") else ("" if line == "#" else line) for line in lines))
    result = eventmig("check", "--no-store", "--examples", "20", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    nodes = {(n["type"], n["version"]): n for n in as_json(result)["properties"]["nodes"]}
    assert nodes[("OrderPlaced", 1)]["generated"] and nodes[("OrderPlaced", 1)]["cases"] == 1


def test_plan_works_right_after_init_in_an_empty_directory(tmp_path: Path):
    assert eventmig("init", cwd=tmp_path).returncode == 0
    plan = eventmig("plan", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "Upcaster chains" in plan.stdout and "eventmig.db does not exist" in plan.stdout
    report = as_json(eventmig("plan", "--json", cwd=tmp_path))
    assert report["ok"] and report["stored"] == [] and "does not exist" in report["store_skipped"]
    assert not (tmp_path / "eventmig.db").exists()  # looking creates no store
    # once the service has events, plan shows them
    with open_store(f"sqlite:///{tmp_path}/eventmig.db") as s:
        from eventmig import new_event

        s.append("s-1", [new_event("Something", {"a": 1})])
    report = as_json(eventmig("plan", "--json", cwd=tmp_path))
    assert report["store_skipped"] is None
    assert [(p["type"], p["treatment"]) for p in report["stored"]] == [("Something", "unknown")]


def test_demo_runs_the_pipeline(tmp_path: Path):
    result = eventmig("demo", "--events", "3000", "--json", "--store", f"sqlite:///{tmp_path}/demo.db")
    assert result.returncode == 0, result.stderr
    steps = {s["step"]: s for s in as_json(result)["steps"]}
    assert list(steps) == ["seed", "migrate", "verify", "switch", "rebuild", "verify read models", "swap"]
    event_steps = ["seed", "migrate", "verify", "switch", "rebuild"]
    assert all(steps[s]["events_per_second"] > 0 and steps[s]["events"] > 0 for s in event_steps)
    # the read-model steps handle tables: no events/s to show
    assert all(steps[s]["events"] is None and steps[s]["events_per_second"] is None for s in ("verify read models", "swap"))
    migrated = int(steps["migrate"]["result"].split()[0])
    assert steps["rebuild"]["events"] == migrated
    status = as_json(eventmig("status", "--json", "--store", f"sqlite:///{tmp_path}/demo.db"))
    assert status["active_epoch"] == 2
    assert {m["projection"]: m["version"] for m in status["read_models"]} == {
        "order_summary": 1, "customer_totals": 1, "order_snapshots": 1}


def on_a_terminal(*args: str, store: str) -> tuple[int, str, str]:
    """Run eventmig with its stderr on a pseudo-terminal, as an operator sees it: (exit code, stdout, stderr)."""
    import pty
    import re

    master, slave = pty.openpty()
    env = {**os.environ, "EVENTMIG_STORE": store, "TERM": "xterm", "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "eventmig", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.wait(timeout=300)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    return proc.returncode, stdout, screen


def test_long_commands_draw_progress_bars_on_a_terminal(sqlite_url: str):
    assert eventmig("demo", "--seed-only", "--events", "3000", "--store", sqlite_url).returncode == 0
    code, _, screen = on_a_terminal("migrate", "--workers", "1", store=sqlite_url)
    assert code == 0, screen
    assert "migrate epoch 1 -> 2" in screen and "3000/3000" in screen and "events/s" in screen
    code, _, screen = on_a_terminal("verify", "--workers", "1", store=sqlite_url)
    assert code == 0 and "verify" in screen and "events/s" in screen
    code, stdout, screen = on_a_terminal("verify", "--json", store=sqlite_url)
    assert code == 0 and json.loads(stdout)["ok"] and "events/s" not in screen  # --json: no bars
    # a rebuild draws a bar per partition it reads
    code, _, screen = on_a_terminal("rebuild", "--workers", "2", store=sqlite_url)
    assert code == 0, screen
    for partition in ("order_summary p0, order_snapshots p0", "order_summary p1, order_snapshots p1", "customer_totals"):
        assert partition in screen, screen


def test_every_command_takes_json():
    import typer.main

    from eventmig.cli.app import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"init", "plan", "migrate", "verify", "switch", "rollback", "status", "demo"} <= commands.keys()
    for name, command in commands.items():
        assert any("--json" in getattr(p, "opts", ()) for p in command.params), name


def test_out_of_order_commands_get_one_line_and_exit_2(sqlite_url: str):
    with open_store(sqlite_url):
        pass  # an empty store
    for command, message in (("verify", "nothing to verify"), ("switch", "nothing to switch to"),
                             ("rollback", "nothing to roll back")):
        result = eventmig(command, store=sqlite_url)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert as_json(eventmig(command, "--json", store=sqlite_url))["exit_code"] == 2
    # an empty store migrates, verifies and switches; a second migrate has nothing left to do
    first = as_json(eventmig("migrate", "--json", store=sqlite_url))
    assert (first["events_read"], first["events_written"], first["status"]) == (0, 0, "completed")
    second = as_json(eventmig("migrate", "--json", store=sqlite_url))
    assert second["run_id"] == first["run_id"] and second["events_read"] == 0
    assert eventmig("switch", store=sqlite_url).returncode == 0
    again = eventmig("switch", store=sqlite_url)
    assert again.returncode == 2 and "nothing to switch to" in again.stderr
    assert eventmig("rollback", store=sqlite_url).returncode == 0
    twice = eventmig("rollback", store=sqlite_url)
    assert twice.returncode == 2 and "nothing to roll back: epoch 1 is active again" in twice.stderr
    assert as_json(eventmig("status", "--json", store=sqlite_url))["active_epoch"] == 1


def test_plan_names_stored_versions_with_no_path_to_a_head_and_exits_1(sqlite_url: str):
    from eventmig import new_event

    with open_store(sqlite_url) as s:
        s.append("order-1", [new_event("OrderPlaced", {"order_id": "1"}, {"schema_version": 7}),
                             new_event("OrderCancelled", {"order_id": "1", "reason": "r", "cancelled_at": "t"})])
    human = eventmig("plan", store=sqlite_url)
    assert human.returncode == 1 and "no path to a head: OrderPlaced v7" in human.stderr
    report = as_json(eventmig("plan", "--json", store=sqlite_url))
    assert not report["ok"] and report["uncovered"] == ["OrderPlaced v7"]
    pair = next(p for p in report["stored"] if p["version"] == 7)
    assert pair["treatment"] == "no path" and "newer than the head schema OrderPlaced v3" in pair["detail"]


def test_a_working_url_with_a_password_never_shows_it(postgres_server: str):
    """Every command, human and --json, on a store that accepts the password (trust auth ignores it)."""
    from sqlalchemy.engine import make_url

    from eventmig.testing.plugin import fresh_schema

    secret = "s3cret-pw"
    with_password = make_url(postgres_server).set(password=secret).render_as_string(hide_password=False)
    with fresh_schema(with_password) as url:
        commands = [("demo", "--events", "300", "--store", url), ("demo", "--events", "300", "--store", url),
                    ("plan",), ("check", "--examples", "2", "--sample", "5"), ("status",), ("quarantine",),
                    ("rebuild", "--workers", "1"), ("rollback", "--read-models"), ("migrate",), ("verify",),
                    ("switch",), ("rollback",)]
        printed = ""
        for args in commands:
            for flags in ((), ("--json",)):
                result = eventmig(*args, *flags, store=url)
                assert secret not in result.stdout + result.stderr, (args, flags)
                printed += result.stdout + result.stderr
        assert printed.count(":***@") >= 10  # the URL was printed, masked, many times over
