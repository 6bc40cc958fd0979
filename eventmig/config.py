"""Settings from ``[tool.eventmig]``, environment variables and flags; discovery of service code.

Like Alembic finds its script directory from ``alembic.ini``, eventmig finds
the service's ``pyproject.toml`` (the current directory or its nearest
parent, or ``--config``/``EVENTMIG_CONFIG``), reads ``[tool.eventmig]`` and
imports the upcaster registry and projections it names, with the service's
directory on ``sys.path``. Precedence: command-line flag, then environment
variable, then ``[tool.eventmig]``, then the default.

Relative SQLite paths written in ``pyproject.toml`` are resolved against the
file's directory, so a command works from any subdirectory of the service.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eventmig.errors import ConfigError, EventmigError
from eventmig.model.chains import CompiledRegistry
from eventmig.model.registry import Registry

DEFAULT_STORE = "sqlite:///eventmig.db"

# ---- jobs: one constant per setting, read by the jobs and the CLI alike
#: the store lock migrate, switch and rollback hold: one such job at a time per store
MIGRATE_LOCK = "migrate"
#: the read-model database lock rebuild and the read-model swaps hold
REBUILD_LOCK = "rebuild"
#: events per slice of migrate and verify, and per committed checkpoint
DEFAULT_BATCH_SIZE = 10_000
#: a slice is read whole into a worker's memory: beyond this many events it only costs memory
MAX_BATCH_SIZE = 1_000_000
#: events rebuild folds between two commits of states and checkpoints: a commit writes every state
#: touched since the previous one, which costs about as much as folding the events did, so commit
#: seldom; a killed rebuild folds at most this many events again (seconds of work)
DEFAULT_REBUILD_BATCH_SIZE = 1_000_000
#: states are bounded apart from the batch (the state caches): this bounds the work a kill loses
MAX_REBUILD_BATCH_SIZE = 100_000_000
#: events ``follow`` reads and applies per transaction
DEFAULT_FOLLOW_BATCH_SIZE = 10_000
MAX_FOLLOW_BATCH_SIZE = 1_000_000
#: seconds between two looks at the store when nothing announces appends (and the longest a stop waits)
DEFAULT_FOLLOW_POLL_S = 0.5
#: seconds a hole in the commit positions may stay empty before ``follow`` treats it as a rolled-back transaction
DEFAULT_FOLLOW_GAP_WAIT_S = 3.0
#: seconds a follower's lease lasts unless renewed: a standby takes a dead holder's segments over within this long
DEFAULT_FOLLOW_LEASE_S = 10.0
#: seconds a shared rebuild's claim on a partition lasts unless renewed: a dead holder's partition is taken over
#: after this long
DEFAULT_REBUILD_CLAIM_LEASE_S = 10.0
#: the most worker processes a job starts: each holds connections of its own (PostgreSQL allows 100 by
#: default), and beyond the cores of one machine more processes only take turns
MAX_WORKERS = 64
#: tries again after a lost connection before migrate, switch, rollback or rebuild gives up (0: never)
DEFAULT_RETRY_ATTEMPTS = 10
MAX_RETRY_ATTEMPTS = 1000
#: the longest wait between two of those tries, in seconds (the waits grow exponentially, jittered, up to it)
DEFAULT_RETRY_MAX_WAIT_S = 30.0
MAX_RETRY_MAX_WAIT_S = 3600.0


def default_workers() -> int:
    """One worker per core, up to :data:`MAX_WORKERS`."""
    return min(os.cpu_count() or 1, MAX_WORKERS)

#: the examples of what upcasters must produce, next to pyproject.toml unless ``cases`` says otherwise
DEFAULT_CASES = "upcaster-cases.json"
#: generated events per (type, version) in ``eventmig check`` and the pytest plugin's items
#: (the same as eventmig.testing.profile.DEFAULT_EXAMPLES, the library call's default)
DEFAULT_CHECK_EXAMPLES = 100
#: the most generated events per (type, version) a check may ask for
MAX_CHECK_EXAMPLES = 1_000_000

#: where a layout preset keeps schema versions (eventsourcing: ``class_version`` in the state);
#: the same as the presets' own ``version_location`` (tests/test_table_sql.py checks it)
LAYOUT_VERSION_LOCATIONS = {"eventsourcing": "data:class_version"}

ENV_VARS = {
    "store": "EVENTMIG_STORE",
    "target": "EVENTMIG_TARGET",
    "read_models": "EVENTMIG_READ_MODELS",
    "upcasters": "EVENTMIG_UPCASTERS",
    "projections": "EVENTMIG_PROJECTIONS",
}


@dataclass
class Settings:
    """Everything a command needs to know about the service and its stores."""

    #: the event store URL
    store: str = DEFAULT_STORE
    #: a second event store to migrate into (a migration across stores); None: migrate inside ``store``
    target: str | None = None
    #: the read-model database URL (rebuild); defaults to the event store's
    read_models: str | None = None
    #: ``module:attribute`` of the service's :class:`~eventmig.Registry`
    upcasters: str | None = None
    #: ``module:attribute`` of the service's projections
    projections: str | None = None
    #: name of the active events table in SQL stores
    events_table: str = "events"
    #: where schema versions live: ``metadata:KEY``, ``type-suffix:SEP`` or ``data:KEY`` (in the payload)
    version_key: str | None = None
    #: the same as ``version_key``, under the name the registry gives it (set one of the two)
    version_location: str | None = None
    #: which column of the events table holds what: "eventmig", "eventsourcing", "columns" or "module:NAME"
    layout: str = "eventmig"
    #: for ``layout = "columns"``: field -> column (``stream = "stream_id"``, ``position = "id"``, ...)
    columns: dict[str, str] | None = None
    #: events per batch of migrate and verify, and per committed checkpoint
    batch_size: int = DEFAULT_BATCH_SIZE
    #: events per partition of rebuild
    rebuild_batch_size: int = DEFAULT_REBUILD_BATCH_SIZE
    #: worker processes of migrate, verify and rebuild (one per core, up to MAX_WORKERS)
    workers: int = field(default_factory=default_workers)
    #: the file of upcaster cases (examples of what a chain must produce), relative to the config file
    cases: str = DEFAULT_CASES
    #: generated events per (type, version) in ``eventmig check`` and the pytest plugin's items
    check_examples: int = DEFAULT_CHECK_EXAMPLES
    #: how many times migrate, switch, rollback and rebuild try again after a lost connection (0: never)
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    #: the longest wait between two of those tries, in seconds (the waits grow exponentially, jittered)
    retry_max_wait_s: float = DEFAULT_RETRY_MAX_WAIT_S
    #: directory of the pyproject.toml the settings came from (or the cwd)
    root: Path = field(default_factory=Path.cwd)
    config_file: Path | None = None

    @property
    def read_models_url(self) -> str:
        return self.read_models or self.store

    @property
    def where_versions_live(self) -> str | None:
        """``version_location`` or its older name ``version_key``, whichever is set."""
        return self.version_location or self.version_key

    @property
    def cases_file(self) -> Path:
        """The file of upcaster cases (it need not exist)."""
        return self.root / self.cases


def find_config(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.eventmig]`` table, from ``start`` upwards."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "eventmig" in _tool_table(candidate):
            return candidate
    return None


def _tool_table(path: Path) -> dict[str, Any]:
    """The file's ``[tool]`` table; a ``tool`` that is not a table is an error, not "no eventmig here"."""
    tool = _read_toml(path).get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{path}: tool must be a table ([tool.eventmig]), got {_shown(tool)}")
    return tool


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings for one command; ``overrides`` are command-line values (None means not given)."""
    path = Path(config) if config else (Path(os.environ["EVENTMIG_CONFIG"]) if os.environ.get("EVENTMIG_CONFIG") else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    path = path or find_config()
    table: dict[str, Any] = {}
    root = Path.cwd()
    if path is not None:
        found = _tool_table(path).get("eventmig", {})
        if not isinstance(found, dict):
            raise ConfigError(f"{path}: tool.eventmig must be a table ([tool.eventmig]), got {_shown(found)}")
        table = dict(found)
        root = path.resolve().parent
    known = {f.name for f in fields(Settings)} - {"root", "config_file"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown [tool.eventmig] setting(s) {', '.join(unknown)}")
    if path is not None:
        # the default store sits next to the config file too, wherever the command runs from
        table.setdefault("store", DEFAULT_STORE)
    for key in ("store", "target", "read_models"):
        if key in table:
            table[key] = _resolve_sqlite(table[key], root)
    for key, var in ENV_VARS.items():
        if os.environ.get(var):
            table[key] = os.environ[var]
    table.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = Settings(**table, root=root, config_file=path)
    except TypeError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    _check_types(settings)
    return settings


_TEXT_SETTINGS = (
    "store", "target", "read_models", "upcasters", "projections", "events_table", "version_key", "version_location",
    "layout", "cases",
)
#: settings that count something, and their largest values
_COUNT_SETTINGS = {
    "batch_size": MAX_BATCH_SIZE,
    "rebuild_batch_size": MAX_REBUILD_BATCH_SIZE,
    "workers": MAX_WORKERS,
    "check_examples": MAX_CHECK_EXAMPLES,
}


def _check_types(settings: Settings) -> None:
    """Refuse a setting of the wrong type or out of range here, as a configuration error (exit 2).

    TOML has types, and ``store = 5`` would otherwise surface much later as
    an unexpected failure deep inside whatever first used the value.
    """
    for key in _TEXT_SETTINGS:
        value = getattr(settings, key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"setting {key} must be a string, got {_shown(value)}")
    if settings.version_key and settings.version_location and settings.version_key != settings.version_location:
        raise ConfigError(f"settings version_key ({settings.version_key!r}) and version_location "
                          f"({settings.version_location!r}) say different things: set one of them")
    if settings.columns is not None and not isinstance(settings.columns, dict):
        raise ConfigError(f"setting columns must be a table ([tool.eventmig.columns]), got {_shown(settings.columns)}")
    for key, largest in _COUNT_SETTINGS.items():
        value = getattr(settings, key)
        if type(value) is not int or not 1 <= value <= largest:
            raise ConfigError(f"setting {key} must be an integer from 1 to {largest:,}, got {_shown(value)}")
    attempts = settings.retry_attempts
    if type(attempts) is not int or not 0 <= attempts <= MAX_RETRY_ATTEMPTS:
        raise ConfigError(f"setting retry_attempts must be an integer from 0 to {MAX_RETRY_ATTEMPTS:,}, "
                          f"got {_shown(attempts)}")
    wait = settings.retry_max_wait_s
    if type(wait) not in (int, float) or not 0 <= wait <= MAX_RETRY_MAX_WAIT_S:
        raise ConfigError(f"setting retry_max_wait_s must be a number of seconds from 0 to {MAX_RETRY_MAX_WAIT_S:,.0f}, "
                          f"got {_shown(wait)}")


def _shown(value: Any, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, on one line and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def import_object(spec: str, root: Path, what: str) -> Any:
    """Import ``module:attribute`` with the service root on ``sys.path``."""
    module_name, _, attribute = spec.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except EventmigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{what} module {module_name!r} not found (looked in {root} and sys.path)") from None
        raise ConfigError(f"cannot import {what} module {module_name!r}: {exc}") from None
    except Exception as exc:  # the service's code failed to import: report it in one line
        raise ConfigError(f"cannot import {what} module {module_name!r}: {type(exc).__name__}: {exc}") from None
    if not attribute:
        return module
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{what} module {module_name!r} has no attribute {attribute!r}") from None


def load_registry(settings: Settings) -> CompiledRegistry:
    """Import and validate the service's upcaster registry (fails fast with every problem)."""
    if not settings.upcasters:
        raise ConfigError(
            "no upcasters configured: set upcasters = \"package:registry\" under [tool.eventmig] "
            "in pyproject.toml (or EVENTMIG_UPCASTERS), or run `eventmig init`"
        )
    registry = import_object(settings.upcasters, settings.root, "upcasters")
    if not isinstance(registry, Registry):
        raise ConfigError(f"{settings.upcasters} is a {type(registry).__name__}, not an eventmig.Registry")
    location = registry_location(settings)
    if location:
        try:
            registry.version_location = location
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return registry.compile()


