"""A SQLite event store moved into EventStoreDB, upcast on the way, verified, switched, and back.

The shop's legacy history sits in SQLite. eventmig migrates it into an
EventStoreDB / KurrentDB cluster through the upcaster chains: the SQLite
file is only read; on the cluster each stream is appended with an explicit
expected revision and the events keep deterministic ids, so a run killed
and started again duplicates nothing. Each new event carries where it came
from as flat string keys (``$originalCreatedDate``, ``$originalStreamId``,
...), since the server sets the created time itself. Verification digests
the upcast source and the cluster's events alike, so two stores of
different kinds are compared event by event; the switch makes the migrated
epoch active. Then a rollback makes SQLite the store in use again.

Run it from the repository root::

    .venv/bin/python examples/esdb.py [--url esdb://HOST:2113?Tls=false]

Without ``--url`` (or ``$EVENTMIG_EXAMPLE_ESDB``) it starts the test
suite's protocol-level **stand-in** for a server (``tests/esdb_standin/``,
in memory) and says so: what it prints is then about eventmig, not about a
real cluster. Against a real cluster, use an empty one: the migrated
streams keep their names there, as a new cluster for the applications.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from kurrentdbclient import KurrentDBClient

from eventmig import migrate, open_store, rollback, switch, verify
from eventmig.backends.pair import open_pair
from eventmig.config import load_registry, load_settings
from eventmig.jobs.seed import seed
from eventmig.urls import mask_url

REPO = Path(__file__).resolve().parent.parent


def cluster(url: str | None, stack: ExitStack) -> str:
    """The cluster's URL: the one given, or a stand-in node started here."""
    if url:
        print(f"cluster: {mask_url(url)}")
        return url
    sys.path.insert(0, str(REPO / "tests"))
    from esdb_standin import StandIn

    node = stack.enter_context(StandIn())
    print("cluster: the test suite's stand-in (in memory, not a real EventStoreDB server)")
    return node.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTMIG_EXAMPLE_ESDB"), help="esdb://... of an empty cluster")
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    compiled = load_registry(load_settings(REPO / "pyproject.toml"))
    with ExitStack() as stack:
        url = cluster(args.url, stack)
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="eventmig-esdb-example-"))
        source = f"sqlite:///{folder}/shop.db"
        with open_store(source) as legacy:
            seed(legacy, args.events)
        with open_pair(source, url) as pair:
            report = migrate(pair, compiled, workers=1)
            print(f"migrated {report.events_read:,} events from SQLite into {report.events_written:,} on the cluster "
                  f"({report.events_per_second:,.0f} events/s)")
            epoch = pair.at_epoch(report.target_epoch)
            stream = next(s for s in epoch.list_streams() if s.startswith("order-"))
            first = epoch.read_stream(stream, limit=1)[0]
            print(f"{stream} on the cluster starts at revision {first.version} with {first.type}; as stored there:")
            client = KurrentDBClient(url)
            stored = client.get_stream(stream, limit=1)[0]  # an empty cluster: the streams keep their names
            client.close()
            for key, value in sorted(json.loads(stored.metadata).items()):
                print(f"  {key}: {value!r}")
            checked = verify(pair, compiled, workers=1)
            print(f"verify: {checked.expected_events:,} expected events, {checked.target_events:,} on the cluster, "
                  f"digests {'match' if checked.ok else 'DIFFER'}")
            if not checked.ok:
                sys.exit(1)
            flipped = switch(pair, compiled, workers=1)
            print(f"switch: epoch {flipped.to_epoch} (the cluster) is active; point the applications at it")
            back = rollback(pair)
            print(f"rollback: epoch {back.to_epoch} (SQLite, never written) is the store in use again")


if __name__ == "__main__":
    main()
