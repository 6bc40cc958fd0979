"""The reference shop's migration on PostgreSQL, while the shop keeps taking orders.

A service's whole flow against a PostgreSQL event store: seed the shop's
legacy history (``eventmig.jobs.seed.seed``), copy it through the shop's
upcasters (``upcasters/``, found through ``[tool.eventmig]`` in the
repository's ``pyproject.toml``, as the ``eventmig`` command finds them)
into a new epoch, verify, switch, roll back.

Between the migration and the switch the application appends to an order,
as a live shop would: the switch migrates and verifies those late events
itself, inside the flip's transaction for the last few, so none is left
behind in the old epoch.

Everything lives in a schema of its own, created for the run and dropped at
the end, so the example can use a shared database.

Run it from the repository root::

    .venv/bin/python examples/postgres.py [--url postgresql+psycopg://USER@HOST:PORT/DB] [--events N]

The server defaults to ``$EVENTMIG_EXAMPLE_POSTGRES``, else
postgresql+psycopg://postgres@127.0.0.1:5432/test. Exit status 2, with a
one-line message, when it cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from eventmig import RecordedEvent, StreamState, migrate, new_event, open_store, rollback, switch, verify
from eventmig.config import load_registry, load_settings
from eventmig.jobs.seed import seed
from eventmig.urls import mask_url

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Unreachable(Exception):
    """The server cannot be used; the message is one line, ready for the user."""


@contextmanager
def own_schema(server_url: str) -> Iterator[tuple[str, str]]:
    """A new schema on the server, and a URL whose connections use it; dropped on exit.

    eventmig creates its tables (``events``, ``events_e2``, ``eventmig_*``)
    in the connection's current schema, so ``search_path`` in the URL is all
    it takes to keep a store apart from anything else in the database.
    """
    schema = f"eventmig_example_{uuid.uuid4().hex[:8]}"
    try:
        # a server that does not answer is reported after a few seconds, not after the OS gives up
        engine = sa.create_engine(server_url, connect_args={"connect_timeout": 5})
    except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:  # not a URL, or no PostgreSQL driver installed
        raise Unreachable(f"cannot use {mask_url(server_url)}: {exc}") from None
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        first_line = str(exc.orig).strip().splitlines()[0]
        raise Unreachable(f"PostgreSQL at {mask_url(server_url)} is unreachable: {first_line}") from None
    try:
        sep = "&" if "?" in server_url else "?"
        yield schema, f"{server_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def show_stream(events: list[RecordedEvent]) -> None:
    """Each event's type, schema version and payload, one per line."""
    for e in events:
        name = f"{e.type} v{e.decoded_metadata().get('schema_version', 1)}"
        print(f"    {name:<18} {e.data.decode()}")


def show_counts(before: dict[str, int], after: dict[str, int]) -> None:
    """Events per (type, schema version) on both sides of the migration, side by side."""
    print(f"  {'before':<34}after")
    rows = max(len(before), len(after))
    left = [f"{k:<26}{n:>6,}" for k, n in before.items()] + [""] * rows
    right = [f"{k:<26}{n:>6,}" for k, n in after.items()] + [""] * rows
    for i in range(rows):
        print(f"  {left[i]:<34}{right[i]}".rstrip())


def run(url: str, events: int) -> None:
    """Seed, migrate, keep writing, verify, switch (catching up), roll back."""
    # the shop's registry, imported as `eventmig migrate` imports it
    compiled = load_registry(load_settings(REPO / "pyproject.toml"))
    with open_store(url) as store:  # the application's handle: it follows the active epoch
        started = time.perf_counter()
        seed(store, events)
        streams = sum(1 for _ in store.list_streams())
        print(f"seed: {events:,} legacy shop events in {streams:,} streams ({time.perf_counter() - started:.1f} s)")

        report = migrate(store, compiled)
        print(
            f"migrate epoch {report.source_epoch} -> {report.target_epoch}: {report.events_read:,} read, "
            f"{report.events_written:,} written, {report.dropped:,} dropped, {report.quarantined} quarantined "
            f"({report.events_per_second:,.0f} events/s)"
        )
        show_counts(report.before, report.after)

        # the shop is live, still running the code that writes the old schemas: an order comes in
        late = "order-placed-during-the-migration"
        store.append(late, [
            new_event("OrderPlaced", {"order_id": "late-1", "customer_id": "c-1", "total": 12.5,
                                      "placed_at": "2024-06-01T10:00:00Z", "channel": "web"}),
            new_event("ItemAdded", {"order_id": "late-1", "sku": "SKU-10003", "name": "Paper filters, pack of 100",
                                    "qty": 5, "price": 2.5}),
        ], expected_version=StreamState.NO_STREAM)
        print(f"meanwhile: 2 events appended to {late} in epoch {report.source_epoch}, the active one")

        checked = verify(store, compiled)
        print(
            f"verify: {'digests match' if checked.ok else 'DIFFERENT: ' + '; '.join(checked.problems)} "
            f"({checked.streams_compared:,} streams, {checked.target_events:,} events; "
            f"{checked.source_advanced_by} source events newer than the migration)"
        )

        flipped = switch(store, compiled)  # verifies again; refuses on any difference
        print(
            f"switch: epoch {flipped.from_epoch} -> {flipped.to_epoch} is active, "
            f"{flipped.caught_up} late events migrated and verified by the switch"
        )
        print(f"  {late} now reads:")
        show_stream(store.read_stream(late))

        back = rollback(store)
        print(f"rollback: epoch {back.from_epoch} -> {back.to_epoch} is active again")
        print(f"  {late} reads again:")
        show_stream(store.read_stream(late))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTMIG_EXAMPLE_POSTGRES", DEFAULT_URL),
                        help="PostgreSQL server (default: $EVENTMIG_EXAMPLE_POSTGRES or %(default)s)")
    parser.add_argument("--events", type=int, default=20_000, help="legacy events to seed (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        with own_schema(args.url) as (schema, url):
            print(f"PostgreSQL at {mask_url(args.url)}, schema {schema} (dropped at the end)")
            run(url, args.events)
    except Unreachable as exc:
        print(f"error: {exc} (give a server with --url or EVENTMIG_EXAMPLE_POSTGRES)", file=sys.stderr)
        return 3  # as eventmig's commands exit when a store is unreachable
    print(f"dropped schema {schema}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
