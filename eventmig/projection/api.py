"""Projections: read models and aggregate snapshots, as folds by key over the events.

A projection says which event types it handles, the key an event belongs to,
the state a key starts from, how an event evolves that state, and the rows a
state becomes in its SQLAlchemy table(s)::

    import sqlalchemy as sa
    from eventmig.projection.api import Projection

    metadata = sa.MetaData()
    order_summary_table = sa.Table(
        "order_summary", metadata,
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
    )

    class OrderSummary(msgspec.Struct):
        status: str = "new"
        item_count: int = 0

    order_summary = Projection(
        "order_summary", version=1, tables=[order_summary_table], state=OrderSummary, key="order_id",
    )

    @order_summary.on(OrderPlaced)
    def placed(s: OrderSummary, e: OrderPlaced) -> OrderSummary:
        s.status = "placed"
        return s

    @order_summary.on(LineItemAdded)
    def item(s: OrderSummary, e: LineItemAdded) -> None:
        s.item_count += e.quantity          # mutating in place and returning None is fine too

    @order_summary.rows
    def summary_rows(order_id: str, s: OrderSummary):
        return [(order_id, s.status, s.item_count)]   # tuples in column order, or dicts

Handlers receive events decoded by msgspec into the *head* schema Struct of
their type, as registered in the service's upcaster registry (events stored
at older schema versions are upcast on the way); types without a schema
arrive as dicts. A handler that declares a third parameter also receives an
:class:`EventInfo` (stream, stream version, position, recorded time).

``key`` is a field name of the events (``"order_id"``), :data:`STREAM` (the
event's stream), or a function of the event; it may return None to skip an
event. Keys are strings or ints. State is anything msgspec encodes: a rebuild
persists the states of the keys it touched with every checkpoint, which is
what lets it resume after a kill and keep only a bounded number of them in
memory. Declare the state's type with ``state=`` (a Struct with defaults for
every field makes a good one: it is also the initial state) or pass
``initial=`` and ``state_type=``.

A rebuild partitions a projection's keys across worker processes. A
projection whose keys depend on one another (a key function that must
remember earlier events) declares ``global_order=True``: it is folded by one
worker, in commit order, and its key function may take a second argument,
an :class:`Index`, a small persisted mapping for such memories.

:class:`Snapshots` are the same mechanism keyed by stream, writing each
aggregate's state encoded by msgspec; :func:`load_snapshot` reads one back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa

from eventmig.errors import ConfigError
from eventmig.projection.sentinels import _DELETED, _MISSING
from eventmig.projection.callables import arity, state_label, type_label


__all__ = [
    "STREAM",
    "EventInfo",
    "Index",
    "Projection",
    "Snapshot",
    "Snapshots",
    "load_snapshot",
]


class _StreamKey:
    """The key of an event is its stream's name (aggregate snapshots, per-stream read models)."""

    def __repr__(self) -> str:
        return "STREAM"

    def __reduce__(self) -> str:
        return "STREAM"


#: ``key=STREAM``: events are keyed by their stream.
STREAM: Any = _StreamKey()


class EventInfo(NamedTuple):
    """Where an event sits, for handlers that declare a third parameter."""

    stream: str
    version: int  # the event's version within its stream
    position: int  # its commit position (opaque: compare, never compute)
    recorded_at: int  # microseconds since the Unix epoch


Handler = Callable[..., Any]


