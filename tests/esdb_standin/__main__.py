"""Run a stand-in node in a process of its own: prints its URL, serves until SIGTERM or Ctrl-C.

``python -m tests.esdb_standin [--port N]`` from the repository root.
"""

from __future__ import annotations

import argparse
import signal
import threading

from .server import StandIn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.esdb_standin")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    args = parser.parse_args()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with StandIn(args.host, args.port) as node:
        print(node.url, flush=True)
        done.wait()


if __name__ == "__main__":
    main()
