"""Row digests of read-model tables: order-independent sums of row hashes, summed as rows are written or read.

A rebuild digests the rows it writes into a shadow table (:class:`WrittenDigest`)
so that verification reads a shadow table back only when its digest cannot
settle the comparison with the live one (:func:`merge_compare`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from eventmig.ports_readmodels import TableDiff

_encode_row = msgspec.json.Encoder(order="sorted").encode
_blake2b = hashlib.blake2b


# ------------------------------------------------------------------ digests
# A table's digest combines, independently of row order, the hash of each
# row (as :func:`eventmig.model.checksums.combine` does for streams); rows are
# hashed over their JSON encoding, primary key included, so a row's part
# names its key too.
_MOD = 1 << 128


def _plain(value: Any) -> Any:
    """One representation per value whichever side it came from (SQLite has no booleans)."""
    if value.__class__ is bool:
        return int(value)
    if value.__class__ is memoryview:
        return bytes(value)
    return value


def _needs_plain(table: sa.Table) -> bool:
    return any(isinstance(c.type, (sa.Boolean, sa.LargeBinary)) for c in table.columns)


def _row_part(row: Sequence[Any], plain: bool) -> int:
    """A row's part of its table's digest."""
    if plain:
        row = [_plain(v) for v in row]
    return int.from_bytes(_blake2b(_encode_row(row), digest_size=16).digest(), "big")


def _key_text(row: Sequence[Any], pk: Sequence[int], plain: bool) -> str:
    """A row's primary key as JSON (the samples of differing rows)."""
    return _encode_row([_plain(row[i]) if plain else row[i] for i in pk]).decode()


def digest_rows(rows: Iterable[Sequence[Any]], pk: Sequence[int], *, plain: bool = True) -> tuple[str, int]:
    """Order-independent digest of rows keyed by their primary key, and their count."""
    total = n = 0
    encode, blake2b, from_bytes = _encode_row, _blake2b, int.from_bytes
    for row in rows:
        if plain:
            row = [_plain(v) for v in row]
        total += from_bytes(blake2b(encode(row), digest_size=16).digest(), "big")
        n += 1
    return f"{total % _MOD:032x}", n


class WrittenDigest(msgspec.Struct):
    """The digest of the rows a rebuild wrote into one shadow table, summed as they were written.

    Equal to what :meth:`ReadModelDB.compare` computes by reading the table
    back, because it is only kept while every value written is of the one
    Python class its column gives back (``str`` for text, ``int`` for
    integers, ``bool``, ``bytes``, None): a value the database would convert
    on the way in (an int into a text column, a Decimal, a date) makes it
    ``exact = False``, and the table is read back instead.
    """

    total: int = 0
    rows: int = 0
    exact: bool = True
    #: partitions whose rows are all in it
    partitions: list[int] = []

    def add(self, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None:
        if not self.exact or not rows:
            return
        for values, allowed in zip(zip(*rows), _written_classes(table)):
            if not set(map(type, values)) <= allowed:
                self.exact = False
                return
        plain = _needs_plain(table)
        self.total += sum(_row_part(row, plain) for row in rows)
        self.rows += len(rows)

    def merge(self, other: WrittenDigest) -> None:
        self.total += other.total
        self.rows += other.rows
        self.exact = self.exact and other.exact
        self.partitions = sorted({*self.partitions, *other.partitions})

    @property
    def digest(self) -> str:
        return f"{self.total % _MOD:032x}"


_NONE = type(None)


def _written_classes(table: sa.Table) -> list[frozenset[type]]:
    """Per column, the classes a value may have to come back from the database as it went in."""
    out = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, sa.Boolean):
            allowed: frozenset[type] = frozenset((bool, _NONE))
        elif isinstance(kind, sa.Integer):
            allowed = frozenset((int, _NONE))
        elif isinstance(kind, sa.String) and not isinstance(kind, (sa.Enum, sa.CHAR)):  # CHAR(n) pads
            allowed = frozenset((str, _NONE))
        elif isinstance(kind, sa.LargeBinary):
            allowed = frozenset((bytes, _NONE))
        else:  # floats (a 4-byte REAL), decimals, dates, JSON...: read back to be sure
            allowed = frozenset((_NONE,))
        out.append(allowed)
    return out


def replace_in_digest(digest: str, removed: str, added: str) -> str:
    """A table's digest once the rows digested as ``removed`` are taken out and those digested as ``added``
    put in: digests are sums, so that is arithmetic (the rows' primary keys must not collide)."""
    return f"{(int(digest, 16) - int(removed, 16) + int(added, 16)) % _MOD:032x}"


def digest_table_rows(table: sa.Table, rows: Iterable[Sequence[Any]]) -> str:
    """The digest :meth:`ReadModelDB.compare` computes, of rows given in memory (tests, replays)."""
    columns = [c.name for c in table.columns]
    return digest_rows(rows, [columns.index(c.name) for c in table.primary_key.columns])[0]


def merge_compare(
    name: str, live: Iterator[Sequence[Any]], shadow: Iterator[Sequence[Any]], pk: Sequence[int], sample: int = 10,
    *, plain: bool = True,
) -> TableDiff:
    """Merge two row streams ordered by primary key: counts of added, removed, changed rows, and digests."""
    diff = TableDiff(name, 0, 0, None, "")
    live_total = shadow_total = 0
    single = pk[0] if len(pk) == 1 else None

    def pk_of(row: Sequence[Any] | None) -> Any:
        if row is None:
            return None
        return row[single] if single is not None else tuple(row[i] for i in pk)

    def note(row: Sequence[Any]) -> None:
        if len(diff.sample) < sample:
            diff.sample.append(_key_text(row, pk, plain))

    a = next(live, None)
    b = next(shadow, None)
    ka, kb = pk_of(a), pk_of(b)
    while a is not None or b is not None:
        if b is None or (a is not None and ka < kb):
            live_total += _row_part(a, plain)  # type: ignore[arg-type]
            diff.live_rows += 1
            diff.removed += 1
            note(a)  # type: ignore[arg-type]
            a = next(live, None)
            ka = pk_of(a)
        elif a is None or kb < ka:
            shadow_total += _row_part(b, plain)
            diff.rows += 1
            diff.added += 1
            note(b)
            b = next(shadow, None)
            kb = pk_of(b)
        else:
            va = _row_part(a, plain)
            vb = _row_part(b, plain)
            live_total += va
            shadow_total += vb
            diff.live_rows += 1
            diff.rows += 1
            if va != vb:
                diff.changed += 1
                note(a)
            a = next(live, None)
            b = next(shadow, None)
            ka, kb = pk_of(a), pk_of(b)
    diff.live_digest = f"{live_total % _MOD:032x}"
    diff.digest = f"{shadow_total % _MOD:032x}"
    return diff
