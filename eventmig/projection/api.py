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
import inspect
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec
import sqlalchemy as sa

from eventmig.errors import ConfigError, UpcastError
from eventmig.model.events import MetadataKey, TypeSuffix
from eventmig.model.chains import CompiledRegistry, run_step
from eventmig.model.steps import EventContext, declared_fields, undeclared

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
        if callable(key) and key is not STREAM and _arity(key) >= 2 and not global_order:
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
                    raise ConfigError(f"projection {self.name}: two handlers for {_type_label(event_type)}")
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

        parts = [self.name, str(self.version), repr(self.global_order), _state_label(self.state_type)]
        parts += [_code_fingerprint(self.key) if callable(self.key) else repr(self.key)]
        for event_type, fn in sorted(self._handlers.items(), key=lambda kv: _type_label(kv[0])):
            parts.append(f"{_type_label(event_type)}={_code_fingerprint(fn)}")
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


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING: Any = _Sentinel("MISSING")
_DELETED: Any = _Sentinel("DELETED")
#: what a fast chain returns when a step's result needs the registry's general handling
SLOW: Any = _Sentinel("SLOW")
_json_decode = msgspec.json.Decoder().decode


# ====================================================================== binding
class Slot(NamedTuple):
    """One projection's part in handling one head event type."""

    projection: Projection
    index: int  # position of the projection in the bound list
    handler: Handler
    wants_info: bool
    key_kind: int  # KEY_STREAM | KEY_GETTER | KEY_FUNCTION | KEY_INDEXED
    key: Callable[..., Any] | None


KEY_STREAM, KEY_GETTER, KEY_FUNCTION, KEY_INDEXED = range(4)


class Route(NamedTuple):
    """How events of one head type reach the projections that handle it."""

    type: str
    decode: Callable[[bytes], Any]
    slots: tuple[Slot, ...]
    needs_event: bool  # False when every slot is keyed by stream and the event is decoded only if needed


