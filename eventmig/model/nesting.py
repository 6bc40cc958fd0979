"""Why a JSON document failed with a RecursionError: it is nested deeper than can be decoded.

msgspec decodes (and encodes) nested arrays and objects recursively, within
Python's recursion limit: a payload nested about a thousand levels deep
raises RecursionError, which is no reason to stop a migration. Every decode
path turns it into the event's quarantine reason (a rebuild's "cannot
decode"), worded here. Only a failure pays for the scan below; decoding
itself is left as it is.
"""

from __future__ import annotations

import sys

#: below this depth a RecursionError came from elsewhere (service code recursing), not from the document
DEEP = 100


def depth(data: bytes | str) -> int:
    """How deeply the arrays and objects of a JSON document nest (strings skipped, escapes included)."""
    text = data.encode() if isinstance(data, str) else bytes(data)
    deepest = level = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            level += 1
            deepest = max(deepest, level)
        elif byte in (0x5D, 0x7D):  # ] }
            level -= 1
    return deepest


def too_deep(what: str, data: bytes | str) -> str:
    """``"payload nested too deeply to decode: 1000 levels..."``, the reason an event that raised RecursionError
    is set aside (what comes before the colon is how reports group reasons)."""
    return (
        f"{what} nested too deeply to decode: {depth(data)} levels, more than msgspec decodes within Python's "
        f"recursion limit ({sys.getrecursionlimit()})"
    )


def deepest(row: tuple, exc: BaseException) -> str:
    """The reason for a stored row (payload at 5, metadata at 6) whose decoding raised ``exc``, a RecursionError:
    its deeper document, or the error itself when neither is deep (the recursion was someone's code)."""
    payload, metadata = depth(row[5] or b""), depth(row[6] or b"")
    if max(payload, metadata) < DEEP:
        return f"{type(exc).__name__}: {exc}"
    return too_deep("payload", row[5]) if payload >= metadata else too_deep("metadata", row[6])
