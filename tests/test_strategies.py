"""Values from eventmig.testing.strategies must be values msgspec accepts.

For each family of msgspec types, generated values must round-trip through
msgspec JSON and msgpack, and through ``to_builtins``/``convert``, into equal
values of the same type, and must honour ``msgspec.Meta`` constraints.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import uuid
from decimal import Decimal
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    NotRequired,
    TypedDict,
    TypeVar,
)

import msgspec
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st
from msgspec import UNSET, Meta, UnsetType

from eventmig.testing.strategies import builtins_from_type, from_type, register_strategy

FAST = settings(max_examples=30, deadline=None)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


UserId = NewType("UserId", str)


class Address(msgspec.Struct, rename="camel"):
    street_name: str
    postal_code: Annotated[str, Meta(min_length=4, max_length=8)]


class Point(msgspec.Struct, array_like=True):
    x: float
    y: float


class AccountEvent(msgspec.Struct, tag_field="kind"):
    account: uuid.UUID


class Opened(AccountEvent, tag="opened"):
    owner: str


class Closed(AccountEvent, tag="closed"):
    reason: str | None = None


class Tree(msgspec.Struct):
    label: str
    children: list[Tree] = []


class Add(msgspec.Struct, tag=True):
    left: Expr
    right: Expr


class Lit(msgspec.Struct, tag=True):
    value: int


Expr = Add | Lit


class Folder(msgspec.Struct):
    name: str
    files: list[File]


class File(msgspec.Struct):
    name: str
    subfolder: Folder | None = None


class Settings(msgspec.Struct, omit_defaults=True):
    retries: int = 3
    tags: list[str] = msgspec.field(default_factory=list)
    note: str | None = None
    patch: int | UnsetType = UNSET


T = TypeVar("T")


class Box(msgspec.Struct, Generic[T]):
    item: T


@dataclasses.dataclass
class Money:
    amount: Decimal
    currency: Literal["EUR", "USD"]


class Headers(TypedDict):
    trace_id: str
    attempt: NotRequired[int]


class Span(NamedTuple):
    start: int
    end: int = 0


class Everything(msgspec.Struct, kw_only=True):
    integer: int
    number: float
    text: str
    raw_bytes: bytes
    buffer: bytearray
    flag: bool
    nothing: None
    at: datetime.datetime
    at_utc: Annotated[datetime.datetime, Meta(tz=True)]
    at_local: Annotated[datetime.datetime, Meta(tz=False)]
    day: datetime.date
    clock: datetime.time
    duration: datetime.timedelta
    ident: uuid.UUID
    amount: Decimal
    color: Color
    priority: Priority
    channel: Channel
    level: Literal[1, 2, 3]
    mode: Literal["r", "w"] | None
    ints: list[int]
    pair: tuple[int, str]
    rest: tuple[str, ...]
    tags: set[str]
    frozen: frozenset[int]
    by_id: dict[uuid.UUID, int]
    by_color: dict[Color, list[float]]
    by_number: dict[int, str]
    maybe: int | None
    either: int | str
    user: UserId
    address: Address
    point: Point
    event: Opened | Closed
    tree: Tree
    expr: Expr
    folder: Folder
    money: Money
    headers: Headers
    span: Span
    settings: Settings
    box: Box[int]
    anything: Any
    percent: Annotated[int, Meta(ge=0, le=100)]


def assert_round_trips(value: Any, tp: Any, *, json: bool = True) -> None:
    """``value`` survives msgpack, JSON and builtins as an equal value of ``tp``."""
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=tp) == value
    if json:
        assert msgspec.json.decode(msgspec.json.encode(value), type=tp) == value
        assert msgspec.convert(msgspec.to_builtins(value), tp) == value


def params(*types: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("tp", [pytest.param(tp, id=repr(tp)) for tp in types])


@params(
    int,
    float,
    Annotated[int, Meta(ge=-5, lt=5)],
    Annotated[float, Meta(gt=0.0, le=1.0)],
    bool,
    None,
)
@FAST
@given(data=st.data())
def test_numbers_bools_and_none_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(str, bytes, bytearray, memoryview, Annotated[bytes, Meta(min_length=1, max_length=3)])
@FAST
@given(data=st.data())
def test_text_and_binary_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(
    datetime.datetime,
    Annotated[datetime.datetime, Meta(tz=True)],
    Annotated[datetime.datetime, Meta(tz=False)],
    datetime.date,
    datetime.time,
    Annotated[datetime.time, Meta(tz=True)],
    Annotated[datetime.time, Meta(tz=False)],
    datetime.timedelta,
)
@FAST
@given(data=st.data())
def test_temporal_types_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(uuid.UUID, Decimal, Color, Priority, Channel, Literal[1, "a", None], Literal[True, 7])
@FAST
@given(data=st.data())
def test_identifiers_decimals_enums_and_literals_round_trip(tp: Any, data: st.DataObject) -> None:
    value = data.draw(from_type(tp))
    assert_round_trips(value, tp)
    if tp is Decimal:
        assert value.is_finite()


@params(
    list[int],
    list,
    tuple[int, str, bool],
    tuple[float, ...],
    tuple,
    set[str],
    frozenset[int],
    set[Any],
    frozenset[Decimal],
    Annotated[list[int], Meta(min_length=1, max_length=3)],
)
@FAST
@given(data=st.data())
def test_sequences_and_sets_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(
    dict[str, int],
    dict[int, str],
    dict[uuid.UUID, float],
    dict[Color, str],
    dict[Priority, str],
    dict[Literal["a", "b"], int],
    dict[datetime.date, int],
    dict[Decimal, bool],
    dict[str, Any],
    dict,
    Any,
)
@FAST
@given(data=st.data())
def test_dicts_and_any_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(
    int | None, int | float, int | str, str | int | None, Decimal | float, Opened | Closed, Expr
)
@FAST
@given(data=st.data())
def test_unions_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(Address, Point, Opened, Settings, Box[int], Money, Headers, Span, UserId)
@FAST
@given(data=st.data())
def test_object_types_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@params(Tree, Folder, Expr)
@FAST
@given(data=st.data())
def test_recursive_types_round_trip(tp: Any, data: st.DataObject) -> None:
    assert_round_trips(data.draw(from_type(tp)), tp)


@settings(max_examples=60, deadline=None)
@given(from_type(Everything))
def test_a_struct_mixing_every_family_round_trips(event: Everything) -> None:
    assert_round_trips(event, Everything)


def test_recursive_types_reach_some_depth_yet_stay_finite() -> None:
    def depth(tree: Tree) -> int:
        return 1 + max((depth(child) for child in tree.children), default=0)

    assert depth(find(from_type(Tree), lambda tree: depth(tree) >= 3)) >= 3
    assert isinstance(
        find(from_type(Expr), lambda e: isinstance(e, Add) and isinstance(e.left, Add)), Add
    )


def test_mutually_recursive_types_are_cached_and_reused() -> None:
    assert from_type(Folder) is from_type(Folder)
    assert from_type(File) is from_type(File)
    nested = find(from_type(File), lambda f: f.subfolder is not None and f.subfolder.files)
    assert isinstance(nested.subfolder.files[0], File)


@FAST
@given(
    from_type(Annotated[int, Meta(ge=3, le=7)]),
    from_type(Annotated[int, Meta(gt=-10, lt=10, multiple_of=4)]),
)
def test_int_bounds_and_multiples_are_honoured(bounded: int, multiple: int) -> None:
    assert 3 <= bounded <= 7
    assert -10 < multiple < 10 and multiple % 4 == 0


@FAST
@given(from_type(int), from_type(list[int]), from_type(dict[int, int]))
def test_int_never_yields_bool(value: int, values: list[int], mapping: dict[int, int]) -> None:
    assert all(type(v) is int for v in [value, *values, *mapping, *mapping.values()])


@FAST
@given(
    from_type(Annotated[float, Meta(ge=-1.5, lt=2.5)]),
    from_type(Annotated[float, Meta(multiple_of=0.25, gt=0, le=100)]),
    from_type(Annotated[float, Meta(multiple_of=0.1, ge=-10, le=10)]),
)
def test_float_bounds_and_multiples_are_honoured(
    bounded: float, quarter: float, tenth: float
) -> None:
    assert -1.5 <= bounded < 2.5
    assert 0 < quarter <= 100 and quarter % 0.25 == 0
    # msgspec checks multiple_of exactly (fmod), so few multiples of 0.1 qualify.
    msgspec.convert(tenth, Annotated[float, Meta(multiple_of=0.1, ge=-10, le=10)])


@FAST
@given(from_type(float), from_type(list[float]))
def test_floats_are_finite_by_default(value: float, values: list[float]) -> None:
    assert all(v == v and abs(v) != float("inf") for v in [value, *values])


@FAST
@given(
    from_type(Annotated[str, Meta(min_length=2, max_length=5)]),
    from_type(Annotated[bytes, Meta(min_length=2, max_length=5)]),
    from_type(Annotated[list[int], Meta(min_length=2, max_length=5)]),
    from_type(Annotated[set[int], Meta(min_length=2, max_length=5)]),
    from_type(Annotated[dict[str, int], Meta(min_length=2, max_length=5)]),
)
def test_length_bounds_are_honoured(
    text: str, data: bytes, items: list[int], members: set[int], mapping: dict[str, int]
) -> None:
    assert all(2 <= len(v) <= 5 for v in (text, data, items, members, mapping))


@FAST
@given(
    from_type(Annotated[str, Meta(pattern=r"^evt-[0-9a-f]{4}$")]),
    from_type(Annotated[str, Meta(pattern="ab", max_length=6)]),
)
def test_patterns_are_honoured_with_search_semantics(anchored: str, unanchored: str) -> None:
    assert re.search(r"^evt-[0-9a-f]{4}$", anchored)
    assert "ab" in unanchored and len(unanchored) <= 6


@FAST
@given(
    from_type(Annotated[datetime.datetime, Meta(tz=True)]),
    from_type(Annotated[datetime.datetime, Meta(tz=False)]),
    from_type(Annotated[datetime.time, Meta(tz=True)]),
    from_type(Annotated[datetime.time, Meta(tz=False)]),
)
def test_timezone_requirements_are_honoured(
    aware: datetime.datetime, naive: datetime.datetime, clock: datetime.time, local_clock: datetime.time
) -> None:
    assert aware.tzinfo is not None and naive.tzinfo is None
    assert clock.tzinfo is not None and local_clock.tzinfo is None


def test_datetimes_cover_both_aware_and_naive_when_unconstrained() -> None:
    find(
        from_type(datetime.datetime),
        lambda d: d.tzinfo is not None and d.utcoffset() != datetime.timedelta(0),
    )
    find(from_type(datetime.datetime), lambda d: d.tzinfo is None)


def test_unset_defaults_and_optional_keys_are_sometimes_left_out() -> None:
    find(from_type(Settings), lambda s: s.patch is UNSET)
    find(from_type(Settings), lambda s: s.patch is not UNSET)
    find(from_type(Headers), lambda h: "attempt" not in h)
    find(from_type(Headers), lambda h: "attempt" in h)


@FAST
@given(from_type(msgspec.msgpack.Ext))
def test_msgpack_ext_round_trips_through_msgpack(ext: msgspec.msgpack.Ext) -> None:
    assert_round_trips(ext, msgspec.msgpack.Ext, json=False)


def is_builtin(value: Any) -> bool:
    if isinstance(value, dict):
        return all(is_builtin(k) and is_builtin(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_builtin(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


@FAST
@given(builtins_from_type(Everything))
def test_builtins_form_is_plain_data_that_converts_back(payload: Any) -> None:
    assert is_builtin(payload)
    event = msgspec.convert(payload, Everything)
    # Sets come out as lists in arbitrary order: compare typed values.
    assert msgspec.convert(msgspec.to_builtins(event), Everything) == event


class Cents:
    """A type msgspec only knows through enc/dec hooks."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cents) and other.value == self.value


