"""Where a stream whose digests differ first differs, and in what: read both sides of it again.

Digests say *that* a stream differs, cheaply, for every stream; an operator
needs to know *how*. Only the streams the digests flagged (a few, capped)
are read again here, on both sides: the source stream upcast as migrate
does (:meth:`~eventmig.model.transform.Transformer.expected`, numbered as migrate
numbers it), the target stream as stored. The first stream version at which
they disagree is reported with the field that differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from eventmig.ports import EventStore
from eventmig.model.transform import MALFORMED, Actual, BatchCounts, Expected, Transformer

#: the fields of an event, in the order a difference is looked for; "version" (an event at another
#: stream version than expected), "missing", "unexpected" and "malformed" complete the vocabulary
FIELDS = ("type", "schema version", "payload", "metadata", "event id", "record time")


class StreamDifference(msgspec.Struct):
    """The first difference in one stream of the target: at which stream version, and what."""

    stream: str
    #: version | type | schema version | payload | metadata | event id | record time | missing | unexpected
    #: | malformed; or digest, when the stream reads the same on both sides once read again (it changed meanwhile)
    field: str
    #: the first stream version where the two sides disagree (None: not known)
    version: int | None
    #: the commit position of the event there, in the target (in the source for a source event that could
    #: not be read); None when the target has no event at that version
    position: int | None = None
    detail: str = ""


def explain_streams(
    streams: Sequence[str],
    *,
    source: EventStore,
    target: EventStore,
    transformer: Transformer,
    source_until: int | None,
    target_until: int | None,
    first_version: int,
    stream_map: Mapping[str, str],
) -> list[StreamDifference]:
    """The first difference of each of ``streams`` (target names), reading both sides of each again."""
    back = {new: old for old, new in stream_map.items()}
    out = []
    for stream in streams:
        if stream in back:
            origin: str | None = back[stream]
        else:
            origin = None if stream in stream_map else stream  # renamed away: nothing of the source lands here
        expected = _expected(source, origin, source_until, transformer) if origin is not None else []
        actual = _rows(target, stream, target_until)
        out.append(first_difference(stream, expected, actual, transformer.actual, first_version))
    return out


def _rows(store: EventStore, stream: str, until: int | None) -> list[tuple[Any, ...]]:
    if until is None:
        return []
    return [msgspec.structs.astuple(e) for e in store.read_stream(stream) if e.position <= until]


def _expected(source: EventStore, stream: str, until: int | None, transformer: Transformer) -> list[Expected]:
    rows = sorted(_rows(source, stream, until), key=lambda r: r[2])  # numbered in commit order, as migrate does
    return list(transformer.expected(rows, BatchCounts(), []))


def first_difference(
    stream: str,
    expected: Sequence[Expected],
    rows: Sequence[tuple[Any, ...]],
    read: Callable[[tuple[Any, ...]], Actual],
    first_version: int,
) -> StreamDifference:
    """Compare a stream's expected events (numbered from ``first_version``) with its target rows."""
    wanted = {first_version + i: _content(e[1:]) for i, e in enumerate(expected)}
    found: dict[Any, list[tuple[tuple[Any, ...], Any]]] = {}
    for row in rows:
        try:
            actual: Any = read(row)
            content: Any = _content(actual[3:])
        except MALFORMED as exc:
            content = exc
        found.setdefault(row[1], []).append((row, content))
    wanted_contents = set(wanted.values())
    found_contents = {c for events in found.values() for _, c in events if not isinstance(c, Exception)}
    for version in sorted(wanted.keys() | found.keys(), key=_order):
        want = wanted.get(version)
        got = found.get(version, [])
        position = got[0][0][2] if got else None
        if any(isinstance(c, Exception) for _, c in got):
            row, exc = next((r, c) for r, c in got if isinstance(c, Exception))
            return StreamDifference(stream, "malformed", version, row[2], f"unreadable event: {exc}")
        if len(got) > 1:
            return StreamDifference(stream, "unexpected", version, got[1][0][2], f"{len(got)} events at version {version}")
        have = got[0][1] if got else None
        if want == have:
            continue
        if have is not None and have in wanted_contents or want is not None and want in found_contents:
            where = _where(have, wanted) if have is not None and have in wanted_contents else None
            detail = f"the event expected at version {where} is here" if where is not None else (
                "the event expected here is at another version")
            return StreamDifference(stream, "version", version, position, detail)
        if want is None:
            return StreamDifference(stream, "unexpected", version, position, "no event is expected at this version")
        if have is None:
            return StreamDifference(stream, "missing", version, None, "the target has no event at this version")
        name = next(f for f, a, b in zip(FIELDS, want, have) if a != b)
        return StreamDifference(stream, name, version, position, _show(name, want, have))
    return StreamDifference(stream, "digest", None, None, "the stream's digests differ, but it reads the same again: "
                            "did the epoch change during verification?")


def _content(fields: Sequence[Any]) -> tuple[Any, ...]:
    """(type, schema version, payload, metadata, event id, record time) of an expected or actual event."""
    return tuple(fields[:6])


def _order(version: Any) -> tuple[int, Any]:
    """Stream versions in order; a version that is not a number has no place in it, and comes first."""
    return (1, version) if isinstance(version, int) else (0, str(version))


def _where(content: Any, wanted: Mapping[int, Any]) -> int | None:
    return next((v for v, c in wanted.items() if c == content), None)


def _show(name: str, want: Any, have: Any) -> str:
    """What was expected and what is there, short enough for one line."""
    index = FIELDS.index(name)

    def short(value: Any) -> str:
        text = value.decode(errors="replace") if isinstance(value, bytes) else repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    return f"expected {short(want[index])}, found {short(have[index])}"
