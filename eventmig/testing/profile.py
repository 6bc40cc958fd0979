"""The one hypothesis profile of the upcaster checks, so every entry point gives the same verdict.

``eventmig check``, :func:`~eventmig.testing.checks.check_upcasters` and the
pytest plugin's items all build their settings here: derandomized (the seed
comes from the check's own code, so it is the same in every process and
every run), no example database (a failure saved by one run must not make
the next one differ), no deadline (CI machines are slow at times) and the
same example budget unless told otherwise. The profile's parent is
hypothesis's built-in default, not whatever profile the test run loaded, so
a project's own ``--hypothesis-profile`` cannot change the verdict either.

Boundary values of every field are run before generation as explicit
examples (see :mod:`~eventmig.testing.boundaries`), so they are never left
to chance and do not count against the budget.
"""

from __future__ import annotations

from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.strategies import SearchStrategy

T = TypeVar("T")

__all__ = ["DEFAULT_EXAMPLES", "PROFILE", "check_settings", "draw"]

#: generated events per (type, version), the same in every entry point
DEFAULT_EXAMPLES = 100
PROFILE = "eventmig-check"

settings.register_profile(
    PROFILE,
    parent=settings.get_profile("default"),
    max_examples=DEFAULT_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    verbosity=Verbosity.quiet,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=False,
    report_multiple_bugs=True,
)


def check_settings(examples: int = DEFAULT_EXAMPLES, *, derandomize: bool = True) -> settings:
    """The settings of one check: the shared profile with this example budget."""
    return settings(settings.get_profile(PROFILE), max_examples=examples, derandomize=derandomize)


def draw(strategy: SearchStrategy[T], count: int) -> list[T]:
    """``count`` values of ``strategy``, the same on every run (the profile's derandomized generation).

    For tests that pay for each case (a store to migrate): draw a batch, run
    it through one store, and let the per-event checks shrink what fails.
    """
    found: list[T] = []

    def collect(value: Any) -> None:
        if len(found) < count:
            found.append(value)

    settings(check_settings(count), phases=(Phase.generate,))(given(strategy)(collect))()
    return found
