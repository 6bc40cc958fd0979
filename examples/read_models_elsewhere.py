"""Events in one database, read models in another: rebuild across stores.

The shop's events stay in a SQLite event store; its read models (the
reference ``projections/``: an order summary, lifetime totals per customer,
snapshots of the Order aggregate) are rebuilt into a PostgreSQL database.
The rebuild replays the events into shadow tables there, verifies them row
by row against the live tables, and swaps them in with one transaction of
renames; its bookkeeping (runs, checkpoints) lives with the read models, so
the event store is only ever read.

The events are still at the old schema versions the shop wrote: the
projections' handlers receive them upcast to the head schemas on the way.

When PostgreSQL cannot be reached, the read models go to a second SQLite
file instead, and the script says so.

Run it from the repository root::

    .venv/bin/python examples/read_models_elsewhere.py [--url postgresql+psycopg://USER@HOST:PORT/DB]

The server defaults to ``$EVENTMIG_EXAMPLE_POSTGRES``, else
postgresql+psycopg://postgres@127.0.0.1:5432/test; the script works in a
schema of its own there, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import sqlalchemy as sa

from eventmig import open_store
from eventmig.config import load_projections, load_registry, load_settings
from eventmig.jobs.seed import seed
from eventmig import Projection, load_snapshot, rebuild
from eventmig.urls import mask_url

REPO = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema(server_url: str) -> Iterator[tuple[str, str]]:
    """A new schema on the server, and a URL whose connections use it; dropped on exit.

    Raises the driver's error when the server cannot be reached.
    """
    engine = sa.create_engine(server_url, connect_args={"connect_timeout": 5})  # a silent host: fail in seconds
    schema = f"eventmig_example_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in server_url else "?"
        try:
            yield schema, f"{server_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        engine.dispose()


def read_model_database(stack: ExitStack, server_url: str, tmp: Path) -> str:
    """PostgreSQL if it answers, else a second SQLite file: the URL the read models go to."""
    try:
        schema, url = stack.enter_context(postgres_schema(server_url))
    except (sa.exc.ArgumentError, ModuleNotFoundError, sa.exc.DBAPIError) as exc:
        reason = str(exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc).strip().splitlines()[0]
        url = f"sqlite:///{tmp / 'read-models.db'}"
        print(f"PostgreSQL at {mask_url(server_url)} is not available ({reason})")
        print(f"read models: a second SQLite file instead, {url}")
        return url
    print(f"read models: PostgreSQL at {mask_url(server_url)}, schema {schema} (dropped at the end)")
    return url


def query(read_models: str, projections: list[Projection]) -> None:
    """What the application does with its read models: plain SQL on plain tables."""
    by_name = {p.name: p for p in projections}
    summary, totals = by_name["order_summary"].tables[0], by_name["customer_totals"].tables[0]
    order_snapshots = by_name["order_snapshots"]
    engine = sa.create_engine(read_models)
    try:
        with engine.connect() as conn:
            print(f"\nin the read-model database: {', '.join(sorted(sa.inspect(conn).get_table_names()))}")
            statuses = conn.execute(
                sa.select(summary.c.status, sa.func.count()).group_by(summary.c.status).order_by(summary.c.status)
            ).all()
            print("orders by status: " + ", ".join(f"{status} {n:,}" for status, n in statuses))
            print("best customers:")
            best = conn.execute(
                sa.select(totals.c.name, totals.c.orders, totals.c.paid_cents)
                .order_by(totals.c.paid_cents.desc(), totals.c.customer_id).limit(3)
            ).all()
            for name, orders, paid in best:
                print(f"  {name:<16} {orders:>3} orders, {paid / 100:>9,.2f} paid")
            # one order's aggregate, shipped if any was: its snapshot comes back as the aggregate's own type
            order_id = conn.execute(
                sa.select(summary.c.order_id).order_by(summary.c.status != "shipped", summary.c.order_id).limit(1)
            ).scalar()
            snapshot = load_snapshot(conn, order_snapshots, f"order-{order_id}") if order_id else None
    finally:
        engine.dispose()
    if snapshot is not None:
        order = snapshot.state
        shipment = f", shipped by {order.carrier} to {order.address.city}" if order.address else ""
        print(f"snapshot of order-{order_id} at version {snapshot.version}: {order.status}, {len(order.lines)} lines, "
              f"{order.total_cents / 100:,.2f} {order.currency}{shipment}")


def table_names(url: str) -> list[str]:
    """The tables of a database, to show which side of the pair holds what."""
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTMIG_EXAMPLE_POSTGRES", DEFAULT_URL),
                        help="PostgreSQL server for the read models "
                             "(default: $EVENTMIG_EXAMPLE_POSTGRES or %(default)s)")
    parser.add_argument("--events", type=int, default=10_000, help="legacy events to seed (default: %(default)s)")
    args = parser.parse_args(argv)

    # the shop's upcasters and projections, imported as `eventmig rebuild` imports them
    settings = load_settings(REPO / "pyproject.toml")
    compiled, projections = load_registry(settings), load_projections(settings)

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        store_url = f"sqlite:///{Path(tmp) / 'shop-events.db'}"
        store = stack.enter_context(open_store(store_url))
        seed(store, args.events)
        print(f"events: {args.events:,} legacy shop events in SQLite, {store_url}")
        read_models = read_model_database(stack, args.url, Path(tmp))

        report = rebuild(store, projections, registry=compiled, read_models=read_models)
        print(f"\nrebuild of epoch {report.epoch}: {report.events_read:,} events replayed, "
              f"{'verified and swapped in' if report.swapped else 'NOT swapped: ' + '; '.join(report.problems)}")
        for p in report.projections:
            for t in p.tables:
                print(f"  {t.table:<16} {p.status:<8} {t.rows:>6,} rows (live had {t.live_rows:,}: "
                      f"{t.added:,} added, {t.changed:,} changed, {t.removed:,} removed), digest {t.digest[:12]}")
        if not report.ok:
            return 1

        query(read_models, projections)
        print(f"in the event store, no read-model table: {', '.join(sorted(table_names(store_url)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