class Invoice(msgspec.Struct):
    total: Cents
    lines: list[Cents]


def test_custom_types_need_and_use_a_registered_strategy() -> None:
    with pytest.raises(TypeError, match="register_strategy"):
        from_type(Invoice)
    register_strategy(Cents, st.builds(Cents, st.integers(0, 10**6)))

    encoder = msgspec.json.Encoder(enc_hook=lambda c: c.value)
    decoder = msgspec.json.Decoder(Invoice, dec_hook=lambda tp, v: Cents(v))

    @FAST
    @given(from_type(Invoice))
    def round_trips(invoice: Invoice) -> None:
        assert decoder.decode(encoder.encode(invoice)) == invoice

    round_trips()


Sku = Annotated[str, Meta(pattern=r"^[A-Z]{3}-\d{4}$", description="stock keeping unit")]


def test_registered_strategy_overrides_the_type_wherever_it_appears() -> None:
    skus = ["ABC-0001", "XYZ-9999"]
    register_strategy(Annotated[str, Meta(pattern=r"^[A-Z]{3}-\d{4}$")], st.sampled_from(skus))

    @FAST
    @given(from_type(dict[Sku, list[Sku]]))
    def only_registered_values(stock: dict[str, list[str]]) -> None:
        assert {*stock, *(s for v in stock.values() for s in v)} <= set(skus)

    only_registered_values()


