"""Examples of what upcasters must produce: registered, in a file of cases, recorded for review, as test items."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from eventmig import ConfigError, Registry, RegistryError
from eventmig.testing.cases import dump_cases, load_cases, run_example
from eventmig.testing.checks import check_upcasters

REPO = Path(__file__).resolve().parent.parent

SERVICE = '''
from typing import Annotated

import msgspec
from eventmig import Registry

registry = Registry()


def cents(euros):
    return {rule}


@registry.schema("Paid", 1)
class PaidV1(msgspec.Struct):
    order: str
    euros: Annotated[float, msgspec.Meta(ge=0, le=1e9)]


@registry.schema("Paid", 2)
class Paid(msgspec.Struct):
    order: str
    cents: int
    note: str = ""


@registry.upcaster(rename={{"euros": "cents"}}, convert={{"cents": cents}})
def paid_in_cents(e: PaidV1) -> Paid:
    return Paid(e.order, cents(e.euros))


registry.drop("Viewed", 1)
registry.example(PaidV1("o-1", 12.29), becomes=Paid("o-1", 1229))
'''


def service(root: Path, rule: str = "round(euros * 100)", cases: list | None = None) -> Path:
    (root / "payments").mkdir(parents=True)
    (root / "payments" / "__init__.py").write_text(SERVICE.format(rule=rule))
    (root / "pyproject.toml").write_text(
        '[tool.eventmig]\nupcasters = "payments:registry"\ncheck_examples = 10\n\n'
        '[tool.pytest.ini_options]\npythonpath = ["."]\naddopts = "-p no:cacheprovider"\n'
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_payments.py").write_text(
        "from eventmig.testing.suite import upcaster_tests\n\ntest_upcasters = upcaster_tests()\n"
    )
    if cases is not None:
        (root / "upcaster-cases.json").write_text(json.dumps({"cases": cases}))
    return root


def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_") and k != "PYTEST_ADDOPTS"}
    return {**e, "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / ".hypothesis")}


def run(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(tmp_path), capture_output=True, text=True,
                          timeout=300, check=False)


def registry(rule=lambda euros: round(euros * 100)) -> tuple[Registry, type, type]:
    r = Registry()

    @r.schema("Paid", 1)
    class PaidV1(msgspec.Struct):
        order: str
        euros: float

    @r.schema("Paid", 2)
    class Paid(msgspec.Struct):
        order: str
        cents: int
        note: str = ""

    @r.upcaster(rename={"euros": "cents"}, convert={"cents": rule})
    def paid_in_cents(e: PaidV1) -> Paid:
        return Paid(e.order, rule(e.euros))

    return r, PaidV1, Paid


def test_a_registered_example_is_run_by_the_check_and_a_wrong_value_shows_its_diff() -> None:
    r, PaidV1, Paid = registry(lambda euros: int(euros * 100))  # truncates: 0.29 euros are 28 cents
    example = r.example(PaidV1("o-1", 0.29), becomes=Paid("o-1", 29), name="twenty-nine cents")
    assert example.origin.endswith(f"test_upcaster_examples.py:{sys._getframe().f_lineno - 1}")
    report = check_upcasters(r, examples=5)
    failure = next(f for n, f in report.failures if f.property == "example")
    assert failure.message.startswith("example 'twenty-nine cents' (")
    assert failure.message.endswith("): Paid v1 does not become what it should")
    assert failure.details == ["  output 1 Paid v2.cents: expected 29, got 28"]
    assert failure.example == {"name": "twenty-nine cents", "type": "Paid", "version": 1,
                               "data": {"order": "o-1", "euros": 0.29}}
    assert next(n for n in report.nodes if n.name == "Paid v1").cases == 1
    assert "expected 29, got 28" in report.format()


def test_outputs_compare_as_the_json_written_with_left_out_defaults_filled_in() -> None:
    r, PaidV1, Paid = registry()
    compiled = r.compile()
    as_tuple = r.example(("Paid", 1, {"order": "o", "euros": 1.0}), becomes=("Paid", 2, {"order": "o", "cents": 100}))
    as_struct = r.example(PaidV1("o", 1.0), becomes=[Paid("o", 100, note="")])
    assert run_example(compiled, as_tuple) is None and run_example(compiled, as_struct) is None
    wrong_type = r.example(PaidV1("o", 1.0), becomes=("Paid", 2, {"order": "o", "cents": 100.0}))
    assert run_example(compiled, wrong_type)[1] == ["  output 1 Paid v2.cents: expected 100.0, got 100"]
    missing = r.example(PaidV1("o", 1.0), becomes=[Paid("o", 100), Paid("o", 1)])
    assert run_example(compiled, missing)[1] == ['- output 2: Paid v2 {"order":"o","cents":1,"note":""} is missing']
    dropped = r.example(PaidV1("o", 1.0), becomes=[])
    assert run_example(compiled, dropped)[1] == ['+ output 1: Paid v2 {"cents":100,"note":"","order":"o"} was not expected']
    other = r.example(PaidV1("o", 1.0), becomes=("Refund", 1, {"order": "o"}))
    assert run_example(compiled, other)[1][0] == '  output 1: expected Refund v1 {"order":"o"}'


def test_an_example_of_something_unregistered_is_a_registry_error() -> None:
    r, _, _ = registry()

    class Stray(msgspec.Struct):
        x: int

    with pytest.raises(RegistryError, match="example: given is a .*Stray, not a registered schema"):
        r.example(Stray(1), becomes=[])
    with pytest.raises(RegistryError, match=r"must be a schema Struct instance or \(type, version, data\)"):
        r.example({"x": 1}, becomes=[])


def test_a_cases_file_round_trips_and_a_broken_one_is_a_configuration_error(tmp_path: Path) -> None:
    r, PaidV1, Paid = registry()
    r.example(PaidV1("o", -0.0), becomes=Paid("o", 0), name="negative zero")
    path = tmp_path / "upcaster-cases.json"
    path.write_bytes(dump_cases(r.examples))
    loaded = load_cases(path)
    assert [(e.name, e.type, e.version, e.becomes) for e in loaded] == [
        ("negative zero", "Paid", 1, (("Paid", 2, {"order": "o", "cents": 0, "note": ""}),))
    ]
    assert msgspec.json.encode(loaded[0].data) == b'{"order":"o","euros":-0.0}'
    assert loaded[0].origin == "upcaster-cases.json #1"
    path.write_text('{"cases": [{"name": "x", "given": {"type": "Paid", "version": 0, "data": {}}, "becomes": []}]}')
    with pytest.raises(ConfigError, match=r"upcaster-cases.json is not a file of upcaster cases: Expected `int` >= 1"):
        load_cases(path)


def test_check_runs_the_cases_file_and_fails_with_the_diff(tmp_path: Path) -> None:
    case = {"name": "a refund", "given": {"type": "Paid", "version": 1, "data": {"order": "o", "euros": 0.29}},
            "becomes": [{"type": "Paid", "version": 2, "data": {"order": "o", "cents": 29}}]}
    root = service(tmp_path / "svc", rule="int(euros * 100)", cases=[case])
    result = run(["-m", "eventmig", "check", "--no-store"], root, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "example 'a refund' (upcaster-cases.json #1): Paid v1 does not become what it should" in result.stdout
    assert "output 1 Paid v2.cents: expected 29, got 28" in result.stdout
    assert "check FAILED" in result.stdout

    (root / "upcaster-cases.json").write_text("{not json")
    broken = run(["-m", "eventmig", "check", "--no-store"], root, tmp_path)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert broken.stderr.startswith("error: ") and "upcaster-cases.json is not a file of upcaster cases" in broken.stderr


def test_record_shows_the_cases_for_review_and_only_accept_makes_them_count(tmp_path: Path) -> None:
    root = service(tmp_path / "svc")
    recorded = run(["-m", "eventmig", "check", "--record", "--no-store"], root, tmp_path)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert "recorded Paid v1 recorded 1" in recorded.stdout
    assert 'given   Paid v1 {"order":"order 1","euros":0.0}' in recorded.stdout
    assert 'becomes Paid v2 {"cents":0,"note":"","order":"order 1"}' in recorded.stdout
    assert "written to" in recorded.stdout and "review them, then eventmig check --accept" in recorded.stdout
    pending = root / "upcaster-cases.json.new"
    assert pending.exists() and not (root / "upcaster-cases.json").exists()
    assert "Viewed" not in pending.read_text()  # a drop without a schema has nothing to record

    waiting = run(["-m", "eventmig", "check", "--no-store", "--json"], root, tmp_path)
    report = json.loads(waiting.stdout)
    assert report["ok"] and "recorded cases await review" in report["pending_cases"]
    assert sum(n["cases"] for n in report["properties"]["nodes"]) == 1  # the registered example only

    both = run(["-m", "eventmig", "check", "--record", "--accept"], root, tmp_path)
    assert both.returncode == 2 and "two steps" in both.stderr

    accepted = run(["-m", "eventmig", "check", "--accept", "--no-store", "--json"], root, tmp_path)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert not pending.exists()
    cases = load_cases(root / "upcaster-cases.json")
    assert len(cases) == 3 and all(c.type == "Paid" for c in cases)
    assert sum(n["cases"] for n in json.loads(accepted.stdout)["properties"]["nodes"]) == 4

    again = run(["-m", "eventmig", "check", "--record", "--no-store"], root, tmp_path)
    assert "nothing new to record" in again.stdout and not pending.exists()
    nothing = run(["-m", "eventmig", "check", "--accept"], root, tmp_path)
    assert nothing.returncode == 2 and "nothing to accept" in nothing.stderr

    # a step changed since: the recorded cases catch it
    (root / "payments" / "__init__.py").write_text(SERVICE.format(rule="round(euros * 10)"))
    changed = run(["-m", "eventmig", "check", "--no-store"], root, tmp_path)
    assert changed.returncode == 1 and "Paid v1 recorded" in changed.stdout


def test_record_takes_stored_events_when_the_store_has_some(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    shutil.copytree(REPO / "upcasters", root / "upcasters", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pyproject.toml").write_text('[tool.eventmig]\nupcasters = "upcasters:registry"\nstore = "sqlite:///shop.db"\n')
    seeded = run(["-m", "eventmig", "demo", "--seed-only", "--events", "300", "--store", "sqlite:///shop.db", "--json"],
                 root, tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    recorded = run(["-m", "eventmig", "check", "--record", "--json"], root, tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    report = json.loads(recorded.stdout)
    assert report["source"] == "store" and report["recorded"]
    names = [c["name"] for c in report["recorded"]]
    assert all(" from " in n and "@" in n for n in names), names
    assert {c["type"] for c in report["recorded"]} >= {"OrderPlaced", "ItemAdded", "OrderShipped"}


FAILING_PROJECT_TEST = '''
from eventmig.testing.suite import upcaster_tests

test_upcasters = upcaster_tests()
'''


def test_the_plugin_collects_each_example_and_schema_as_an_item_with_a_readable_failure(tmp_path: Path) -> None:
    root = service(tmp_path / "svc")
    module = root / "payments" / "__init__.py"
    module.write_text(module.read_text().replace("Paid(e.order, cents(e.euros))", "Paid(e.order, int(e.euros * 100))"))
    result = run(["-m", "pytest", "-v", "-p", "no:cacheprovider"], root, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "tests/test_payments.py::test_upcasters::example Paid v1 #1 PASSED" in out  # 12.29 * 100 is 1229.0
    assert "tests/test_payments.py::test_upcasters::Paid v1 FAILED" in out
    assert "tests/test_payments.py::test_upcasters::Paid v2 PASSED" in out
    assert "tests/test_payments.py::test_upcasters::Viewed v1 PASSED" in out
    assert "Paid v1: property 'rule' failed" in out
    assert "payments.paid_in_cents: Paid v2.cents is 28, but its declared rule cents(euros=0.29) gives 29" in out
    assert "minimal example:" in out and "Traceback" not in out

    selected = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "example"], root, tmp_path)
    assert selected.returncode == 0 and "1 passed" in selected.stdout, selected.stdout


def test_a_registry_that_does_not_load_is_a_collection_error_in_one_line(tmp_path: Path) -> None:
    root = service(tmp_path / "svc")
    (root / "pyproject.toml").write_text('[tool.eventmig]\nupcasters = "nowhere:registry"\n')
    result = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], root, tmp_path)
    assert result.returncode == 2, result.stdout
    assert "eventmig: upcasters module 'nowhere' not found" in result.stdout


def test_items_agree_with_the_check_whatever_hypothesis_profile_the_project_loads(tmp_path: Path) -> None:
    """A bug only generation finds (no boundary value is two characters long): the project's own
    profile of one example must not hide it from the items when the check finds it."""
    root = service(tmp_path / "svc")
    text = (root / "payments" / "__init__.py").read_text()
    (root / "payments" / "__init__.py").write_text(text.replace(
        "return Paid(e.order, cents(e.euros))", "return Paid(e.order if len(e.order) != 2 else '', cents(e.euros))",
    ))
    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text().replace("check_examples = 10", ""))
    (root / "tests" / "conftest.py").write_text(textwrap.dedent("""
        from hypothesis import settings
        settings.register_profile("tiny", max_examples=1, derandomize=False)
        settings.load_profile("tiny")
    """))
    check = run(["-m", "eventmig", "check", "--no-store", "--json"], root, tmp_path)
    failing = {(n["type"], n["version"]) for n in json.loads(check.stdout)["properties"]["nodes"] if n["failures"]}
    items = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=1"], root, tmp_path)
    failed_items = {line.split("::")[-1].split(" - ")[0] for line in items.stdout.splitlines() if line.startswith("FAILED")}
    assert failing == {("Paid", 1)}, check.stdout
    assert failed_items == {"Paid v1"}, items.stdout
