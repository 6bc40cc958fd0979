"""As a new user gets eventmig: the wheel, a fresh virtual environment, an empty folder.

Builds the wheel from a copy of the source, installs ``eventmig[postgres]``
from it into a new virtual environment (no system packages, so every
dependency comes from the registry as a user's would), and in an empty
folder runs ``eventmig init --example shop`` and ``eventmig demo``: on
SQLite, and on PostgreSQL through the extra. About a minute, most of it
pip; it runs first in the suite (see conftest.py) so that it overlaps the
rest, and ``-m "not wheel"`` leaves it out while developing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eventmig

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.wheel


def _run(*args: str | Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # nothing of this checkout may leak in: no EVENTMIG_* settings, no PYTHONPATH
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(into: Path) -> Path:
    """The wheel, built from a copy of what a checkout holds (the build leaves egg-info and build/ behind)."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "eventmig", source / "eventmig", ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", into / "dist", source, cwd=into)
    (wheel,) = (into / "dist").glob("eventmig-*.whl")
    return wheel


def test_the_wheel_installs_and_runs_the_demo_in_an_empty_folder(tmp_path: Path, postgres_url: str):
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith(f"eventmig-{eventmig.__version__}-")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "--quiet", f"{wheel}[postgres]", cwd=tmp_path)
    cli = venv / "bin" / "eventmig"

    folder = tmp_path / "service"
    folder.mkdir()
    where = _run(venv / "bin" / "python", "-c", "import eventmig; print(eventmig.__file__)", cwd=folder).stdout
    assert where.startswith(str(venv)), where  # the installed wheel, not this checkout
    assert _run(cli, "--version", cwd=folder).stdout.strip() == f"eventmig {eventmig.__version__}"

    init = _run(cli, "init", "--example", "shop", cwd=folder)
    assert "created upcasters/orders.py" in init.stdout and "created projections/orders.py" in init.stdout
    demo = json.loads(_run(cli, "demo", "--events", "20000", "--json", cwd=folder).stdout)
    assert demo["ok"], demo
    assert [s["step"] for s in demo["steps"]] == [
        "seed", "migrate", "verify", "switch", "rebuild", "verify read models", "swap"]
    assert (folder / "eventmig-demo.db").exists()

    # the postgres extra: psycopg came with it, and the same demo runs on a server
    on_postgres = json.loads(_run(cli, "demo", "--events", "2000", "--store", postgres_url, "--json", cwd=folder).stdout)
    assert on_postgres["ok"], on_postgres
    assert _run(venv / "bin" / "python", "-m", "eventmig", "status", "--store", postgres_url, cwd=folder).stdout
