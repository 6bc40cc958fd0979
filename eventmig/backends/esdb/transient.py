"""Which EventStoreDB failures are worth retrying: one small function a retry policy plugs in.

eventmig has one retry policy for every store; this backend only says
which of its errors are transient. A retried write is safe because every
append carries an explicit expected revision and deterministic event ids:
the server answers a repeat of a write that did land as a no-op.
"""

from __future__ import annotations

#: kurrentdbclient exception names that mean "the node or the network, not the request"
_TRANSIENT = frozenset({
    "ServiceUnavailableError",  # node down, restarting, or unreachable (includes a failed TLS handshake)
    "DeadlineExceededError",  # a call ran out of time (gRPC deadline or the client's own)
    "GrpcDeadlineExceededError",
    "AppendDeadlineExceededError",  # the node did not commit in time; the append may or may not have landed
    "NodeIsNotLeaderError",  # an election moved the leader: reconnect and repeat
    "LeaderNotFoundError",  # during an election
    "DiscoveryFailedError",
    "AbortedByServerError",  # the node dropped the call (restart, overload)
    "ConsumerTooSlowError",
})
#: never transient, even where a subclass of a transient class: retrying would repeat the mistake
_PERMANENT = frozenset({"SSLError", "MaximumAppendSizeExceededError", "TransactionMaxSizeExceededError",
                        "MultiAppendToSameStreamError"})


def is_transient(exc: BaseException) -> bool:
    """True for an ESDB error a retry may cure: unavailable node, deadline, leader change.

    By class name along the exception's MRO, so the check works without
    importing the client and for esdbclient's spellings (``ServiceUnavailable``
    without the ``Error`` suffix) as well.
    """
    names = [cls.__name__ for cls in type(exc).__mro__]
    if any(n in _PERMANENT or f"{n}Error" in _PERMANENT for n in names):
        return False
    return any(n in _TRANSIENT or f"{n}Error" in _TRANSIENT for n in names)
