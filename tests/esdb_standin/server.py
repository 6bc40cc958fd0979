"""The stand-in node: a gRPC server on loopback serving the Streams and Gossip services.

It lives in the process that starts it (a pytest fixture, in a thread pool
of its own), so a client process killed with SIGKILL leaves it running; or
in a process of its own (``python -m tests.esdb_standin``) where a
benchmark wants the client and the server not to share an interpreter.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc

from .gossip_service import GossipService
from .protos import gossip_pb2_grpc, streams_pb2_grpc
from .store import EventLog, metastream_of
from .streams_service import StreamsService

_MESSAGE_LIMIT = 17 * 1024 * 1024  # as the clients allow: large pages of $all, batches up to the append limit


class StandIn:
    """A stand-in EventStoreDB/KurrentDB node: ``with StandIn() as node: node.url``.

    ``log`` is the node's database, for a test that wants to look behind
    the protocol (or to scavenge, which no client call does).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, workers: int = 64,
                 system_events: bool = True) -> None:
        self.host = host
        self.log = EventLog()
        self._stopping = threading.Event()
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="esdb-standin"),
            options=[("grpc.max_receive_message_length", _MESSAGE_LIMIT),
                     ("grpc.max_send_message_length", _MESSAGE_LIMIT),
                     ("grpc.so_reuseport", 0)],
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self._streams = StreamsService(self.log, self._stopping)
        streams_pb2_grpc.add_StreamsServicer_to_server(self._streams, self._server)
        gossip_pb2_grpc.add_GossipServicer_to_server(GossipService(host, self.port), self._server)
        if system_events:
            self._write_system_events()

    @property
    def url(self) -> str:
        """The connection string of a single insecure node, as the clients take it."""
        return f"esdb://{self.host}:{self.port}?Tls=false"

    @property
    def discover_url(self) -> str:
        """The same node found through gossip, as a cluster's URL would find its leader."""
        return f"esdb+discover://{self.host}:{self.port}?Tls=false"

    @property
    def live_subscriptions(self) -> int:
        """Catch-up subscriptions the node is serving now."""
        return self._streams.live_subscriptions

    def start(self) -> StandIn:
        self._server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; live subscriptions end (their clients see the node go away)."""
        self._stopping.set()
        self.log.wake()
        self._server.stop(grace).wait()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _write_system_events(self) -> None:
        """What any real node's ``$all`` holds before the first application event.

        Readers must skip these (the clients' default filter excludes types
        starting with ``$`` and ``PersistentConfig<n>``, which is not a
        ``$`` type but is a system event all the same).
        """
        now = int(time.time())
        stats = f"$stats-{self.host}:{self.port}"
        self.log.write_system_event(metastream_of(stats), "$metadata", {"$maxAge": 86400})
        self.log.write_system_event("$user-admin", "$UserCreated", {"loginName": "admin", "groups": ["$admins"]})
        self.log.write_system_event("$users", "$User", {"loginName": "admin"})
        self.log.write_system_event("$persistentSubscriptionConfig", "PersistentConfig1",
                                    {"version": "2", "updated": now, "entries": []})
        self.log.write_system_event(stats, "$statsCollected", {"proc-startTime": now})
