"""Markers a fold passes around where ``None`` is a legitimate value: missing, deleted, slow.

A projection's state may be ``None``, and a step may return ``None``; these
named objects say "no state yet", "the row is gone" and "take the general
path" without colliding with anything a service's code returns.
"""

from __future__ import annotations

from typing import Any


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING: Any = _Sentinel("MISSING")


_DELETED: Any = _Sentinel("DELETED")


#: what a fast chain returns when a step's result needs the registry's general handling
SLOW: Any = _Sentinel("SLOW")
