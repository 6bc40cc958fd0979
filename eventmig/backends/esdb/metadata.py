"""Stream metadata carried from an epoch's streams to the same streams of the epoch migrated from them
(in the same cluster, or in another one: the store's ``stream_settings`` / ``apply_stream_settings``).

A stream's ``$$`` metadata holds its retention (``$maxAge``, ``$maxCount``),
its access control (``$acl``) and the application's own keys. A new
epoch's streams are new streams, so without this they would keep every
event forever and be open to anyone. Everything is carried except ``$tb``
(truncate-before counts revisions of the old stream, which the new one does
not share; what it hid was not migrated). Streams are matched by name: a
stream the migration renamed keeps no metadata. ``$maxAge`` counts from the
server's created time, which for a migrated event is the migration's, so
an event is kept up to ``$maxAge`` after the migration.
"""

from __future__ import annotations

import json
from typing import Any

from .names import EpochNames

NOT_CARRIED = ("$tb",)
#: up to this many streams with settings, each is asked whether it exists in the target epoch (one
#: short read each); beyond, one scan of the epoch's stream names is cheaper
ASK_EACH_UP_TO = 1000


def source_metadata(client: Any, names: EpochNames) -> dict[str, dict[str, Any]]:
    """The latest metadata document of each stream of an epoch that has one, by logical name."""
    found: dict[str, dict[str, Any]] = {}
    with client.read_all(**names.metadata_filter()) as events:
        for e in events:
            name = e.stream_name[2:]
            if not names.holds(name):  # with plain names the filter also finds system and prefixed streams
                continue
            try:
                doc = json.loads(e.data)
            except ValueError:
                continue
            if isinstance(doc, dict):
                found[names.logical(name)] = doc
    return found


def without_truncation(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents without what must not be carried (``$tb``), and without those left empty."""
    kept = {stream: {k: v for k, v in doc.items() if k not in NOT_CARRIED} for stream, doc in docs.items()}
    return {stream: doc for stream, doc in kept.items() if doc}


def apply(client: Any, target: EpochNames, docs: dict[str, dict[str, Any]], streams: set[str]) -> int:
    """Set each document on the same-named stream of the target epoch, for the streams in ``streams``."""
    carried = 0
    for stream, doc in without_truncation(docs).items():
        if stream in streams:
            client.set_stream_metadata(target.physical(stream), metadata=doc)
            carried += 1
    return carried
