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
from eventmig.migrate import MAX_BATCH_SIZE
from eventmig.parallel import MAX_WORKERS

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
TEXT_SETTINGS = ["store", "read_models", "upcasters", "projections", "events_table", "version_key"]
COUNT_SETTINGS = {"batch_size": MAX_BATCH_SIZE, "workers": MAX_WORKERS}


def wrong_for(key: str) -> st.SearchStrategy[Any]:
    if key in COUNT_SETTINGS:
        return toml_values.filter(lambda v: type(v) is not int or not 1 <= v <= COUNT_SETTINGS[key])
    return toml_values.filter(lambda v: not isinstance(v, str))


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
