"""The EventStoreDB / KurrentDB backend, reached through kurrentdbclient (the ``esdb`` extra).

``esdb://host:2113?Tls=false``, ``esdb+discover://...`` and the
``kurrentdb://`` / ``kdb://`` spellings open an :class:`ESDBEventStore`.
``docs/esdb.md`` says what it declares, how epochs live on a cluster, and
which of the server's behaviours it guards against.
"""

from .names import SCHEMES
from .pointer import EpochPointer
from .transient import is_transient

__all__ = ["SCHEMES", "EpochPointer", "is_transient", "open_esdb"]


def open_esdb(url: str, *, create: bool = True, read_only: bool = False):  # noqa: ANN201 - lazy import
    """Open the EventStoreDB store at ``url`` (the client is imported only here)."""
    from .store import ESDBEventStore

    return ESDBEventStore(url, create=create, read_only=read_only)
