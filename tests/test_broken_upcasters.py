"""Every deliberately broken copy of the example's steps is caught, the same way by every entry point.

For each :data:`~broken_upcasters.BREAKAGES` (a plausible bug in one edit of
examples/testing-upcasters), the library call (``check_upcasters``), the
CLI (``eventmig check``) and the example's own pytest suite (the plugin's
items) must all fail, on the same (type, version)s and examples, with the
properties the breakage names among the reasons; the unbroken copy must
pass all three.

They run with 25 generated events per schema rather than the default 100:
the boundary values, the laws and the examples catch every breakage on
their own, not by the luck of a large budget (and the suite stays fast).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from broken_upcasters import BREAKAGES, Breakage, broken_copy
from eventmig.testing.checks import RegistryReport, check_upcasters

EXAMPLES = 25


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTMIG_") and k not in ("PYTEST_ADDOPTS", "CI")}
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(tmp_path / ".hypothesis")
    return env


def library_verdict(copy: Path, name: str) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """check_upcasters on the copy's registry, imported in this process under a name of its own."""
    spec = importlib.util.spec_from_file_location(name, copy / "upcasters" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        report = check_upcasters(module.registry, examples=EXAMPLES, cases=copy / "upcaster-cases.json")
    finally:
        del sys.modules[name]
    return verdict(msgspec_builtins(report))


def msgspec_builtins(report: RegistryReport) -> dict:
    import msgspec

    return msgspec.to_builtins(report)


def verdict(properties: dict) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """(nodes failing a property other than an example, examples failing, (node, property) pairs)."""
    nodes, examples, pairs = set(), set(), set()
    for node in properties["nodes"]:
        name = f"{node['type']} v{node['version']}"
        for failure in node["failures"]:
            pairs.add((name, failure["property"]))
            if failure["property"] == "example":
                examples.add(failure["example"]["name"])
            else:
                nodes.add(name)
    return nodes, examples, pairs


def cli_verdict(copy: Path, tmp_path: Path) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    result = subprocess.run(
        [sys.executable, "-m", "eventmig", "check", "--no-store", "--json", "--config", str(copy / "pyproject.toml")],
        cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 1), result.stdout + result.stderr
    return verdict(report["properties"])


def pytest_verdict(copy: Path, tmp_path: Path) -> tuple[int, set[str], set[str], str]:
    """The example's own test suite: its exit code, and the failed items of ``test_upcasters``."""
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=copy, env=clean_env(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    nodes, examples = set(), set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        name = case.get("name", "")
        if failed and case.get("classname", "").endswith("test_upcasters.test_upcasters"):
            if name.startswith("example "):
                examples.add(name.removeprefix("example "))
            else:
                nodes.add(name)
    return result.returncode, nodes, examples, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", [None, *BREAKAGES], ids=lambda b: b.id if b else "unbroken")
def test_every_entry_point_catches_the_breakage_alike(breakage: Breakage | None, tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, breakage, examples=EXAMPLES)
    name = f"accounts_{breakage.id.replace('-', '_') if breakage else 'unbroken'}"

    library_nodes, library_examples, pairs = library_verdict(copy, name)
    cli_nodes, cli_examples, cli_pairs = cli_verdict(copy, tmp_path)
    code, pytest_nodes, pytest_examples, output = pytest_verdict(copy, tmp_path)

    if breakage is None:  # no false alarm anywhere
        assert not pairs and not cli_pairs, pairs | cli_pairs
        assert code == 0, output
        return
    assert pairs, f"the library call missed {breakage.id}"
    assert breakage.caught_by <= {p for _, p in pairs}, pairs
    assert (cli_nodes, cli_examples, cli_pairs) == (library_nodes, library_examples, pairs)
    assert code == 1, output
    assert (pytest_nodes, pytest_examples) == (library_nodes, library_examples), output
