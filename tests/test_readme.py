"""The README's examples run as a reader would copy them, and print what the README says they print.

A code block preceded by ``<!-- tested: NAME -->`` is part of example NAME;
an example's blocks run in order, as one script, in an empty directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
_MARKED = re.compile(r"<!-- tested: ([\w-]+) -->\n```python\n(.*?)```", re.S)


def examples() -> dict[str, str]:
    found: dict[str, str] = {}
    for name, code in _MARKED.findall(README):
        found[name] = found.get(name, "") + code
    return found


def run(name: str, directory: Path) -> str:
    script = directory / f"{name}.py"
    script.write_text(examples()[name])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    result = subprocess.run([sys.executable, script.name], cwd=directory, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def shown(line: str) -> str:
    """A line of output as the README shows it, and checks it does."""
    assert line in README, f"the README does not show {line!r}"
    return line


def test_the_examples_are_marked():
    assert sorted(examples()) == ["appending", "snapshots"]


def test_appending_events_from_service_code(tmp_path: Path):
    out = run("appending", tmp_path).splitlines()
    assert out == [
        shown("concurrency conflict on stream 'order-1': expected version 1, the stream is at version 2"),
        "1 OrderPlaced {'currency': 'EUR', 'order_id': 'o-1', 'total_cents': 1250}",
        "2 LineItemAdded {'order_id': 'o-1', 'quantity': 2, 'sku': 'beans-1kg'}",
    ]
    from eventmig.backends import open_store

    with open_store(f"sqlite:///{tmp_path}/shop.db") as store:  # the conflicting append wrote nothing
        assert [e.decoded_metadata() for e in store.read_stream("order-1")] == [{"schema_version": 3}, {}]


def test_snapshots_registered_rebuilt_and_loaded(tmp_path: Path):
    out = run("snapshots", tmp_path).splitlines()
    assert out == [shown("2 Order(order_id='o-1', total_cents=1250, items=2) ['LineItemAdded']")]


@pytest.mark.parametrize("name", ["appending", "snapshots"])
def test_the_examples_use_the_public_names(name: str):
    """What the examples import is what eventmig documents: no private module or name."""
    for module, names in re.findall(r"^from (eventmig[\w.]*) import (.+)$", examples()[name], re.M):
        assert not any(part.startswith("_") for part in module.split(".")), module
        assert not any(n.strip().startswith("_") for n in names.split(",")), names


# ------------------------------------------------------------------ exit codes
def exit_code_table() -> dict[int, str]:
    section = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M)}


def eventmig(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.run([sys.executable, "-m", "eventmig", *args, "--store", store], cwd=REPO,
                          env={**env, "EVENTMIG_STORE": store}, capture_output=True, text=True, timeout=120)


def test_the_exit_code_table_is_every_code_the_command_uses():
    from eventmig.errors import ExitCode

    assert sorted(exit_code_table()) == sorted(int(code) for code in ExitCode)
    assert "interrupted" in exit_code_table()[130]


def test_each_exit_code_means_what_the_table_says(sqlite_url: str):
    """One case of each code in a row of the table (130: tests/test_interrupts.py)."""
    from eventmig import new_event
    from eventmig.backends import open_store

    table = exit_code_table()
    with open_store(sqlite_url) as store:
        store.append("order-1", [new_event("OrderPlaced", {"order_id": "1"}, {"schema_version": 7})])
    unreachable = "postgresql+psycopg://u@127.0.0.1:1/db"  # nothing listens on port 1
    cases = [
        (0, ("status",), sqlite_url, "success"),
        (1, ("plan",), sqlite_url, "no path to a head"),
        (2, ("migrate", "--batch-size", "0"), sqlite_url, "an option out of range"),
        (3, ("status",), unreachable, "the store unreachable"),
    ]
    for code, args, store, meaning in cases:
        assert meaning in table[code]
        assert eventmig(*args, store=store).returncode == code, args
    with open_store(sqlite_url) as store, store.lock("migrate"):
        assert "busy" in table[4] and eventmig("migrate", store=sqlite_url).returncode == 4
