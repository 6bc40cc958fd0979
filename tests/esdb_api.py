"""The EventStoreDB client the tests drive: kurrentdbclient (eventmig's 'esdb' extra), else esdbclient.

They are one API under two names (kurrentdbclient is esdbclient renamed,
its exceptions with an ``Error`` suffix), so the contract tests and the
stand-in serve either; ``PREFIX_FILTERS`` says whether the client can ask
for server-side prefix filters, which only kurrentdbclient can.
"""

from __future__ import annotations

try:
    from kurrentdbclient import CaughtUp, Checkpoint, KurrentDBClient as Client, NewEvent, RecordedEvent, StreamState
    from kurrentdbclient.exceptions import (
        MaximumAppendSizeExceededError as MaximumAppendSizeExceeded,
        NotFoundError as NotFound,
        StreamIsDeletedError as StreamIsDeleted,
        WrongCurrentVersionError as WrongCurrentVersion,
    )

    CLIENT = "kurrentdbclient"
    PREFIX_FILTERS = True
except ModuleNotFoundError:  # esdbclient, in an environment of its own (its grpcio pin excludes kurrentdbclient)
    from esdbclient import CaughtUp, Checkpoint, EventStoreDBClient as Client, NewEvent, RecordedEvent, StreamState
    from esdbclient.exceptions import (
        MaximumAppendSizeExceededError as MaximumAppendSizeExceeded,
        NotFound,
        StreamIsDeleted,
        WrongCurrentVersion,
    )

    CLIENT = "esdbclient"
    PREFIX_FILTERS = False

__all__ = ["CLIENT", "PREFIX_FILTERS", "CaughtUp", "Checkpoint", "Client", "MaximumAppendSizeExceeded", "NewEvent",
           "NotFound", "RecordedEvent", "StreamIsDeleted", "StreamState", "WrongCurrentVersion"]
