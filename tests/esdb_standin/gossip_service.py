"""The ``Gossip`` service, for ``esdb+discover://`` URLs: a cluster of one leader, itself.

A client given a discover URL (or several hosts) asks a node for the
cluster's members and connects to the one its node preference names; with a
single member it keeps the connection it asked on.
"""

from __future__ import annotations

import uuid

import grpc

from .protos import gossip_pb2, gossip_pb2_grpc, shared_pb2
from .store import ticks_now


class GossipService(gossip_pb2_grpc.GossipServicer):
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._instance = str(uuid.uuid4())

    def Read(self, request: object, context: grpc.ServicerContext) -> object:  # noqa: N802
        leader = gossip_pb2.MemberInfo(
            instance_id=shared_pb2.UUID(string=self._instance),
            time_stamp=ticks_now(),
            state=gossip_pb2.MemberInfo.VNodeState.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=self._host, port=self._port),
        )
        return gossip_pb2.ClusterInfo(members=[leader])