class Binding:
    """Projections bound to a registry: decoders per head type and the slots each event reaches.

    Stored events are routed by their stored type and schema version: head
    events are decoded straight into their Struct; older ones go through
    the registry's chains first; types no projection handles are skipped
    without decoding anything.
    """

    def __init__(self, projections: Sequence[Projection], compiled: CompiledRegistry) -> None:
        self.projections = list(projections)
        self.compiled = compiled
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ConfigError(f"two projections share a name: {sorted({n for n in names if names.count(n) > 1})}")
        tables = [t.name for p in self.projections for t in p.tables]
        if len(set(tables)) != len(tables):
            raise ConfigError(f"two projections write the same table: {sorted({n for n in tables if tables.count(n) > 1})}")
        registry = compiled.registry
        struct_nodes = {cls: node for node, cls in registry.schemas.items()}
        slots: dict[str, list[Slot]] = {}
        for index, projection in enumerate(self.projections):
            if not projection._handlers:
                raise ConfigError(f"projection {projection.name} handles no event type: decorate handlers with @{projection.name}.on(...)")
            bound: set[str] = set()
            for event_type, handler in projection._handlers.items():
                type_name = self._type_name(projection, event_type, struct_nodes)
                if type_name in bound:
                    raise ConfigError(f"projection {projection.name}: two handlers for {type_name}")
                bound.add(type_name)
                struct = self._head_struct(type_name)
                slots.setdefault(type_name, []).append(
                    Slot(projection, index, handler, _arity(handler) >= 3, *self._key(projection, struct))
                )
        self.routes: dict[str, Route] = {}
        for type_name, type_slots in slots.items():
            struct = self._head_struct(type_name)
            decode = msgspec.json.Decoder(struct).decode if struct is not None else msgspec.json.Decoder().decode
            needs_event = any(s.key_kind != KEY_STREAM for s in type_slots)
            self.routes[type_name] = Route(type_name, decode, tuple(type_slots), needs_event)
        self._structs = {t: self._head_struct(t) for t in self.routes}
        self._stored: dict[str, Any] = {}  # stored type name -> (type, fixed version or None) | None
        location = compiled.version_location
        self._suffix = location if isinstance(location, TypeSuffix) else None
        self._meta_key = location.key if isinstance(location, MetadataKey) else None
        self._meta_key_bytes = f'"{self._meta_key}"'.encode() if self._meta_key else b""
        self.version_key_bytes = self._meta_key_bytes
        self._version_decoder = (
            msgspec.json.Decoder(
                msgspec.defstruct(
                    "_Version", [("v", Annotated[int, msgspec.Meta(ge=1)], 1)], rename={"v": self._meta_key}
                )
            ).decode
            if self._meta_key
            else None
        )

    # -------------------------------------------------------------- building
    def _type_name(self, projection: Projection, event_type: Any, struct_nodes: dict[type, tuple[str, int]]) -> str:
        if isinstance(event_type, str):
            return event_type
        node = struct_nodes.get(event_type)
        if node is None:
            raise ConfigError(
                f"projection {projection.name} handles {_type_label(event_type)}, which is not a schema of the upcaster registry"
            )
        if not self.compiled.is_head(node):
            raise ConfigError(
                f"projection {projection.name} handles {node[0]} v{node[1]} ({_type_label(event_type)}), "
                f"not the head schema v{self.compiled.heads.get(node[0])}: projections see head events only"
            )
        return node[0]

    def _head_struct(self, type_name: str) -> type | None:
        head = self.compiled.heads.get(type_name)
        return self.compiled.registry.schema_of((type_name, head)) if head is not None else None

    def _key(self, projection: Projection, struct: type | None) -> tuple[int, Callable[..., Any] | None]:
        key = projection.key
        if key is STREAM:
            return KEY_STREAM, None
        if isinstance(key, str):
            if struct is not None:
                if key not in struct.__struct_fields__:
                    raise ConfigError(f"projection {projection.name}: key field {key!r} is not a field of {struct.__qualname__}")
                return KEY_GETTER, operator.attrgetter(key)
            return KEY_GETTER, _dict_key(key)
        if callable(key):
            return (KEY_INDEXED if _arity(key) >= 2 else KEY_FUNCTION), key
        raise ConfigError(f"projection {projection.name}: key must be a field name, STREAM or a function, got {key!r}")

    # ---------------------------------------------------------------- blame
    def culprit(self, exc: BaseException) -> str | None:
        """Which projection's code raised ``exc``: ``"projection P: handler of T"`` or ``"...: key function"``.

        Found by walking the traceback for the code of a bound handler or key
        function, so that folding pays nothing for it until something fails.
        None when no projection code is on the traceback (eventmig's own code,
        or the database, failed).
        """
        codes: dict[Any, str] = {}
        for route in self.routes.values():
            for slot in route.slots:
                name = slot.projection.name
                code = _code_of(slot.handler)
                if code is not None:
                    codes.setdefault(code, f"projection {name}: handler of {route.type}")
                key = slot.projection.key
                code = _code_of(key) if callable(key) and key is not STREAM else None
                if code is not None:
                    codes.setdefault(code, f"projection {name}: key function")
        tb = exc.__traceback__
        while tb is not None:  # outermost first: the function eventmig called, not a helper it called
            found = codes.get(tb.tb_frame.f_code)
            if found is not None:
                return found
            tb = tb.tb_next
        return None

    # --------------------------------------------------------------- routing
    def handled_types(self) -> set[str]:
        return set(self.routes)

    def resolve(self, stored_type: str, metadata: bytes) -> tuple[str, int] | None:
        """(type, schema version) of a stored event, or None if no projection can use it.

        Events whose type can never become a handled type are recognised from
        the stored type alone, without reading their metadata.
        """
        entry = self._stored.get(stored_type, _MISSING)
        if entry is _MISSING:
            entry = self._stored[stored_type] = self._classify(stored_type)
        if entry is None:
            return None
        type_name, version = entry
        if version is not None:
            return type_name, version
        if self._meta_key_bytes not in metadata:
            return type_name, 1
        return type_name, self._metadata_version(metadata)

    def _classify(self, stored_type: str) -> tuple[str, int | None] | None:
        if self._suffix is not None:
            type_name, version = self._suffix.read(stored_type, {})
        else:
            type_name, version = stored_type, None
        reachable = self._reachable_types(type_name)
        if not reachable & self.routes.keys():
            return None
        return type_name, version

    def _reachable_types(self, type_name: str) -> set[str]:
        """Head types a stored event of ``type_name`` (any version) can become."""
        steps = self.compiled.registry.steps
        found: set[str] = {type_name}
        todo = [node for node in steps if node[0] == type_name]
        seen: set[tuple[str, int]] = set()
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            for target in steps[node].targets:
                found.add(target[0])
                if target in steps:
                    todo.append(target)
        return found

    def _metadata_version(self, metadata: bytes) -> int:
        assert self._version_decoder is not None
        try:
            return self._version_decoder(metadata).v
        except msgspec.ValidationError as exc:
            raise UpcastError(f"metadata {self._meta_key!r}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise UpcastError(f"metadata is not a JSON object: {exc}") from None

    def metadata_version(self) -> Callable[[bytes], int] | None:
        """A fast reader of the schema version in metadata bytes (None: it is not kept in metadata)."""
        if self._version_decoder is None:
            return None
        key, decode = self._meta_key_bytes, self._version_decoder

        def version(metadata: bytes) -> int:
            return decode(metadata).v if key in metadata else 1

        return version

    def entry(self, stored_type: str) -> tuple[str, int | None, int] | None:
        """(type, version fixed by the stored type name or None, head version) for a stored type name.

        Types unknown to the registry are their own head (version 0 stands for both).
        """
        classified = self._classify(stored_type)
        if classified is None:
            return None
        type_name, version = classified
        if not self.compiled.knows(type_name):
            return type_name, 0, 0
        return type_name, version, self.compiled.heads.get(type_name, -1)

    def head_events(self, row: Sequence[Any], type_name: str, version: int) -> list[tuple[Route, Any]]:
        """The head events a stored event of an older schema becomes, as head Structs, with their routes."""
        compiled = self.compiled
        context = None
        if compiled.needs_context:
            stream, _stream_version, _position, event_id, _type, _data, metadata, recorded_at = row
            context = EventContext(
                stream, type_name, version, msgspec.json.decode(metadata) if metadata else {}, event_id, recorded_at
            )
        out = []
        for t, _v, payload, path in compiled.upcast_payloads(type_name, version, row[5], context):
            route = self.routes.get(t)
            if route is not None:
                out.append((route, self._as_head(t, payload, path)))
        return out

    def _as_head(self, type_name: str, payload: Any, path: tuple[str, ...]) -> Any:
        """What a chain produced, as the head Struct its handlers expect (or builtins for schemaless types)."""
        struct = self._structs.get(type_name)
        if struct is None:
            return msgspec.to_builtins(payload) if isinstance(payload, msgspec.Struct) else payload
        if payload.__class__ is struct:
            return payload
        try:
            return msgspec.convert(payload, struct, from_attributes=True)
        except msgspec.ValidationError as exc:
            via = f" (after {' -> '.join(path)})" if path else ""
            raise UpcastError(f"{type_name} payload does not match its head schema{via}: {exc}") from None

    def is_head(self, type_name: str, version: int) -> bool:
        head = self.compiled.heads.get(type_name)
        return head is None and not self.compiled.knows(type_name) or head == version

    # ------------------------------------------------------- fast decoding
    def fast_path(
        self, type_name: str, version: int
    ) -> tuple[str | None, Callable[[bytes], Any], Callable[[Any], Any] | None] | None:
        """How a stored payload of ``(type, version)`` becomes head events with the least work.

        Returns ``(head type, decode, then)``: ``decode`` reads the stored
        bytes (into the head Struct for a head event, into the first step's
        input type otherwise) and ``then`` (None for a head event) runs the
        chain's steps one after another, without the registry's general
        machinery. When every step on the way has one output, ``then`` gives
        the head event of ``head type``; with a split, ``head type`` is None
        and ``then`` gives a list of ``(head type, event)``. Either returns
        :data:`SLOW` when a step returns anything less plain than its declared
        Struct or a dict: :meth:`general_path` then does what the registry's
        chains do. None when a step takes the event's context (or there is no
        chain): the general path it is, for every event.
        """
        compiled = self.compiled
        node = (type_name, version)
        if not compiled.knows(type_name) or compiled.is_head(node):
            route = self.routes.get(type_name)
            if route is None:
                return None
            return type_name, route.decode, None
        step = compiled.registry.steps.get(node)
        if step is None:
            return None
        plain = self._plain_step(node, ())
        if plain is None:
            return None
        out_type, then = plain
        decode = msgspec.json.Decoder(step.input_type).decode if step.input_type is not None else _json_decode
        return out_type, decode, then

    def single_step(self, type_name: str, version: int) -> tuple[Callable[[bytes], Any], Callable[[Any], Any], type, str] | None:
        """``(decode, step, head Struct, step name)`` when ``(type, version)`` is one typed step from its head.

        The commonest chain (a rename, a unit conversion): callers fuse it with
        what follows. A step returning anything but the head Struct needs
        :meth:`general_path`.
        """
        registry = self.compiled.registry
        step = registry.steps.get((type_name, version))
        if step is None or step.takes_context or step.input_type is None or len(step.targets) != 1:
            return None
        target = step.targets[0]
        head = registry.schema_of(target)
        if head is None or target in registry.steps or not self.compiled.is_head(target):
            return None
        return msgspec.json.Decoder(step.input_type).decode, step.fn, head, step.name

    def _plain_step(self, node: tuple[str, int], path: tuple[str, ...]) -> tuple[str | None, Callable[[Any], Any]] | None:
        """The steps from ``node`` on, for a payload already in its step's input form."""
        registry = self.compiled.registry
        step = registry.steps.get(node)
        if step is None or step.takes_context:
            return None
        path = (*path, step.name)
        if not step.targets:

            def dropped(payload: Any) -> Any:
                result = run_step(step, payload)
                return [] if result is None else SLOW

            return None, dropped
        continued = []
        for target in step.targets:
            found = self._continue(target, path)
            if found is None:
                return None
            continued.append((target, *found))
        if len(continued) == 1:
            target, out_type, cont, direct = continued[0]
            declared = registry.schemas.get(target)
            if direct:  # the target is a head Struct: a step returning it is done
                head_struct = declared

                def single_head(payload: Any) -> Any:
                    result = run_step(step, payload)
                    if result.__class__ is head_struct:
                        return result
                    return cont(result) if result.__class__ is dict else SLOW

                return out_type, single_head

            def single(payload: Any) -> Any:
                result = run_step(step, payload)
                cls = result.__class__
                return cont(result) if cls is declared or cls is dict else SLOW

            return out_type, single
        by_class: dict[Any, tuple[str | None, Callable[[Any], Any]]] = {}
        for target, out_type, cont, _direct in continued:
            declared = registry.schemas.get(target)
            if declared is None or declared in by_class:
                return None  # outputs told apart by their class only
            by_class[declared] = (out_type, cont)

        def split(payload: Any) -> Any:
            result = run_step(step, payload)
            if result.__class__ is not list:
                return SLOW
            out: list[tuple[str, Any]] = []
            for item in result:
                found = by_class.get(item.__class__)
                if found is None:
                    return SLOW
                out_type, cont = found
                event = cont(item)
                if event is SLOW:
                    return SLOW
                if out_type is None:
                    out.extend(event)
                else:
                    out.append((out_type, event))
            return out

        return None, split

    def _continue(
        self, target: tuple[str, int], path: tuple[str, ...]
    ) -> tuple[str | None, Callable[[Any], Any], bool] | None:
        """What becomes of a step's output for ``target``: ``(head type or None, cont, target is a head Struct)``."""
        compiled = self.compiled
        steps = compiled.registry.steps
        schema = compiled.registry.schema_of(target)
        fields = declared_fields(schema) if schema is not None else None  # what a dict for the target may hold
        made_by = path[-1] if path else ""
        if target in steps:
            rest = self._plain_step(target, path)
            if rest is None:
                return None
            out_type, then = rest
            want = steps[target].input_type
            if want is not None:

                def typed(obj: Any) -> Any:
                    return then(obj) if obj.__class__ is want else SLOW

                return out_type, typed, False

            def untyped(obj: Any) -> Any:
                if obj.__class__ is dict:
                    if fields is not None and not obj.keys() <= fields:
                        raise undeclared(made_by, target, obj, fields)
                    return then(obj)
                return then(msgspec.to_builtins(obj)) if isinstance(obj, msgspec.Struct) else SLOW

            return out_type, untyped, False
        if not compiled.is_head(target):
            return None
        type_name = target[0]
        struct = compiled.registry.schema_of(target)
        if struct is None:

            def schemaless(obj: Any) -> Any:
                return msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else obj

            return type_name, schemaless, False
        via = " -> ".join(path)

        def head(obj: Any) -> Any:
            if obj.__class__ is struct:
                return obj
            if obj.__class__ is not dict:
                return SLOW
            if not obj.keys() <= fields:  # type: ignore[operator]
                raise undeclared(made_by, target, obj, fields)  # type: ignore[arg-type]
            try:
                return msgspec.convert(obj, struct)
            except msgspec.ValidationError as exc:
                raise UpcastError(f"{type_name} payload does not match its head schema (after {via}): {exc}") from None

        return type_name, head, True

    def general_path(self, type_name: str, version: int) -> Callable[[Sequence[Any]], list[tuple[str, Any]]]:
        """``row -> [(head type, head event)]`` through the registry's chains, for whatever they handle."""
        if self.compiled.needs_context:
            return lambda row: [(route.type, event) for route, event in self.head_events(row, type_name, version)]
        upcast = self.compiled.upcast_payloads
        structs = self._structs
        as_head = self._as_head
        routes = self.routes

        def run(row: Sequence[Any]) -> list[tuple[str, Any]]:
            out = []
            for t, _v, payload, path in upcast(type_name, version, row[5]):
                if t in routes:
                    out.append((t, payload if payload.__class__ is structs[t] else as_head(t, payload, path)))
            return out

        return run


def _code_of(fn: Any) -> Any:
    """The code object a callable runs: a function's, a bound method's, a partial's or a callable instance's."""
    for candidate in (fn, getattr(fn, "__func__", None), getattr(fn, "func", None), getattr(type(fn), "__call__", None)):
        code = getattr(candidate, "__code__", None)
        if code is not None:
            return code
    return None


def _dict_key(field: str) -> Callable[[Any], Any]:
    def key(event: Any) -> Any:
        return event.get(field) if isinstance(event, dict) else getattr(event, field, None)

    return key


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 3
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def _type_label(event_type: Any) -> str:
    return event_type if isinstance(event_type, str) else getattr(event_type, "__qualname__", repr(event_type))


def _state_label(state_type: Any) -> str:
    if isinstance(state_type, type) and issubclass(state_type, msgspec.Struct):
        return f"{state_type.__qualname__}({','.join(state_type.__struct_fields__)})"
    return repr(state_type)


def _events_of(binding: Binding, row: Sequence[Any]) -> list[tuple[Route, Any]]:
    resolved = binding.resolve(row[4], row[6])
    if resolved is None:
        return []
    type_name, version = resolved
    route = binding.routes.get(type_name)
    if binding.is_head(type_name, version):
        return [(route, route.decode(row[5]))] if route is not None else []
    return binding.head_events(row, type_name, version)
