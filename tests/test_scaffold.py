"""``eventmig init --example shop``: the reference service, carried by the package, written anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventmig import scaffold

REPO = Path(__file__).resolve().parent.parent


def eventmig(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_")}
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_packaged_shop_is_the_repositorys_reference_service():
    source = {
        str(path.relative_to(REPO)): path.read_text(encoding="utf-8")
        for package in scaffold.PACKAGES for path in sorted((REPO / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    copy = scaffold.files("shop")
    assert sorted(copy) == sorted(source), "the file lists differ: run `make example-copy`"
    drifted = [name for name in source if copy[name] != source[name]]
    assert not drifted, f"the packaged copy of {drifted} differs from the repository's: run `make example-copy`"


def test_init_example_writes_the_service_and_says_what_it_wrote(tmp_path: Path):
    result = eventmig("init", "--example", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = sorted(scaffold.files("shop"))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.py"))
    assert written == expected
    for name in expected:
        assert f"created {name}" in result.stdout
        assert (tmp_path / name).read_text() == scaffold.files("shop")[name]
    assert "created pyproject.toml [tool.eventmig]" in result.stdout
    assert 'upcasters = "upcasters:registry"' in (tmp_path / "pyproject.toml").read_text()
    # the service it wrote is a valid one: its chains compile, from this folder alone
    plan = eventmig("plan", "--no-store", "--json", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["heads"]["OrderPlaced"] == 3


def test_init_example_never_overwrites(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "svc"\n')
    (tmp_path / "upcasters").mkdir()
    (tmp_path / "upcasters" / "__init__.py").write_text("registry = 'mine'\n")
    result = eventmig("init", "--example", "shop", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert any("upcasters (exists" in k for k in report["skipped"])
    assert (tmp_path / "upcasters" / "__init__.py").read_text() == "registry = 'mine'\n"
    assert not (tmp_path / "upcasters" / "orders.py").exists()  # no example module mixed into the service's
    assert (tmp_path / "projections" / "orders.py").exists()
    assert (tmp_path / "pyproject.toml").read_text().startswith('[project]\nname = "svc"\n\n[tool.eventmig]')
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    again = json.loads(eventmig("init", "--example", "shop", "--json", cwd=tmp_path).stdout)
    assert again["created"] == []
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_an_unknown_example_is_a_usage_error_naming_the_known_ones(tmp_path: Path):
    result = eventmig("init", "--example", "bank", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no example named 'bank'; eventmig has: shop"
    assert list(tmp_path.iterdir()) == []


def test_demo_runs_on_the_written_example_outside_the_repository(tmp_path: Path):
    assert eventmig("init", "--example", "shop", cwd=tmp_path).returncode == 0
    result = eventmig("demo", "--events", "3000", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and [s["step"] for s in report["steps"]][:4] == ["seed", "migrate", "verify", "switch"]
    assert (tmp_path / "eventmig-demo.db").exists()


def test_demo_without_a_service_says_how_to_get_one(tmp_path: Path):
    result = eventmig("demo", "--events", "10", cwd=tmp_path)
    assert result.returncode == 2
    assert "eventmig init --example shop" in result.stderr and len(result.stderr.strip().splitlines()) == 1
