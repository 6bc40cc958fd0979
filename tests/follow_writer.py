"""A writer process for the follow tests: appends its share of a shop history straight into PostgreSQL.

It writes as an application that bypasses eventmig's append would: plain
INSERTs, no table lock, so positions commit out of order; it holds each
transaction open a little while, and rolls some back (their positions stay
empty for ever) before writing the same events for real.

    python tests/follow_writer.py URL SEED TOTAL START WRITER WRITERS
"""

from __future__ import annotations

import random
import sys
import time
import zlib

import psycopg
from sqlalchemy.engine import make_url

from eventmig.jobs.seed import ShopHistory

#: share of transactions rolled back (and then written again)
ROLLBACK_SHARE = 0.25


def main(url: str, seed: int, total: int, start: int, writer: int, writers: int) -> None:
    events = [e for e in list(ShopHistory(total, seed).events())[start:]
              if zlib.crc32(e.stream.encode()) % writers == writer]
    rng = random.Random(writer)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    sql = ("INSERT INTO events (stream, version, event_id, type, data, metadata, recorded_at) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s)")
    with psycopg.connect(conninfo) as conn:
        at = 0
        while at < len(events):
            chunk = events[at:at + rng.randint(1, 4)]
            rows = [(e.stream, e.version, e.event_id, e.type, e.data, e.metadata, int(time.time() * 1e6)) for e in chunk]
            if rng.random() < ROLLBACK_SHARE:
                with conn.cursor() as cur:
                    cur.executemany(sql, [(s, v, f"rolled-back-{i}", *rest) for s, v, i, *rest in rows])
                time.sleep(rng.random() * 0.02)
                conn.rollback()
            with conn.cursor() as cur:
                cur.executemany(sql, rows)
            time.sleep(rng.random() * 0.02)
            conn.commit()
            at += len(chunk)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
