"""The check every backend makes before it flips the active epoch: no head moved since verification.

A switch is safe only if each epoch still ends where ``verify`` saw it end.
The one exception is the active source epoch when the caller asked for a
catch-up: its new events are migrated inside the switch. Every backend reads
heads its own way (a SQL query under the table locks, a stream read on
EventStoreDB) and hands them here, so the rule is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from eventmig.errors import HeadMoved
from eventmig.ports import CatchUp

#: what :func:`verified_heads_or_behind` returns for a source epoch that was empty when verified
WAS_EMPTY = -1


def verified_heads_or_behind(
    head_of: Callable[[int], int | None], expect_heads: Mapping[int, int | None], catch_up: CatchUp | None,
    active: int,
) -> int | None:
    """Raise :class:`HeadMoved` if an epoch's head differs from the verified one, except the active source
    epoch under a catch-up: then return its verified head (:data:`WAS_EMPTY` if it had none), the point
    the catch-up starts from. None: nothing moved."""
    behind: int | None = None
    for epoch, expected in expect_heads.items():  # every head checked before a catch-up moves the target's
        head = head_of(epoch)
        if head == expected:
            continue
        if catch_up is not None and epoch == catch_up.source_epoch == active:
            behind = expected if expected is not None else WAS_EMPTY
            continue
        raise HeadMoved(
            f"epoch {epoch} changed since it was verified (head {expected} -> {head}): "
            "events were appended meanwhile; run migrate again to catch up, then switch"
        )
    return behind
