"""Reading an epoch out of ``$all``: server-side filters, exclusive resumes, and no resurrection.

Three things the server does that a copy must not inherit:

* ``read_all(commit_position=P)`` *includes* the event at P, so a read
  resumed after a checkpoint P skips it (:func:`epoch_events`);
* ``$all`` holds system events, and events of soft-deleted, ``$tb``-
  truncated, ``$maxCount``/``$maxAge``-expired and tombstoned streams until
  a scavenge; a stream read hides them. :class:`Visibility` asks the server,
  stream by stream, where each stream now starts, for the streams that have
  metadata or a tombstone, and drops what a stream read would not return;
* the created time of a migrated event is the migration's; lineage keys
  carry the original (:mod:`.lineage`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Iterator
from typing import Any

from . import lineage
from .names import EpochNames

#: a stream with nothing visible left (deleted, tombstoned): every revision is below this
GONE = sys.maxsize
TOMBSTONE_TYPE = "$streamDeleted"


class Visibility:
    """Where each stream of one epoch starts for a stream read: events before it are not copied.

    Only streams with metadata (``$$name``) or a tombstone can hide events,
    so those are found first, with two server-side filtered reads, and
    asked about once each; every other stream starts at revision 0. Taken
    once per store handle: a stream deleted after that is still read (a
    later handle, such as the switch's catch-up, sees the deletion).
    """

    def __init__(self, client: Any, names: EpochNames) -> None:
        self.client, self.names = client, names
        self._starts: dict[str, int] = {}
        self._suspects: set[str] | None = None

    def start(self, name: str) -> int:
        """The first revision of server stream ``name`` a stream read returns (GONE: none)."""
        if self._suspects is None:
            self._suspects = self._find_suspects()
        if name not in self._suspects:
            return 0
        start = self._starts.get(name)
        if start is None:
            start = self._starts[name] = self._first_visible(name)
        return start

    def _find_suspects(self) -> set[str]:
        found: set[str] = set()
        with self.client.read_all(**self.names.metadata_filter()) as events:
            found.update(e.stream_name[2:] for e in events)
        with self.client.read_all(filter_include=(TOMBSTONE_TYPE,), filter_by_prefix=True) as events:
            found.update(e.stream_name for e in events)
        return {name for name in found if self.names.holds(name)}

    def _first_visible(self, name: str) -> int:
        from kurrentdbclient.exceptions import NotFoundError, StreamIsDeletedError

        try:
            first = self.client.get_stream(name, limit=1)
        except (NotFoundError, StreamIsDeletedError):
            return GONE
        return first[0].stream_position if first else GONE


def epoch_events(
    client: Any, names: EpochNames, visibility: Visibility, after: int | None, until: int | None, *, backwards: bool = False,
    types: Collection[str] | None = None,
) -> Iterator[Any]:
    """The client's recorded events of one epoch in commit order, in ``(after, until]``, visible ones only.

    Backwards: from the head down (``after`` and ``until`` still bound the range). With ``types``,
    the server filters by event type (it filters on one thing at a time), and the epoch's stream
    names are checked here instead.
    """
    position = None if backwards else after
    if names.hollow:
        return
    if types is not None:
        if not types:
            return
        # one alternation: the client anchors it whole (it joins several patterns as ^a|b$, which
        # would match any name starting with a or ending with b)
        pattern = "(?:" + "|".join(re.escape(t) for t in sorted(types)) + ")"
        server_filter: dict[str, object] = {"filter_include": (pattern,)}
    else:
        server_filter = names.read_filter()
    with client.read_all(commit_position=position, backwards=backwards, **server_filter) as events:
        for e in events:
            if types is not None and not names.holds(e.stream_name):
                continue
            commit = e.commit_position
            if backwards:
                if until is not None and commit > until:
                    continue
                if after is not None and commit <= after:
                    return
            else:
                if after is not None and commit <= after:
                    continue  # the event at the resume position itself: read_all includes it
                if until is not None and commit > until:
                    return
            if e.type.startswith("$") or e.stream_position < visibility.start(e.stream_name):
                continue
            yield e


def to_row(e: Any, prefix_length: int, lean: bool = False) -> tuple[Any, ...]:
    """A client event as a row in :class:`~eventmig.events.RecordedEvent` field order."""
    created = lineage.micros(e.recorded_at) if e.recorded_at is not None else 0
    metadata, recorded_at, event_id = lineage.from_server(e.metadata or b"", created, str(e.id))
    return (e.stream_name[prefix_length:], e.stream_position, e.commit_position, None if lean else event_id,
            e.type, e.data, metadata, None if lean else recorded_at)

