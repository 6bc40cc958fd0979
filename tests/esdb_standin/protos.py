"""The v1 protocol's generated messages and service stubs, taken from the installed client.

The stand-in owns no ``.proto`` files: it serves exactly the messages the
client was generated from, so the two cannot drift apart. kurrentdbclient
(the ``esdb`` extra) keeps them in ``kurrentdbclient.protos.v1``; esdbclient,
its predecessor, in ``esdbclient.protos.Grpc``. Both are the same v1 wire
protocol, so whichever is installed serves; newer optional fields (the time
of a checkpoint, the position of a caught-up signal) are filled only where
the installed messages have them (:func:`has_field`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from google.protobuf.message import Message

_PACKAGES = ("kurrentdbclient.protos.v1", "esdbclient.protos.Grpc")


def _load(name: str) -> ModuleType:
    for package in _PACKAGES:
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(
        f"no EventStoreDB client with generated protobuf stubs is installed ({' or '.join(_PACKAGES)}); "
        "install eventmig's 'esdb' or 'test' extra"
    )


shared_pb2 = _load("shared_pb2")
status_pb2 = _load("status_pb2")
streams_pb2 = _load("streams_pb2")
streams_pb2_grpc = _load("streams_pb2_grpc")
gossip_pb2 = _load("gossip_pb2")
gossip_pb2_grpc = _load("gossip_pb2_grpc")

CLIENT_PACKAGE = streams_pb2.__name__.split(".")[0]


def has_field(message: type[Message] | Message, name: str) -> bool:
    """Whether the installed generation of ``message`` has the field ``name``."""
    return name in message.DESCRIPTOR.fields_by_name