class Opaque:
    """Known to msgspec only as a custom type."""


def test_unsupported_types_are_refused_with_a_pointer_to_registration() -> None:
    with pytest.raises(TypeError, match=r"values of test_strategies\.Opaque; use .*register_strategy"):
        from_type(dict[str, Opaque])


class Envelope(msgspec.Struct):
    """A payload that keeps a sub-document unparsed."""

    kind: str
    body: msgspec.Raw
    extra: msgspec.Raw | None = None  # msgspec reads only null into this union


@FAST
@given(from_type(Envelope), builtins_from_type(Envelope))
def test_raw_values_hold_json_and_round_trip_through_json(envelope: Envelope, payload: Any) -> None:
    assert isinstance(envelope.body, msgspec.Raw)
    msgspec.json.decode(envelope.body)  # valid JSON
    assert msgspec.json.decode(msgspec.json.encode(envelope), type=Envelope) == envelope
    assert is_builtin(payload)  # the JSON inlined, as a stored payload holds it
    decoded = msgspec.json.decode(msgspec.json.encode(payload), type=Envelope)
    assert msgspec.json.decode(decoded.body) == payload["body"]


def test_strategies_are_cached_per_type() -> None:
    assert from_type(Everything) is from_type(Everything)
    assert from_type(list[Address]) is from_type(list[Address])


class Reading(msgspec.Struct):
    sensor: Annotated[str, Meta(min_length=3, max_length=8)]
    celsius: Annotated[float, Meta(ge=-90, le=60)]


def accepted(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(msgspec.to_builtins(value), tp)
    except msgspec.ValidationError:
        return False
    return True


def test_hypothesis_from_type_ignores_meta_constraints_but_ours_does_not() -> None:
    invalid = find(st.from_type(Reading), lambda r: not accepted(r, Reading))
    assert not accepted(invalid, Reading)

    @settings(max_examples=100, deadline=None)
    @given(from_type(Reading))
    def always_valid(reading: Reading) -> None:
        assert accepted(reading, Reading)

    always_valid()
