"""A protocol-level stand-in for an EventStoreDB/KurrentDB node, for tests on machines without one.

It serves the v1 ``Streams`` (Read with catch-up subscriptions, Append,
BatchAppend, Delete, Tombstone) and ``Gossip`` services from the installed
client's own generated stubs, with the server's semantics as far as eventmig
relies on them; ``docs/esdb.md`` lists what it implements and what it does
not. The real client talks to it unmodified::

    with StandIn() as node:
        client = KurrentDBClient(node.url)   # esdb://127.0.0.1:<port>?Tls=false
"""

from .server import StandIn

__all__ = ["StandIn"]
