"""Every module of eventmig stays readable: at most 500 lines, and no function or method over 60.

Long files and long functions are where duplicated logic and mixed concerns
hide; this test keeps them from growing back. The few exceptions are listed
with their reason, and the list cannot rot: an entry that is back under the
limit fails the test until it is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import msgspec

PACKAGE = Path(__file__).resolve().parent.parent / "eventmig"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60

#: "path relative to eventmig/::qualified name" -> why it may be longer than the limit
ALLOWED: dict[str, str] = {}


class TooLong(msgspec.Struct, frozen=True):
    """One file or function over its limit: where, and how many lines."""

    where: str  # "jobs/migrate.py" or "jobs/migrate.py::_migrate"
    lines: int
    limit: int


def _function_lengths(tree: ast.AST, relative: str) -> list[tuple[str, int]]:
    """``(path::qualname, lines)`` of every function and method, decorators included, nested ones too."""
    found: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                name = prefix + child.name
                found.append((f"{relative}::{name}", child.end_lineno - start + 1))
                walk(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def too_long(package: Path, max_file: int, max_function: int) -> list[TooLong]:
    """Every module of ``package`` over ``max_file`` lines and every function over ``max_function``."""
    found: list[TooLong] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > max_file:
            found.append(TooLong(relative, lines, max_file))
        for where, length in _function_lengths(ast.parse(source, str(path)), relative):
            if length > max_function:
                found.append(TooLong(where, length, max_function))
    return found


def test_no_module_or_function_is_too_long_unless_allowed_with_a_reason() -> None:
    over = too_long(PACKAGE, MAX_FILE_LINES, MAX_FUNCTION_LINES)
    unexplained = [f"{t.where}: {t.lines} lines (limit {t.limit})" for t in over if t.where not in ALLOWED]
    assert not unexplained, "split these, or list them in ALLOWED with a reason:\n" + "\n".join(unexplained)


def test_every_allowed_exception_is_still_needed_and_says_why() -> None:
    over = {t.where for t in too_long(PACKAGE, MAX_FILE_LINES, MAX_FUNCTION_LINES)}
    stale = sorted(set(ALLOWED) - over)
    assert not stale, f"no longer over the limit, remove from ALLOWED: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_the_measure_counts_what_it_claims(tmp_path: Path) -> None:
    """The check can fail: a long module and a long method are both found, by qualified name."""
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"        x = {i}" for i in range(5))
    (package / "mod.py").write_text(
        "class A:\n    @staticmethod\n    def long():\n" + body + "\n\n\ndef short():\n    return 1\n" + "\n" * 10
    )
    found = {t.where: t.lines for t in too_long(package, max_file=21, max_function=6)}
    assert found == {"mod.py": 22, "mod.py::A.long": 7}
