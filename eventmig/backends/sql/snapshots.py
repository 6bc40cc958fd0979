"""Reading an aggregate's snapshot back in a service: the one read-model query a service makes of eventmig."""

from __future__ import annotations

import sqlalchemy as sa

from eventmig.backends.sql.engine import normalize_sql_url
from eventmig.projection.api import Snapshot, Snapshots

__all__ = ["load_snapshot"]


def load_snapshot(connection: sa.Connection | sa.Engine | str, snapshots: Snapshots, aggregate_id: str) -> Snapshot | None:
    """Read one aggregate's snapshot back into its state type (None if there is none).

    ``connection`` is a SQLAlchemy connection or engine on the read-model
    database, or its URL.
    """
    table = snapshots.tables[0]
    query = sa.select(table.c.version, table.c.state, table.c.projection_version).where(table.c.aggregate_id == aggregate_id)
    if isinstance(connection, str):
        engine = sa.create_engine(normalize_sql_url(connection))
        try:
            with engine.connect() as conn:
                row = conn.execute(query).first()
        finally:
            engine.dispose()
    elif isinstance(connection, sa.Engine):
        with connection.connect() as conn:
            row = conn.execute(query).first()
    else:
        row = connection.execute(query).first()
    if row is None:
        return None
    return Snapshot(aggregate_id, row[0], snapshots.decode_state(bytes(row[1])), row[2])
