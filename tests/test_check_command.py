"""``eventmig check``, the CI gate, end to end: real processes, real stores, real service code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from eventmig import new_event, open_store

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def as_json(result: subprocess.CompletedProcess) -> dict:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def service_copy(tmp_path: Path, breakage: tuple[str, str] | None = None, store: str | None = None) -> Path:
    """A copy of the reference service's upcasters with its own pyproject.toml; returns that file."""
    root = tmp_path / "service"
    shutil.copytree(REPO / "upcasters", root / "upcasters", ignore=shutil.ignore_patterns("__pycache__"))
    if breakage is not None:
        orders = root / "upcasters" / "orders.py"
        text = orders.read_text()
        assert breakage[0] in text
        orders.write_text(text.replace(breakage[0], breakage[1]))
    pyproject = root / "pyproject.toml"
    store_line = f'store = "{store}"\n' if store else ""
    pyproject.write_text(f'[tool.eventmig]\nupcasters = "upcasters:registry"\n{store_line}')
    return pyproject


def test_check_passes_on_the_reference_service_and_a_store_of_its_history(store_url: str) -> None:
    seeded = eventmig("demo", "--seed-only", "--events", "600", "--store", store_url, "--json")
    assert seeded.returncode == 0, seeded.stderr

    result = eventmig("check", "--store", store_url, "--examples", "20", "--sample", "25", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = as_json(result)
    assert report["ok"] and report["properties"]["ok"]
    nodes = {f"{n['type']} v{n['version']}": n for n in report["properties"]["nodes"]}
    assert nodes["OrderPlaced v1"]["examples"] > 0 and not nodes["OrderPlaced v1"]["failures"]
    assert report["properties"]["not_generated"][0].startswith("CartViewed v1: cannot generate without a schema")
    store = report["store"]
    assert store["events"] == 600 and store["uncovered"] == [] and store["failed"] == []
    treatments = {(p["type"], p["version"]): p["treatment"] for p in store["stored"]}
    assert treatments[("OrderPlaced", 1)] == "upcast" and treatments[("CartViewed", 1)] == "dropped"
    assert 0 < store["sampled"] <= 25 * len(treatments)

    human = eventmig("check", "--store", store_url, "--examples", "10", "--sample", "5")
    assert human.returncode == 0, human.stderr
    assert "Property checks" in human.stdout and "check passed" in human.stdout
    assert "not generated: CartViewed v1" in human.stdout


def test_a_missing_sqlite_store_is_not_checked_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    result = eventmig("check", "--store", f"sqlite:///{path}", "--examples", "5", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = as_json(result)
    assert report["store"] is None and "does not exist" in report["store_skipped"]
    assert not path.exists()

    no_store = as_json(eventmig("check", "--no-store", "--examples", "5", "--json"))
    assert no_store["ok"] and no_store["store_skipped"] == "not requested (--no-store)"


def test_a_broken_upcaster_fails_the_check_and_is_named_with_its_minimal_example(tmp_path: Path) -> None:
    pyproject = service_copy(tmp_path, ("euros_to_cents(e.total), e.placed_at", "round(100 / e.total), e.placed_at"))

    result = eventmig("check", "--config", str(pyproject), "--examples", "30")
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "OrderPlaced v1: property 'upcasts' failed" in output
    assert "upcasters.orders.order_total_in_cents failed on OrderPlaced v1: ZeroDivisionError" in output
    assert "chain: OrderPlaced v1 -> OrderPlaced v2 -> OrderPlaced v3 via upcasters.orders.order_total_in_cents" in output
    assert '"total":0.0' in output  # the shrunk example
    assert "check FAILED" in output

    report = as_json(eventmig("check", "--config", str(pyproject), "--examples", "30", "--json"))
    assert not report["ok"]
    failed = [n for n in report["properties"]["nodes"] if n["failures"]]
    assert [(n["type"], n["version"]) for n in failed] == [("OrderPlaced", 1)]
    by_property = {f["property"]: f for f in failed[0]["failures"]}
    assert by_property["upcasts"]["example"]["data"]["total"] == 0.0
    # where it does not crash, the step breaks its declared rule, and the registered example
    assert "its declared rule euros_to_cents(total=" in by_property["rule"]["message"]
    assert "OrderPlaced v3.total_cents: expected 1229, got 8" in "".join(by_property["example"]["details"])


def test_a_step_that_loses_a_required_field_fails_the_check(tmp_path: Path) -> None:
    pyproject = service_copy(tmp_path, ('defaults={"currency": "EUR"})', 'defaults={"currency": "EUR"}, remove=["channel"])'))
    result = eventmig("check", "--config", str(pyproject), "--examples", "20", "--no-store", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    failures = {(n["type"], n["version"]): n["failures"] for n in as_json(result)["properties"]["nodes"] if n["failures"]}
    assert set(failures) == {("OrderPlaced", 1), ("OrderPlaced", 2)}
    at_v2 = {f["property"]: f["message"] for f in failures[("OrderPlaced", 2)]}
    assert "missing required field `channel`" in at_v2["reaches heads"]
    assert "OrderPlaced v3.channel is new and required" in at_v2["declarations"]


def test_a_schema_with_no_strategy_fails_the_check_rather_than_crashing(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "__init__.py").write_text(textwrap.dedent("""
        import msgspec
        from eventmig import Registry
        registry = Registry()

        class Money:  # encoded by the service's own msgspec hooks
            def __init__(self, cents):
                self.cents = cents

        @registry.schema("Paid", 1)
        class PaidV1(msgspec.Struct):
            amount: Money

        @registry.schema("Paid", 2)
        class Paid(msgspec.Struct):
            cents: int

        @registry.upcaster
        def paid_in_cents(e: PaidV1) -> Paid:
            return Paid(e.amount.cents)
    """))
    (tmp_path / "pyproject.toml").write_text('[tool.eventmig]\nupcasters = "svc:registry"\n')
    result = eventmig("check", "--config", str(tmp_path / "pyproject.toml"), "--examples", "5", "--no-store")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Paid v1: property 'generation' failed" in result.stdout
    assert "cannot generate values of svc.Money; use eventmig.testing.strategies.register_strategy" in result.stdout
    assert "unexpected" not in result.stderr


def test_stored_versions_without_a_path_and_failing_stored_events_fail_the_check(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        store.append("order-1", [
            new_event("OrderPlaced", {"order_id": "1", "customer_id": "c", "total_cents": 5, "placed_at": "t",
                                      "channel": "web"}, {"schema_version": 7}),
            new_event("OrderShipped", {"order_id": "1", "carrier": "DHL", "address": "no separators",
                                       "shipped_at": "t"}),
            new_event("OrderCancelled", {"order_id": "1", "reason": "late", "cancelled_at": "t"}),
        ])
        before = store.head_position()

    result = eventmig("check", "--store", sqlite_url, "--examples", "5", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = as_json(result)
    assert report["properties"]["ok"]
    assert report["store"]["uncovered"] == ["OrderPlaced v7"]
    failed = report["store"]["failed"]
    assert [(f["type"], f["stream"], f["stream_version"]) for f in failed] == [
        ("OrderPlaced", "order-1", 1), ("OrderShipped", "order-1", 2)
    ]
    assert "OrderPlaced v7 is newer than the head schema OrderPlaced v3" in failed[0]["reason"]
    assert "does not match OrderShippedV1" in failed[1]["reason"]

    human = eventmig("check", "--store", sqlite_url, "--examples", "5")
    assert human.returncode == 1
    assert "no path to a head: OrderPlaced v7" in human.stdout
    assert "failed: order-1@2" in human.stdout

    with open_store(sqlite_url) as store:  # a dry run: nothing written
        assert store.head_position() == before and len(store.epochs()) == 1


def test_configuration_errors_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "pyproject.toml"
    missing.parent.mkdir()
    missing.write_text('[tool.eventmig]\nupcasters = "no_such_package:registry"\n')
    result = eventmig("check", "--config", str(missing), "--json")
    assert result.returncode == 2
    assert "no_such_package" in as_json(result)["error"]

    gap = tmp_path / "gap"
    (gap / "svc").mkdir(parents=True)
    (gap / "svc" / "__init__.py").write_text(textwrap.dedent("""
        import msgspec
        from eventmig import Registry
        registry = Registry()

        @registry.schema("A", 1)
        class A1(msgspec.Struct):
            x: int

        @registry.schema("A", 3)
        class A3(msgspec.Struct):
            x: int

        registry.fields("A", 1, to_version=3)
    """))
    (gap / "pyproject.toml").write_text('[tool.eventmig]\nupcasters = "svc:registry"\n')
    result = eventmig("check", "--config", str(gap / "pyproject.toml"))
    assert result.returncode == 2
    assert "version gap in A: v2 missing below v3" in result.stderr
