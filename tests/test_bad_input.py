"""Bad input gets one line, a documented exit code and nothing written: settings, numbers, URLs, drivers.

The settings are tested two ways: every wrong-typed value hypothesis finds,
for every setting, through ``load_settings`` (a file written and read back);
and a few of them end to end, as the ``eventmig`` command reports them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from eventmig.config import Settings, load_settings
from eventmig.errors import ConfigError

#: the ranges the README documents (test_the_documented_ranges_are_the_code_s holds them to the code)
MAX_BATCH_SIZE = 1_000_000
MAX_WORKERS = 64
MAX_CHECK_EXAMPLES = 1_000_000
MAX_REBUILD_BATCH_SIZE = 100_000_000

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env={**environment, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The error a failed command printed: one line on stderr, nothing on stdout, the exit code expected."""
    assert result.returncode == code, result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not result.stdout
    return lines[0]


# ------------------------------------------------------------------ settings
def toml_value(value: Any) -> str:
    """``value`` written as TOML (the values the strategies below make)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


scalars = st.one_of(
    st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(allow_nan=True),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10),
    st.datetimes(), st.dates(), st.times(),
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner,
                                                                 max_size=3),
    max_leaves=6,
)
TEXT_SETTINGS = ["store", "read_models", "upcasters", "projections", "events_table", "version_key", "cases"]
COUNT_SETTINGS = {
    "batch_size": MAX_BATCH_SIZE,
    "rebuild_batch_size": MAX_REBUILD_BATCH_SIZE,
    "workers": MAX_WORKERS,
    "check_examples": MAX_CHECK_EXAMPLES,
}


def wrong_for(key: str) -> st.SearchStrategy[Any]:
    if key in COUNT_SETTINGS:
        return toml_values.filter(lambda v: type(v) is not int or not 1 <= v <= COUNT_SETTINGS[key])
    return toml_values.filter(lambda v: not isinstance(v, str))


def test_the_documented_ranges_are_the_code_s():
    from eventmig.jobs import migrate, parallel

    assert (migrate.MAX_BATCH_SIZE, parallel.MAX_WORKERS) == (MAX_BATCH_SIZE, MAX_WORKERS)


def test_the_settings_under_test_are_all_there_are():
    assert set(TEXT_SETTINGS) | set(COUNT_SETTINGS) == {f.name for f in fields(Settings)} - {"root", "config_file"}


@pytest.mark.parametrize("key", TEXT_SETTINGS + list(COUNT_SETTINGS))
def test_a_wrong_typed_setting_is_a_configuration_error_naming_it(key: str, tmp_path_factory: pytest.TempPathFactory,
                                                                    monkeypatch: pytest.MonkeyPatch):
    for var in ("EVENTMIG_STORE", "EVENTMIG_CONFIG", "EVENTMIG_UPCASTERS", "EVENTMIG_READ_MODELS", "EVENTMIG_PROJECTIONS"):
        monkeypatch.delenv(var, raising=False)
    directory = tmp_path_factory.mktemp(key)

    @hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(value=wrong_for(key))
    def check(value: Any) -> None:
        config = directory / "pyproject.toml"
        config.write_text(f"[tool.eventmig]\n{key} = {toml_value(value)}\n")
        with pytest.raises(ConfigError) as raised:
            load_settings(config)
        message = str(raised.value)
        assert f"setting {key} must be" in message and "\n" not in message and len(message) < 300

    check()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tool]\neventmig = 5", "tool.eventmig must be a table"),
        ("[tool]\neventmig = \"sqlite:///x.db\"", "tool.eventmig must be a table"),
        ("tool = 5", "tool must be a table"),
        ("tool = [1, 2]", "tool must be a table"),
        ("[tool.eventmig]\nstore = 5", "setting store must be a string, got 5"),
        ("[tool.eventmig]\nstore = {url = \"sqlite:///x.db\"}", "setting store must be a string, got {'url'"),
        ("[tool.eventmig]\nupcasters = [\"svc:registry\"]", "setting upcasters must be a string"),
        ("[tool.eventmig]\nworkers = \"x\"", "setting workers must be an integer from 1 to 64, got 'x'"),
        ("[tool.eventmig]\nworkers = 100000000", "setting workers must be an integer from 1 to 64, got 100000000"),
        ("[tool.eventmig]\nbatch_size = true", "setting batch_size must be an integer from 1 to 1,000,000, got True"),
        ("[tool.eventmig]\nbatch_size = 1e20", "setting batch_size must be an integer from 1 to 1,000,000, got 1e+20"),
        ("[tool.eventmig]\nbatch_size = -1", "setting batch_size must be an integer from 1 to 1,000,000, got -1"),
        ("[tool.eventmig]\nevents_table = 2024-01-01", "setting events_table must be a string"),
    ],
)
def test_bad_configuration_files_exit_2_in_one_line_naming_the_key(tmp_path: Path, toml: str, message: str):
    (tmp_path / "pyproject.toml").write_text(toml + "\n")
    error = one_line_error(eventmig("migrate", cwd=tmp_path))
    assert message in error and "unexpected" not in error
    as_json = eventmig("status", "--json", cwd=tmp_path)
    assert as_json.returncode == 2 and message in json.loads(as_json.stdout)["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]  # nothing written


def test_a_configuration_file_that_is_not_text_is_a_configuration_error(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_bytes(b"\xff\xfe[tool.eventmig]\n")
    assert "invalid TOML" in one_line_error(eventmig("status", "--config", str(tmp_path / "pyproject.toml")))


# ------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("migrate", "--batch-size", "1e20"), "--batch-size"),
        (("migrate", "--batch-size", "100000000000000000000"), "--batch-size"),
        (("migrate", "--batch-size", str(MAX_BATCH_SIZE + 1)), "--batch-size"),
        (("migrate", "--batch-size", "0"), "--batch-size"),
        (("verify", "--batch-size", "-5"), "--batch-size"),
        (("switch", "--batch-size", "1e20"), "--batch-size"),
        (("rebuild", "--batch-size", "100000000000000000000"), "--batch-size"),
        (("rebuild", "--batch-size", "-1"), "--batch-size"),
        (("switch", "--attempts", "0"), "--attempts"),
        (("switch", "--attempts", "1000000"), "--attempts"),
        (("check", "--examples", "0"), "--examples"),
        (("check", "--examples", "1e9"), "--examples"),
        (("check", "--sample", "-1"), "--sample"),
        (("check", "--sample", "100000000000000000000"), "--sample"),
        (("quarantine", "--accept", "--id", "100000000000000000000"), "--id"),
        (("quarantine", "--accept", "--id", "0"), "--id"),
        (("demo", "--events", "-1"), "--events"),
        (("demo", "--events", "100000000000000000000"), "--events"),
    ],
)
def test_numbers_out_of_range_exit_2_in_one_line(tmp_path: Path, args: tuple[str, ...], option: str):
    store = f"sqlite:///{tmp_path}/events.db"
    error = one_line_error(eventmig(*args, "--store", store, cwd=REPO))
    assert option in error and "Overflow" not in error and "unexpected" not in error
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened
    if args[0] == "migrate":
        as_json = eventmig(*args, "--store", store, "--json")
        assert as_json.returncode == 2 and option in json.loads(as_json.stdout)["error"]


# ------------------------------------------------------------ URLs and passwords
#: passwords as people have them: URL delimiters, a space, quotes; their pieces of three characters appear
#: nowhere else in what eventmig prints
NASTY_PASSWORDS = ["a@b:S3cRq7", "Kq7@zP:/x#Wm?", "Yv%4Lr@@Tn", "Hd9 Jw@Qe:Uo", "Rb!$&'()*+,;=Gx", 'Mf"Nq\\Zc@:']
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1


def pieces(password: str) -> set[str]:
    return {password[i:i + 3] for i in range(len(password) - 2)}


def assert_no_piece_of(password: str, result: subprocess.CompletedProcess[str]) -> None:
    shown = result.stdout + result.stderr
    leaked = sorted(p for p in pieces(password) if p in shown)
    assert not leaked, f"{leaked} of the password in: {shown}"


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
def test_no_piece_of_a_password_is_ever_printed(password: str, tmp_path: Path):
    from urllib.parse import quote

    from eventmig.backends import open_store

    open_store(f"sqlite:///{tmp_path}/s.db").close()  # an event store, to rebuild into read models elsewhere
    written_raw = f"postgresql+psycopg://admin:{password}@{UNREACHABLE}/db"
    written_encoded = f"postgresql+psycopg://admin:{quote(password, safe='')}@{UNREACHABLE}/db"
    runs = [
        eventmig("status", "--store", written_raw),
        eventmig("migrate", "--json", "--store", written_raw, env={"EVENTMIG_DEBUG": "1"}),
        eventmig("plan", env={"EVENTMIG_STORE": written_raw}),
        eventmig("status", "--store", written_encoded),
        eventmig("rebuild", "--json", "--store", f"sqlite:///{tmp_path}/s.db", "--read-models", written_encoded),
    ]
    assert runs[4].returncode == 3 and "cannot connect" in runs[4].stdout, runs[4].stdout
    for result in runs:
        assert result.returncode in (2, 3), result.stderr + result.stdout
        assert "Traceback" not in result.stderr and "unexpected" not in result.stderr + result.stdout
        assert_no_piece_of(password, result)
    # a password holding an '@' written as it is cannot be told from the host: refused, saying how to write it
    if "@" in password:
        assert runs[0].returncode == 2 and "%40" in runs[0].stderr, runs[0].stderr
    assert runs[3].returncode == 3 and "cannot connect to postgresql+psycopg://admin:***@127.0.0.1:1/db" in runs[3].stderr


@pytest.mark.parametrize("password", NASTY_PASSWORDS[:3])
def test_a_password_works_and_is_never_shown_on_a_real_server(password: str, postgres_url: str):
    import sqlalchemy as sa

    url = sa.engine.make_url(postgres_url).set(password=password).render_as_string(hide_password=False)
    seeded = eventmig("demo", "--seed-only", "--events", "50", "--store", url, "--json")
    assert seeded.returncode == 0, seeded.stderr
    assert_no_piece_of(password, seeded)
    status = eventmig("status", "--store", url)
    assert status.returncode == 0, status.stderr
    assert "postgres:***@" in status.stdout
    assert_no_piece_of(password, status)


# ------------------------------------------------------------ missing driver
BLOCK_PSYCOPG = "import sys\nsys.modules['psycopg'] = None  # as if eventmig[postgres] were not installed\n"


def test_a_missing_driver_says_which_extra_to_install(tmp_path: Path):
    from eventmig.backends import open_store

    (tmp_path / "sitecustomize.py").write_text(BLOCK_PSYCOPG)
    without_driver = {"PYTHONPATH": str(tmp_path)}
    open_store(f"sqlite:///{tmp_path}/s.db").close()
    url = f"postgresql+psycopg://admin@{UNREACHABLE}/db"
    for args in (("status", "--store", url), ("plan", "--store", url.replace("+psycopg", "")),
                 ("rebuild", "--store", f"sqlite:///{tmp_path}/s.db", "--read-models", url)):
        error = one_line_error(eventmig(*args, env=without_driver))
        assert "psycopg driver, which is not installed: pip install 'eventmig[postgres]'" in error, error
    as_json = eventmig("status", "--json", "--store", url, env=without_driver)
    assert as_json.returncode == 2 and "eventmig[postgres]" in json.loads(as_json.stdout)["error"]
    # with the driver, the same command gets as far as the server
    assert "cannot connect" in one_line_error(eventmig("status", "--store", url), code=3)


# ------------------------------------------------------------ unreadable versions
def stored_with_bad_metadata(url: str) -> None:
    """One good OrderPlaced v1, and one of each way its metadata can make the version unreadable."""
    from eventmig import new_event
    from eventmig.backends import open_store

    payload = {"order_id": "1", "customer_id": "c", "total": 2.5, "placed_at": "t", "channel": "web"}
    with open_store(url) as store:
        store.append("order-good", [new_event("OrderPlaced", payload, {"schema_version": 1})])
        for stream, version in (("order-word", "two"), ("order-float", 1.5), ("order-zero", 0), ("order-bool", True)):
            store.append(stream, [new_event("OrderPlaced", payload, {"schema_version": version})])
        store.append("order-array", [new_event("OrderPlaced", payload)])
        store.append("order-garbled", [new_event("OrderPlaced", payload)])
        with store.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql("UPDATE events SET metadata = ? WHERE stream = 'order-array'", (b"[1, 2]",))
            conn.exec_driver_sql("UPDATE events SET metadata = ? WHERE stream = 'order-garbled'", (b"{not json",))


def test_an_unreadable_schema_version_is_shown_as_unreadable_with_its_reason(sqlite_url: str):
    stored_with_bad_metadata(sqlite_url)
    plan = eventmig("plan", "--json", "--store", sqlite_url)
    assert plan.returncode == 1, plan.stderr
    report = json.loads(plan.stdout)
    assert not report["ok"] and report["uncovered"] == []
    pairs = report["stored"]
    assert all(p["version"] != 0 for p in pairs)
    assert [(p["version"], p["events"], p["treatment"]) for p in pairs if p["version"] is not None] == [(1, 1, "upcast")]
    unreadable = {p["detail"]: p["events"] for p in pairs if p["treatment"] == "unreadable"}
    assert all(p["version"] is None for p in pairs if p["treatment"] == "unreadable")
    assert sum(unreadable.values()) == 6
    details = " | ".join(unreadable)
    for reason in ("metadata 'schema_version' must be an int >= 1, got 'two'", "metadata is an array, not a JSON object",
                   "metadata is not valid JSON", "the first at order-garbled@1"):
        assert reason in details, details

    human = eventmig("plan", "--store", sqlite_url)
    assert human.returncode == 1
    assert "schema version unreadable (migrate quarantines them): 6 OrderPlaced" in human.stderr
    rows = [line for line in human.stdout.splitlines() if line.startswith("│ OrderPlaced")]
    assert rows and not any("│ 0 " in line for line in rows) and sum("unreadable" in line for line in rows) == 3

    check = eventmig("check", "--json", "--examples", "2", "--sample", "0", "--store", sqlite_url)
    assert check.returncode == 1, check.stderr  # even with nothing sampled
    assert [p for p in json.loads(check.stdout)["store"]["stored"] if p["treatment"] == "unreadable"] == [
        p for p in pairs if p["treatment"] == "unreadable"]

    # migrate leaves behind exactly the events plan calls unreadable
    migrated = json.loads(eventmig("migrate", "--json", "--store", sqlite_url).stdout)
    assert migrated["quarantined"] == 6 and migrated["events_written"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
stored_metadata = st.one_of(
    st.dictionaries(st.just("schema_version"), json_values, max_size=1).map(lambda m: json.dumps(m).encode()),
    json_values.map(lambda m: json.dumps(m).encode()),
    st.binary(max_size=8),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(metadata=stored_metadata)
def test_plan_calls_unreadable_exactly_what_migrate_quarantines_as_such(metadata: bytes):
    from eventmig import Registry
    from eventmig.command import StoredCounts
    from eventmig.model.transform import Transformer

    compiled = Registry().compile()  # every type is unknown: only the metadata can stop an event
    row = ("s-1", 1, 1, "e-1", "Anything", b"{}", metadata, 0)
    counts = StoredCounts(compiled)
    group = counts.add(row)
    failures = Transformer(compiled).prepare([row]).failures
    assert (row[4], group[1]) in (counts.unreadable if failures else counts.versions)
    assert isinstance(group[1], str) == bool(failures)
    assert all(v >= 1 for _t, v in counts.versions)  # never a "version 0"
