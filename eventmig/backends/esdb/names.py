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

**Bookkeeping** lives in ``$eventmig-*`` streams: system streams (their
names start with ``$``), so no epoch read sees them and, on a secured
cluster, only ``$admins`` can write them.
"""

from __future__ import annotations

import re

#: URL schemes this backend answers to (kurrentdbclient's own spellings)
SCHEMES = ("esdb", "esdb+discover", "kurrentdb", "kurrentdb+discover", "kdb", "kdb+discover")

#: epochs, the active pointer and the history of switches: one JSON document per change
STATE_STREAM = "$eventmig-epochs"
RUNS_STREAM = "$eventmig-runs"
QUARANTINE_STREAM = "$eventmig-quarantine"
LOCK_STREAM = "$eventmig-lock-"

_EPOCH_PREFIX = re.compile(r"e[0-9]+\.")
#: stream-name regexes (anchored by the client) of what epoch 1 does not hold: system and
#: metadata streams, eventmig's own, and later epochs' streams
_NOT_EPOCH_ONE = (r"\$.*", r"e[0-9]+\..*")


def epoch_prefix(epoch: int) -> str:
    """The prefix of epoch ``epoch``'s stream names ('' for epoch 1)."""
    return "" if epoch == 1 else f"e{epoch}."


def physical(stream: str, epoch: int) -> str:
    """The server's name of logical stream ``stream`` in epoch ``epoch``."""
    return stream if epoch == 1 else f"e{epoch}.{stream}"


def in_epoch(name: str, epoch: int) -> bool:
    """Whether the server's stream ``name`` belongs to epoch ``epoch``."""
    if epoch == 1:
        return not name.startswith("$") and _EPOCH_PREFIX.match(name) is None
    return name.startswith(epoch_prefix(epoch))


def epoch_filter(epoch: int) -> dict[str, object]:
    """``read_all`` keyword arguments that make the server send epoch ``epoch``'s streams only."""
    if epoch == 1:
        return {"filter_by_stream_name": True, "filter_exclude": _NOT_EPOCH_ONE}
    return {"filter_by_stream_name": True, "filter_include": (epoch_prefix(epoch),), "filter_by_prefix": True}


def metadata_filter(epoch: int) -> dict[str, object]:
    """``read_all`` keyword arguments for the metadata streams (``$$name``) of epoch ``epoch``'s streams."""
    return {"filter_by_stream_name": True, "filter_include": ("$$" + epoch_prefix(epoch),), "filter_by_prefix": True}


def lock_stream(name: str) -> str:
    return f"{LOCK_STREAM}{name}"
