"""The pytest items of :func:`~eventmig.testing.suite.upcaster_tests`: one per example, one per schema.

Imported by the plugin only when a test module holds such a suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventmig.config import DEFAULT_CHECK_EXAMPLES, Settings, import_object, load_registry, load_settings
from eventmig.model.declared import Example
from eventmig.errors import ConfigError
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry
from eventmig.model.steps import Node
from eventmig.testing.suite import UpcasterTests


class ItemFailed(Exception):
    """A failed item's report, shown as it is (no traceback: it is not about the test's code)."""


class UpcasterSuite(pytest.Collector):
    """The items of one ``upcaster_tests()``."""

    def __init__(self, *, spec: UpcasterTests, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def collect(self) -> Iterator[pytest.Item]:
        try:
            compiled, cases, budget = self._resolve()
        except ConfigError as exc:
            raise self.CollectError(f"eventmig: {exc}") from None
        from eventmig.testing.checks import all_examples

        examples = all_examples(compiled, cases)
        for e in examples:
            yield ExampleItem.from_parent(self, name=f"example {e.name}", example=e, compiled=compiled)
        reg = compiled.registry
        nodes = sorted(set(reg.schemas) | set(reg.steps) | {t for s in reg.steps.values() for t in s.targets})
        for node in nodes:
            yield NodeItem.from_parent(self, name=f"{node[0]} v{node[1]}", node=node, compiled=compiled,
                                       budget=budget, strict=self.spec.strict)

    def _resolve(self) -> tuple[CompiledRegistry, Path | None, int]:
        settings = _project_settings(self.config)
        spec = self.spec
        if spec.registry is None:
            if settings is None:
                raise ConfigError(
                    f"no pyproject.toml with [tool.eventmig] in {self.config.rootpath} or above: "
                    "pass --eventmig-config, or upcaster_tests(registry)"
                )
            compiled = load_registry(settings)
        elif isinstance(spec.registry, str):
            root = settings.root if settings else Path(self.config.rootpath)
            found = import_object(spec.registry, root, "upcasters")
            if not isinstance(found, (Registry, CompiledRegistry)):
                raise ConfigError(f"{spec.registry} is a {type(found).__name__}, not an eventmig.Registry")
            compiled = found.compile() if isinstance(found, Registry) else found
        else:
            compiled = spec.registry.compile() if isinstance(spec.registry, Registry) else spec.registry
        cases: Path | None = Path(spec.cases) if spec.cases is not None else None
        if cases is None and settings is not None and settings.cases_file.exists():
            cases = settings.cases_file
        budget = spec.examples or (settings.check_examples if settings else DEFAULT_CHECK_EXAMPLES)
        return compiled, cases, budget


def _project_settings(config: pytest.Config) -> Settings | None:
    """The ``[tool.eventmig]`` settings the plugin's fixtures use too, if there are any."""
    from eventmig.config import find_config

    path: str | Path | None = config.getoption("eventmig_config") or os.environ.get("EVENTMIG_CONFIG")
    if not path:
        path = find_config(Path(config.rootpath))
    return load_settings(path) if path else None


class _Item(pytest.Item):
    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, ItemFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))


class ExampleItem(_Item):
    """One example: its event must become exactly the head events it names."""

    def __init__(self, *, example: Example, compiled: CompiledRegistry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.example, self.compiled = example, compiled

    def runtest(self) -> None:
        from eventmig.testing.cases import run_example

        found = run_example(self.compiled, self.example)
        if found is not None:
            message, diff = found
            raise ItemFailed("\n".join([message, *(f"  {line}" for line in diff)]))

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        path, _, line = self.example.origin.rpartition(":")
        if path and line.isdigit():
            return path, int(line) - 1, self.name
        return self.path, None, self.name


class NodeItem(_Item):
    """Every property, law and schema check of one ``(type, version)``, as ``eventmig check`` runs them."""

    def __init__(self, *, node: Node, compiled: CompiledRegistry, budget: int, strict: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.node, self.compiled, self.budget, self.strict = node, compiled, budget, strict

    def runtest(self) -> None:
        from eventmig.testing.checks import check_upcasters

        report = check_upcasters(self.compiled, examples=self.budget, nodes=[self.node], strict=self.strict,
                                 include_examples=False)
        if not report.ok:
            raise ItemFailed("\n".join(report.format().splitlines()[:-1 - len(report.not_generated)]))

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        return self.path, None, self.name
