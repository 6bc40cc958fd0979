"""What every installed command line offers: --version, shell completion, python -m, examples in --help."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import eventmig
from eventmig.cli.about import EXAMPLES

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eventmig", *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_version_comes_from_the_package_metadata():
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"eventmig {metadata.version('eventmig')}"
    assert metadata.version("eventmig") == eventmig.__version__  # pyproject reads it from the package


def test_python_dash_m_is_the_eventmig_command():
    result = run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: eventmig ")
    assert "migrate" in result.stdout and "--version" in result.stdout


def commands() -> list[str]:
    import typer.main

    from eventmig.cli.app import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", commands())
def test_every_help_ends_with_an_example_of_its_own_command(name: str):
    from typer.testing import CliRunner

    from eventmig.cli.app import app

    result = CliRunner().invoke(app, [name, "--help"], prog_name="eventmig")  # in this process: a dozen helps
    assert result.exit_code == 0, result.output
    example = result.stdout.rsplit("Example:", 1)
    assert len(example) == 2, f"{name} --help has no example"
    assert example[1].strip().startswith(f"eventmig {name}"), example[1]
    assert name in EXAMPLES


def test_the_shell_completion_script_calls_back_into_eventmig():
    result = run("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "_EVENTMIG_COMPLETE=complete_bash" in result.stdout and "complete " in result.stdout


def test_completion_completes_commands_and_flags():
    def complete(words: str) -> list[str]:
        cword = str(len(words.split()) - 1)
        result = run(env={"_EVENTMIG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword})
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert complete("eventmig mig") == ["migrate"]
    assert complete("eventmig re") == ["rebuild"]
    assert "--workers" in complete("eventmig migrate --wor")
    assert complete("eventmig plan --form") == ["--format"]


def test_install_completion_writes_the_script_for_the_shell(tmp_path: Path):
    result = run("--install-completion", "bash", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    script = tmp_path / ".bash_completions" / "eventmig.sh"
    assert "_EVENTMIG_COMPLETE" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
