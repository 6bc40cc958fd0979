"""The layers of the package, as the import-linter contracts in pyproject.toml state them.

`make test` runs ``lint-imports`` before the suite; this test states the
contracts' verdict where a bare ``pytest`` run sees it too, and shows that
the contracts can fail: a module of the model that imported a backend would
break them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_layer_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_model_module_importing_a_backend_breaks_the_contracts(tmp_path: Path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "eventmig", copy / "eventmig", ignore=shutil.ignore_patterns("__pycache__", "scaffold"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "eventmig" / "model" / "leak.py"
    bad.write_text("from eventmig.backends.sql import store\n")
    env_path = f"{copy}"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=copy, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "eventmig.model.leak" in result.stdout
