"""``upcaster_tests()``: the checks of ``eventmig check`` as test items of a pytest run.

Assign it to a name in a test module, and eventmig's pytest plugin collects
one item per example (registered with ``registry.example`` or in the cases
file) and one per ``(type, version)`` of the registry::

    # tests/test_upcasters.py
    from eventmig.testing.suite import upcaster_tests

    test_upcasters = upcaster_tests()   # the registry of [tool.eventmig]

    # pytest -v:
    #   tests/test_upcasters.py::test_upcasters::example MoneyDeposited v1 #1 PASSED
    #   tests/test_upcasters.py::test_upcasters::MoneyDeposited v1 PASSED

Each item runs what ``eventmig check`` runs for it, with the same hypothesis
profile, seed and example budget (``check_examples`` of ``[tool.eventmig]``),
so a failing item is a failing ``check`` and the other way round. A failed
example shows its differences field by field; a failed property its minimal
example. This module is imported by the plugin at collection, so it
imports nothing heavy itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["UpcasterTests", "upcaster_tests"]


@dataclass(frozen=True)
class UpcasterTests:
    """What to collect: see :func:`upcaster_tests`."""

    registry: Any = None
    cases: str | Path | None = None
    examples: int | None = None
    strict: bool = True


def upcaster_tests(
    registry: Any = None, *, cases: str | Path | None = None, examples: int | None = None, strict: bool = True
) -> UpcasterTests:
    """Test items for every example and every ``(type, version)`` of a registry.

    ``registry`` is a Registry (or compiled one), a ``"module:attribute"``,
    or None for the one ``[tool.eventmig]`` names (``--eventmig-config`` to
    choose the file). ``cases`` is a file of cases (default: the project's,
    if it exists); ``examples`` the generated events per schema (default:
    ``check_examples``, 100); ``strict`` as in ``eventmig check``.
    """
    return UpcasterTests(registry, cases, examples, strict)
