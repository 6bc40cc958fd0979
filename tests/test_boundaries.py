"""Boundary values: run before any generated event, valid for their schema, the same on every run."""

from __future__ import annotations

import datetime
import enum
import sys
import uuid
from typing import Annotated, Literal

import msgspec
import pytest

from eventmig import Registry
from eventmig.testing.boundaries import boundary_payloads
from eventmig.testing.checks import check_upcasters


class Kind(enum.Enum):
    A = "a"
    B = "b"


class Inner(msgspec.Struct):
    code: str
    size: int = 0


class Everything(msgspec.Struct):
    text: str
    count: int
    ratio: float
    flag: bool
    kind: Kind
    level: Literal["low", "high"]
    when: datetime.datetime
    day: datetime.date
    id: uuid.UUID
    tags: list[str]
    attrs: dict[str, int]
    inner: Inner
    maybe: int | None = None
    bounded: Annotated[float, msgspec.Meta(gt=0, lt=10)] = 1.0
    small: Annotated[int, msgspec.Meta(ge=-5, le=5, multiple_of=5)] = 0
    code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{2}$")] = "ABC-12"
    short: Annotated[str, msgspec.Meta(min_length=2, max_length=3)] = "ab"


def values_of(payloads: list, key: str) -> list:
    return [p[key] for p in payloads if key in p]


def test_every_payload_is_valid_and_the_simplest_comes_first() -> None:
    payloads = boundary_payloads(Everything)
    decode = msgspec.json.Decoder(Everything).decode
    for payload in payloads:
        decode(msgspec.json.encode(payload))  # raises if the schema refuses it
    first = payloads[0]
    assert first["text"] == "" and first["count"] == 0 and first["ratio"] == 0.0 and first["flag"] is False
    assert first["tags"] == [] and first["attrs"] == {} and first["maybe"] is None
    assert payloads[1] == {k: v for k, v in first.items() if k in Everything.__struct_fields__[:12]}  # defaults left out
    assert payloads == boundary_payloads(Everything)  # the same every time


def test_each_field_type_gets_its_boundary_values() -> None:
    payloads = boundary_payloads(Everything, limit=10_000)
    texts = values_of(payloads, "text")
    for s in ["", " ", " padded ", "\x00", "é", "ß", "İ", "𝄞"]:
        assert s in texts
    assert any(len(s) > 40 for s in texts)
    ints = values_of(payloads, "count")
    for n in [0, 1, -1, 2**31 - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]:
        assert n in ints
    ratios = [msgspec.json.encode(v) for v in values_of(payloads, "ratio")]
    for f in [b"-0.0", b"0.29", b"12.29", b"1e-7", b"1e16", b"5e-324", b"2.2250738585072014e-308",
              b"1.7976931348623157e308", b"-1.7976931348623157e308", b"12"]:
        assert f in ratios, f
    assert all(v == v for v in values_of(payloads, "ratio"))  # no NaN: JSON cannot hold it
    assert set(values_of(payloads, "kind")) == {"a", "b"} and set(values_of(payloads, "level")) == {"low", "high"}
    assert "1970-01-01T00:00:00Z" in values_of(payloads, "when") and "9999-12-31" in values_of(payloads, "day")
    assert "00000000-0000-0000-0000-000000000000" in values_of(payloads, "id")
    assert [] in values_of(payloads, "tags") and [""] in values_of(payloads, "tags")
    assert {} in values_of(payloads, "attrs") and {"": 0} in values_of(payloads, "attrs")
    assert {"code": " ", "size": 0} in values_of(payloads, "inner") and {"code": "", "size": 1} in values_of(payloads, "inner")
    # msgspec.Meta bounds, and the values just inside strict ones
    bounded = values_of(payloads, "bounded")
    assert 5e-324 in bounded and 9.999999999999998 in bounded and 0.0 not in bounded and 10.0 not in bounded
    assert set(values_of(payloads, "small")) == {-5, 0, 5}
    assert all(len(s) in (2, 3) for s in values_of(payloads, "short"))
    assert {"aa", "aaa", "𝄞𝄞"} <= set(values_of(payloads, "short"))
    assert values_of(payloads, "code") and all(c[:3].isupper() for c in values_of(payloads, "code"))


def test_a_schema_without_a_valid_payload_gets_none() -> None:
    class Impossible(msgspec.Struct):
        code: Annotated[str, msgspec.Meta(min_length=8, max_length=4)]

    assert boundary_payloads(Impossible) == []


def tiny(body) -> Registry:
    r = Registry()

    @r.schema("Reading", 1)
    class ReadingV1(msgspec.Struct):
        label: str
        value: float

    @r.schema("Reading", 2)
    class Reading(msgspec.Struct):
        label: str
        value: float

    @r.upcaster
    def v2(e: ReadingV1) -> Reading:
        return body(e, Reading)

    return r


@pytest.mark.parametrize(("body", "value"), [
    (lambda e, R: R(e.label, float(str(e.value).split(".")[0] + "." + str(e.value).split(".")[1])), "1e-7"),
    (lambda e, R: R(e.label.encode("ascii").decode(), e.value), "é"),
    (lambda e, R: R(e.label, e.value) if len(e.label) == len(e.label.encode("utf-16-le")) // 2 else 1 / 0, "𝄞"),
    (lambda e, R: R(e.label, e.value * 2 / 2 if abs(e.value) < sys.float_info.max / 2 else 1 / 0), "1.7976931348623157e308"),
])
def test_bugs_at_boundaries_are_caught_with_one_generated_example(body, value) -> None:
    """With a budget of one generated event, only the explicit boundary values can find these."""
    report = check_upcasters(tiny(body), examples=1)
    assert not report.ok, report.format()
    example = report.failures[0][1].example
    assert value in msgspec.json.encode(example["data"]).decode(), report.format()


def test_the_command_and_the_library_share_one_example_budget() -> None:
    from eventmig.config import DEFAULT_CHECK_EXAMPLES, Settings
    from eventmig.testing.profile import DEFAULT_EXAMPLES, check_settings

    assert DEFAULT_CHECK_EXAMPLES == DEFAULT_EXAMPLES == Settings().check_examples == check_settings().max_examples
    assert check_settings().derandomize and check_settings().database is None