def registry_location(settings: Settings) -> str | None:
    """Where the registry reads versions: the setting, or the layout preset's; the store lifts a ``data:KEY``
    location out of the payload into the metadata, so the registry reads it as ``metadata:KEY``."""
    where = settings.where_versions_live or LAYOUT_VERSION_LOCATIONS.get(settings.layout)
    kind, _, key = (where or "").partition(":")
    return f"metadata:{key}" if kind == "data" and key else where


def load_projections(settings: Settings) -> list[Any]:
    """Import the service's projections: a list (or tuple) of :class:`~eventmig.projection.api.Projection`."""
    from eventmig.projection.api import Projection

    if not settings.projections:
        raise ConfigError(
            "no projections configured: set projections = \"package:projections\" under [tool.eventmig] "
            "in pyproject.toml (or EVENTMIG_PROJECTIONS), or run `eventmig init`"
        )
    found = import_object(settings.projections, settings.root, "projections")
    if not isinstance(found, (list, tuple)):
        raise ConfigError(f"{settings.projections} is a {type(found).__name__}, not a list of projections")
    wrong = [repr(p) for p in found if not isinstance(p, Projection)]
    if wrong:
        raise ConfigError(f"{settings.projections} holds things that are not projections: {', '.join(wrong[:3])}")
    return list(found)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _resolve_sqlite(url: str, root: Path) -> str:
    prefix = "sqlite:///"
    if isinstance(url, str) and url.startswith(prefix) and not url.startswith("sqlite:////") and url != prefix + ":memory:":
        relative = url[len(prefix):]
        if relative:
            return prefix + str((root / relative).resolve())
    return url
