"""The EventStoreDB / KurrentDB backend, reached through kurrentdbclient (the ``esdb`` extra).

``esdb://host:2113?Tls=false``, ``esdb+discover://...`` and the
``kurrentdb://`` / ``kdb://`` spellings open an
:class:`~eventmig.backends.esdb.store.ESDBEventStore` (see
:data:`eventmig.backends.BACKENDS`); the client is imported only then.
``docs/esdb.md`` says what it declares, how epochs live on a cluster, and
which of the server's behaviours it guards against.
"""

from eventmig.retry import register_transient

from .names import SCHEMES
from .pointer import EpochPointer
from .transient import is_transient

# the client's errors that escape the backend unwrapped (a deadline inside a read, a leader change)
# are retried by the jobs like the SQL backends' lost connections
register_transient(is_transient)

__all__ = ["SCHEMES", "EpochPointer", "is_transient"]
