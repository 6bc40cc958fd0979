"""Where eventmig puts things on an EventStoreDB cluster: epochs' streams and its own bookkeeping.

**Epochs are stream-name prefixes.** Epoch 1 is the cluster as the
applications wrote it, under their own names; epoch N (N >= 2) holds the
same logical streams under ``eN.<name>`` (``order-1`` -> ``e2.order-1``).
A prefix rather than a category suffix (``order.e2-1``) because:

* one epoch is then one server-side *prefix* filter on ``$all``, the cheap
  read, whatever the categories are; a suffix would need every category
  named, or a regex scan;
* ``$by_category`` splits at the first dash, so ``e2.order-1`` still falls
  in a category of its own (``e2.order``), distinct from epoch 1's
  ``order``, as readers moving through ``$ce-`` need;
* the logical name is recovered by dropping a known prefix, with no
  ambiguity for names with or without dashes.

The cost: applications must not name streams ``e<digits>.<...>`` in epoch 1
(they would be read as another epoch's).

A migration into a cluster whose epoch 1 is empty (a new cluster, the
target of a migration across stores) writes plain names instead, so that
after the switch the applications need only the new connection string;
epoch 1 is then hollow. Plain names are taken once: an epoch that had them
and is dropped leaves its soft-deleted streams, which a reuse would
recreate with their old revisions, so later epochs take prefixes.

**Bookkeeping** lives in ``$eventmig-*`` streams: system streams (their
names start with ``$``), so no epoch read sees them and, on a secured
cluster, only ``$admins`` can write them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: URL schemes this backend answers to (kurrentdbclient's own spellings)
SCHEMES = ("esdb", "esdb+discover", "kurrentdb", "kurrentdb+discover", "kdb", "kdb+discover")

#: epochs, the active pointer and the history of switches: one JSON document per change
STATE_STREAM = "$eventmig-epochs"
RUNS_STREAM = "$eventmig-runs"
QUARANTINE_STREAM = "$eventmig-quarantine"
LOCK_STREAM = "$eventmig-lock-"

_EPOCH_PREFIX = re.compile(r"e[0-9]+\.")
#: stream-name regexes (anchored by the client) of what an epoch of plain names does not hold: system
#: and metadata streams, eventmig's own, and prefixed epochs' streams
_NOT_PLAIN = (r"\$.*", r"e[0-9]+\..*")


@dataclass(frozen=True)
class EpochNames:
    """How one epoch's streams are named on the server, and how to read just them.

    ``prefix`` is ``eN.`` for a later epoch, ``""`` for plain names: epoch 1,
    or the epoch a migration into an empty cluster writes (then epoch 1 is
    ``hollow``: it holds nothing, its plain names being the new epoch's).
    """

    epoch: int
    prefix: str
    hollow: bool = False

    def physical(self, stream: str) -> str:
        """The server's name of logical stream ``stream`` in this epoch."""
        return self.prefix + stream

    def logical(self, name: str) -> str:
        return name[len(self.prefix):]

    def holds(self, name: str) -> bool:
        """Whether the server's stream ``name`` belongs to this epoch."""
        if self.hollow:
            return False
        if self.prefix:
            return name.startswith(self.prefix)
        return not name.startswith("$") and _EPOCH_PREFIX.match(name) is None

    def read_filter(self) -> dict[str, object]:
        """``read_all`` keyword arguments that make the server send this epoch's streams only."""
        if self.prefix:
            return {"filter_by_stream_name": True, "filter_include": (self.prefix,), "filter_by_prefix": True}
        return {"filter_by_stream_name": True, "filter_exclude": _NOT_PLAIN}

    def metadata_filter(self) -> dict[str, object]:
        """``read_all`` keyword arguments for the metadata streams (``$$name``) of this epoch's streams
        (with plain names, other streams' too: check :meth:`holds`)."""
        return {"filter_by_stream_name": True, "filter_include": ("$$" + self.prefix,), "filter_by_prefix": True}


def default_prefix(epoch: int) -> str:
    """The prefix epoch ``epoch`` gets unless it takes the plain names ('' for epoch 1)."""
    return "" if epoch == 1 else f"e{epoch}."


def plain(epoch: int = 1) -> EpochNames:
    """Plain names: epoch 1 of a cluster eventmig has not migrated into."""
    return EpochNames(epoch, "")


def lock_stream(name: str) -> str:
    return f"{LOCK_STREAM}{name}"