class Projection:
    """A read model: a fold by key over events, and the rows each key's state becomes."""

    def __init__(
        self,
        name: str,
        *,
        version: int,
        tables: Sequence[sa.Table],
        key: str | Callable[..., Any] = STREAM,
        state: type | None = None,
        initial: Callable[[], Any] | None = None,
        state_type: Any = None,
        global_order: bool = False,
        cache_size: int | None = None,
    ) -> None:
        if not name.isidentifier():
            raise ConfigError(f"projection name must be an identifier, got {name!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError(f"projection {name}: version must be an int >= 1, got {version!r}")
        if not tables:
            raise ConfigError(f"projection {name}: give at least one table")
        for table in tables:
            if not isinstance(table, sa.Table):
                raise ConfigError(f"projection {name}: {table!r} is not a sqlalchemy.Table")
            if not table.primary_key.columns:
                raise ConfigError(f"projection {name}: table {table.name} needs a primary key (rows are compared by it)")
            if not table.name.isidentifier():
                raise ConfigError(f"projection {name}: table name {table.name!r} must be an identifier")
        if initial is None:
            if state is None:
                raise ConfigError(f"projection {name}: give state= (a type whose call makes the initial state) or initial=")
            initial = state
        self.name = name
        self.version = version
        self.tables: tuple[sa.Table, ...] = tuple(tables)
        self.key = key
        self.initial: Callable[[], Any] = initial
        self.state_type: Any = state_type if state_type is not None else (state if state is not None else Any)
        self.global_order = global_order
        self.cache_size = cache_size
        self._handlers: dict[Any, Handler] = {}  # event type (name or Struct class) -> handler
        self._rows: Callable[[Any, Any], Iterable[Any]] | None = None
        if callable(key) and key is not STREAM and arity(key) >= 2 and not global_order:
            raise ConfigError(
                f"projection {name}: a key function taking an index needs global_order=True "
                "(partitioned workers cannot share one)"
            )

    def __repr__(self) -> str:
        return f"<Projection {self.name} v{self.version}>"

    # ------------------------------------------------------------ declaring
    def on(self, *event_types: str | type) -> Callable[[Handler], Handler]:
        """Decorator: the handler evolving a state with events of these types.

        Types are names (``"OrderPlaced"``) or head schema Structs. The handler
        returns the new state, or None when it changed the state in place.
        """
        if not event_types:
            raise ConfigError(f"projection {self.name}: on() needs at least one event type")

        def register(fn: Handler) -> Handler:
            for event_type in event_types:
                if event_type in self._handlers:
                    raise ConfigError(f"projection {self.name}: two handlers for {type_label(event_type)}")
                self._handlers[event_type] = fn
            return fn

        return register

    def rows(self, fn: Callable[[Any, Any], Iterable[Any]]) -> Callable[[Any, Any], Iterable[Any]]:
        """Decorator: ``rows(key, state)``, the rows of one key as tuples in column order or dicts.

        With several tables, return ``{table name: rows}``.
        """
        self._rows = fn
        return fn

    # ---------------------------------------------------------- introspection
    @property
    def handlers(self) -> Mapping[Any, Handler]:
        return dict(self._handlers)

    def rows_of(self, key: Any, state: Any) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of one key per table name, as tuples in column order."""
        if self._rows is None:
            raise ConfigError(f"projection {self.name} has no rows function: decorate one with @{self.name}.rows")
        produced = self._rows(key, state)
        if produced is None:
            return {}
        if isinstance(produced, Mapping):
            unknown = set(produced) - {t.name for t in self.tables}
            if unknown:
                raise ConfigError(f"projection {self.name}: rows for unknown table(s) {sorted(unknown)}")
            return {t.name: [self._tuple(t, r) for r in produced.get(t.name, ())] for t in self.tables}
        if len(self.tables) > 1:
            raise ConfigError(f"projection {self.name} has several tables: its rows function must return {{table: rows}}")
        table = self.tables[0]
        return {table.name: [self._tuple(table, r) for r in produced]}

    def rows_of_many(self, items: Iterable[tuple[Any, Any]]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of many ``(key, state)`` pairs per table name: :meth:`rows_of` in bulk."""
        if self._rows is None or len(self.tables) != 1:
            out: dict[str, list[tuple[Any, ...]]] = {t.name: [] for t in self.tables}
            for key, state in items:
                for name, produced in self.rows_of(key, state).items():
                    out[name].extend(produced)
            return out
        table = self.tables[0]
        width = len(table.columns)
        rows_fn, as_tuple = self._rows, self._tuple
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for key, state in items:
            produced = rows_fn(key, state)
            if produced is None:
                continue
            # a list is what rows functions return, and an ABC check per key costs more than the rest of the loop
            if produced.__class__ is not list and isinstance(produced, Mapping):
                rows.extend(self.rows_of(key, state).get(table.name, ()))
                continue
            for row in produced:
                append(row if type(row) is tuple and len(row) == width else as_tuple(table, row))
        return {table.name: rows}

    def _tuple(self, table: sa.Table, row: Any) -> tuple[Any, ...]:
        if type(row) is tuple:
            if len(row) != len(table.columns):
                raise ConfigError(
                    f"projection {self.name}: a row of {table.name} has {len(row)} values for {len(table.columns)} columns"
                )
            return row
        if isinstance(row, Mapping):
            try:
                return tuple(row[c.name] for c in table.columns)
            except KeyError as exc:
                raise ConfigError(f"projection {self.name}: a row of {table.name} lacks column {exc.args[0]!r}") from None
        if isinstance(row, (list, msgspec.Struct)):
            return self._tuple(table, tuple(row) if isinstance(row, list) else msgspec.structs.astuple(row))
        raise ConfigError(f"projection {self.name}: rows must be tuples or dicts, got {type(row).__name__}")

    def fingerprint(self) -> str:
        """Identifies the projection's code: a resumed rebuild must run the same code."""
        from eventmig.model.registry import _code_fingerprint

        parts = [self.name, str(self.version), repr(self.global_order), state_label(self.state_type)]
        parts += [_code_fingerprint(self.key) if callable(self.key) else repr(self.key)]
        for event_type, fn in sorted(self._handlers.items(), key=lambda kv: type_label(kv[0])):
            parts.append(f"{type_label(event_type)}={_code_fingerprint(fn)}")
        parts.append(_code_fingerprint(self._rows) if self._rows else "-")
        for table in self.tables:
            parts.append(f"{table.name}({','.join(f'{c.name}:{c.type!r}' for c in table.columns)})")
        return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


class Snapshot(NamedTuple):
    """An aggregate's state as of ``version`` of its stream."""

    aggregate_id: str
    version: int
    state: Any
    projection_version: int


class Snapshots(Projection):
    """Aggregate snapshots: one row per stream with the state its events folded into.

    The table (``name`` unless ``table=`` says otherwise) holds the aggregate
    id (its stream), the stream version the state reflects, the state
    encoded with msgspec (MessagePack), and the projection's version.
    """

    def __init__(
        self,
        name: str,
        state: type,
        *,
        version: int,
        table: str | None = None,
        metadata: sa.MetaData | None = None,
        initial: Callable[[], Any] | None = None,
        cache_size: int | None = None,
    ) -> None:
        table_name = table or name
        snapshot_table = sa.Table(
            table_name,
            metadata if metadata is not None else sa.MetaData(),
            sa.Column("aggregate_id", sa.Text, primary_key=True),
            sa.Column("version", sa.BigInteger, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("projection_version", sa.Integer, nullable=False),
        )
        super().__init__(
            name, version=version, tables=[snapshot_table], key=STREAM, state=state, initial=initial,
            state_type=state, cache_size=cache_size,
        )
        self.tracks_version = True
        self._encode = msgspec.msgpack.Encoder().encode
        self._decoder = msgspec.msgpack.Decoder(state)
        self._rows = self._snapshot_rows

    def _snapshot_rows(self, key: Any, state: Any) -> list[tuple[Any, ...]]:
        version, aggregate = state
        return [(key, version, self._encode(aggregate), self.version)]

    def decode_state(self, data: bytes) -> Any:
        """The aggregate's state from the bytes of a snapshot row."""
        return self._decoder.decode(data)


class Index:
    """A small persisted mapping a global-order projection's key function keeps memories in.

    Say, which customer placed an order, so that a payment, which names
    only the order, reaches the customer's totals. A rebuild persists it
    with the states, so it survives a resume; forget entries you no longer
    need (``pop``) to keep it small.
    """

    __slots__ = ("_data", "_dirty", "_load")

    def __init__(self, load: Callable[[Any], Any] | None = None) -> None:
        self._data: dict[Any, Any] = {}
        self._dirty: dict[Any, Any] = {}
        self._load = load

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            value = self._load(key) if self._load is not None else _MISSING
            if value is _MISSING or value is _DELETED:
                return default
            self._data[key] = value
        return value

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._dirty[key] = value

    def pop(self, key: Any, default: Any = None) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return default
        del self._data[key]
        self._dirty[key] = _DELETED
        return value

    def __len__(self) -> int:
        return len(self._data)
