"""Claims on a rebuild run's partitions, so that rebuild processes on several hosts share one run.

A run's partitions are fixed when it starts (see :mod:`eventmig.jobs.rebuild.plan`), each with its
checkpoint and state table. Any number of processes may fold them, one partition per process at a time,
through a row per partition in ``eventmig_rebuild_claims`` of the read-model PostgreSQL, in the manner of
Axon's token claims:

    run_id | partition | holder (host:pid:random) | generation | lease_until (database clock)

* **claim**: take one partition that is not done and that nobody holds, or whose holder let its lease
  expire (``FOR UPDATE SKIP LOCKED``: two claimers never wait for each other, and never take the same
  row); the generation goes up by one;
* **renew**: the holder pushes ``lease_until`` forward (a heartbeat, every third of the lease);
* **fence**: every write transaction of the holder's handle first reads the row ``FOR SHARE`` and goes on
  only if holder and generation are still its own (:class:`ClaimFence`): a holder that was cut off past
  its lease, and whose partition was taken over, can never commit beside the new holder;
* **takeover**: a killed holder renews nothing; once its lease expires another process claims the
  partition and resumes it from its last committed checkpoint, states and all.

PostgreSQL only: SQLite is one host's file, with one writer at a time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from eventmig.backends.sql.readmodels import ReadModelDB
from eventmig.errors import ConfigError, LeaseLost
from eventmig.ports_readmodels import PartitionClaim, ReadModelSink

TABLE = "eventmig_rebuild_claims"


class ClaimFence:
    """Checked inside each write transaction of a handle folding a claimed partition."""

    def __init__(self, claim: PartitionClaim) -> None:
        self.claim = claim

    def check(self, conn: Connection, dialect: str) -> None:
        c = self.claim
        row = conn.exec_driver_sql(
            f"SELECT holder, generation FROM {TABLE} WHERE run_id = %s AND partition = %s FOR SHARE",
            (c.run_id, c.partition),
        ).first()
        if row is None or row[0] != c.holder or row[1] != c.generation:
            raise LeaseLost(
                f"partition {c.partition} of rebuild run {c.run_id} was taken over by another process after this "
                "one's claim expired: it stopped writing there; what it committed is kept and resumed by the new holder"
            )


class SQLPartitionClaims:
    """Partition claims in a PostgreSQL read-model database."""

    def __init__(self, db: ReadModelDB) -> None:
        if db.dialect != "postgresql":
            raise ConfigError(
                "rebuild --join needs the read models in PostgreSQL: processes share a run through row leases there "
                "(SQLite is one host's file)"
            )
        self.db = db
        with db.write(fenced=False) as c:
            c.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('eventmig:claims-schema:' || current_schema()))")
            c.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (run_id TEXT NOT NULL, partition INTEGER NOT NULL, holder TEXT, "
                "generation BIGINT NOT NULL DEFAULT 0, lease_until DOUBLE PRECISION, PRIMARY KEY (run_id, partition))"
            )

    def claim(self, run_id: str, holder: str, lease_s: float) -> PartitionClaim | None:
        """One partition of the run that is not done and free (never held, released, or expired), now this
        holder's; None when every partition left is held by a live holder (or none is left)."""
        with self.db.write(fenced=False) as c:
            c.exec_driver_sql(
                f"INSERT INTO {TABLE} (run_id, partition) SELECT run_id, partition FROM eventmig_rebuild_partitions "
                "WHERE run_id = %s ON CONFLICT DO NOTHING",
                (run_id,),
            )
            row = c.exec_driver_sql(
                f"SELECT c.partition, c.generation FROM {TABLE} c JOIN eventmig_rebuild_partitions p "
                "ON p.run_id = c.run_id AND p.partition = c.partition "
                "WHERE c.run_id = %s AND p.status <> 'done' "
                "AND (c.holder IS NULL OR c.lease_until < extract(epoch FROM clock_timestamp())) "
                "ORDER BY c.partition LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
                (run_id,),
            ).first()
            if row is None:
                return None
            generation = int(row[1]) + 1
            c.exec_driver_sql(
                f"UPDATE {TABLE} SET holder = %s, generation = %s, "
                "lease_until = extract(epoch FROM clock_timestamp()) + %s WHERE run_id = %s AND partition = %s",
                (holder, generation, lease_s, run_id, row[0]),
            )
            return PartitionClaim(run_id, int(row[0]), holder, generation)

    def renew(self, claim: PartitionClaim, lease_s: float) -> bool:
        """Push the claim's expiry forward; False if another process took the partition over."""
        with self.db.write(fenced=False) as c:
            return bool(c.exec_driver_sql(
                f"UPDATE {TABLE} SET lease_until = extract(epoch FROM clock_timestamp()) + %s "
                "WHERE run_id = %s AND partition = %s AND holder = %s AND generation = %s",
                (lease_s, claim.run_id, claim.partition, claim.holder, claim.generation),
            ).rowcount)

    def release(self, claim: PartitionClaim) -> None:
        """Give the partition up (done, or a clean stop): another process need not wait for the lease."""
        with self.db.write(fenced=False) as c:
            c.exec_driver_sql(
                f"UPDATE {TABLE} SET holder = NULL, lease_until = NULL "
                "WHERE run_id = %s AND partition = %s AND holder = %s AND generation = %s",
                (claim.run_id, claim.partition, claim.holder, claim.generation),
            )

    def fenced(self, sink: ReadModelSink, claim: PartitionClaim) -> ReadModelSink:
        """A handle of ``sink``'s database whose every write checks the claim first (and the sink's own
        fences: a rebuild's lock)."""
        handle = sink.reopen()
        assert isinstance(handle, ReadModelDB)
        handle.fences.append(ClaimFence(claim))
        return handle

    def holders(self, run_id: str) -> dict[int, Any]:
        """Each partition's holder (None: free), for reports."""
        with self.db.read() as c:
            rows = c.exec_driver_sql(f"SELECT partition, holder FROM {TABLE} WHERE run_id = %s", (run_id,)).fetchall()
        return {int(r[0]): r[1] for r in rows}
