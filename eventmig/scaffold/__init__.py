"""Example services that ``eventmig init --example NAME`` writes into a directory, as ``alembic init`` does.

The files come with the package (``eventmig/scaffold/<name>/``), so an
installed eventmig can write them anywhere: no clone of the repository
needed. For ``shop`` they are a copy of the repository's top-level
``upcasters/`` and ``projections/``, which stay the source; a test fails
when the copy drifts, and ``make example-copy`` refreshes it.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from eventmig.errors import ConfigError

#: the service's packages an example consists of, in the order they are written
PACKAGES = ("upcasters", "projections")

#: the ``[tool.eventmig]`` table of the examples: their packages, a SQLite store beside pyproject.toml
PYPROJECT_TABLE = """
[tool.eventmig]
store = "sqlite:///eventmig.db"
upcasters = "upcasters:registry"
projections = "projections:projections"
"""


def names() -> list[str]:
    """The examples this eventmig carries."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.is_dir() and not p.name.startswith("_"))


def files(name: str) -> dict[str, str]:
    """An example's files: path relative to the service root -> text."""
    if name not in names():
        raise ConfigError(f"no example named {name!r}; eventmig has: {', '.join(names())}")
    root = resources.files(__name__) / name
    found: dict[str, str] = {}
    for package in PACKAGES:
        _collect(root / package, package, found)
    return found


def _collect(folder: Traversable, prefix: str, found: dict[str, str]) -> None:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name != "__pycache__":
                _collect(entry, f"{prefix}/{entry.name}", found)
        elif entry.name.endswith(".py"):
            found[f"{prefix}/{entry.name}"] = entry.read_text(encoding="utf-8")


def write(root: Path, name: str) -> tuple[list[str], list[str]]:
    """Write example ``name`` into ``root``: (created, kept), never overwriting anything.

    A package directory that already holds files is kept whole: the
    example's modules mixed into a service's own would be neither.
    """
    example = files(name)
    created: list[str] = []
    kept: list[str] = []
    for package in PACKAGES:
        folder = root / package
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            kept.append(f"{folder} (exists; the example's {package}/ not written)")
            continue
        for relative, text in example.items():
            if relative.split("/", 1)[0] != package:
                continue
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            created.append(str(target))
    return created, kept
