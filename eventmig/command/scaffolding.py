"""``eventmig init`` and ``eventmig inspect``: start a project, or look at an existing store first.

``init`` writes the settings table and the starting upcaster and projection
modules; ``inspect`` reads an existing store's layout so ``init`` can describe it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from eventmig.errors import ConfigError
from eventmig.backends import open_store


# ------------------------------------------------------------------------ init
PYPROJECT_TABLE = """
[tool.eventmig]
store = "sqlite:///eventmig.db"
upcasters = "upcasters:registry"
projections = "projections:projections"
"""


UPCASTERS_TEMPLATE = '''"""Upcasters of this service: one msgspec Struct per schema version, and the steps between them."""

from typing import Annotated

import msgspec

from eventmig import Registry

registry = Registry(version_location="metadata:schema_version")

# @registry.schema("OrderPlaced", 1)
# class OrderPlacedV1(msgspec.Struct):
#     order_id: str
#     total: Annotated[float, msgspec.Meta(ge=0, le=1e9)]  # what the old code really stored
#
# @registry.schema("OrderPlaced", 2)
# class OrderPlaced(msgspec.Struct):
#     order_id: str
#     total_cents: int
#
# def euros_to_cents(euros: float) -> int:
#     return round(euros * 100)
#
# # what the step does, declared for `eventmig check`: total lives on as total_cents, by this rule
# @registry.upcaster(rename={"total": "total_cents"}, convert={"total_cents": euros_to_cents})
# def total_in_cents(e: OrderPlacedV1) -> OrderPlaced:
#     return OrderPlaced(e.order_id, euros_to_cents(e.total))
#
# # what an old event must become
# registry.example(OrderPlacedV1("o-1", 12.29), becomes=OrderPlaced("o-1", 1229))
'''


PROJECTIONS_TEMPLATE = '''"""Projections of this service: read models and aggregate snapshots rebuilt from the events."""

projections: list = []
'''


class InitReport(msgspec.Struct):
    created: list[str]
    skipped: list[str]
    #: the example written (``init --example NAME``), None for the empty scaffold
    example: str | None = None


def init(directory: str | Path = ".", *, example: str | None = None, store: str | None = None) -> InitReport:
    """Scaffold ``[tool.eventmig]``, ``upcasters/`` and ``projections/`` in a service; never overwrite.

    ``example`` writes one of the example services eventmig carries
    (``shop``, the reference service ``eventmig demo`` runs) instead of the
    empty packages. ``store``: the service's existing database. Its events
    table, if :func:`inspect` recognises one, is what ``[tool.eventmig]``
    points at, with its layout; otherwise eventmig's own store is set up in
    that database, beside whatever tables it has.
    """
    from eventmig import scaffold

    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    if example is not None:
        scaffold.files(example)  # an unknown name fails before anything is written
    table = PYPROJECT_TABLE
    if store is not None:
        table = "\n" + _store_table(store)
    created: list[str] = []
    skipped: list[str] = []
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text() if pyproject.exists() else ""
    if "[tool.eventmig]" in text:
        skipped.append(f"{pyproject} (already has [tool.eventmig])")
    else:
        pyproject.write_text(text + ("\n" if text and not text.endswith("\n") else "") + table.lstrip("\n" if not text else ""))
        created.append(f"{pyproject} [tool.eventmig]")
    if example is not None:
        written, kept = scaffold.write(root, example)
        return InitReport(created + written, skipped + kept, example)
    for package, template in (("upcasters", UPCASTERS_TEMPLATE), ("projections", PROJECTIONS_TEMPLATE)):
        target = root / package / "__init__.py"
        if target.exists():
            skipped.append(str(target))
            continue
        target.parent.mkdir(exist_ok=True)
        target.write_text(template)
        created.append(str(target))
    return InitReport(created, skipped)


# --------------------------------------------------------------------- inspect
class InspectReport(msgspec.Struct):
    """What a database holds: its tables, the layouts they look like, their events by (type, version)."""

    store: str
    dialect: str
    tables: list[Any]
    #: the events table eventmig would most likely be pointed at, None if none was recognised
    events_table: str | None
    #: the ``[tool.eventmig]`` settings for it ("" when there is none)
    snippet: str


def inspect(url: str) -> InspectReport:
    """List the tables of the database at ``url``, recognise the known layouts, count their events; write nothing."""
    from eventmig.backends.sql import survey

    masked, dialect, tables = survey.survey(url)
    chosen = survey.best(tables)
    return InspectReport(masked, dialect, tables, chosen.table if chosen else None,
                         survey.snippet(masked, chosen) if chosen else "")


def _store_table(url: str) -> str:
    """``[tool.eventmig]`` for an existing database: its recognised events table, or a new eventmig store in it."""
    found = inspect(url)
    if found.snippet:
        return found.snippet
    open_store(url, create=False, init=True).close()  # nothing to adopt: eventmig's own tables, asked for
    return PYPROJECT_TABLE.lstrip("\n").replace('"sqlite:///eventmig.db"', f'"{found.store}"')
