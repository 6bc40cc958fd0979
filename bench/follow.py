"""``python -m bench.follow``: follow throughput and end-to-end lag at a steady append rate.

A store holds ``--base`` shop events, rebuilt into read models; a follower
(``eventmig.jobs.follow``, in a process of its own) keeps them current while this
process appends the rest of the same shop history at ``--rate`` events per
second for ``--seconds``, in a batch every 10 ms (PostgreSQL: announced,
so the follower hears of it by LISTEN). A sampler reads the followers'
checkpoints every 10 ms; an appended batch's end-to-end lag is the time from
its commit until every projection's checkpoint covers it.

Reported per rate: events applied per second (store events; each is folded
into every projection) over the run, and the lag's median, 95th percentile
and maximum. A follower that cannot keep up shows it as a lag that grows
with the run.

    .venv/bin/python -m bench.follow --rates 1000,10000 --seconds 30 --store sqlite
    .venv/bin/python -m bench.follow --store postgres
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: appends per second come in batches this many seconds apart
TICK_S = 0.01


def _follower(url: str, stop: Any, ready: Any) -> None:
    sys.path.insert(0, str(REPO))
    import projections as shop
    import upcasters

    from eventmig.jobs.follow import follow
    from eventmig.backends import open_store

    with open_store(url) as store:
        ready.set()
        follow(store, shop.projections, registry=upcasters.registry.compile(), stop=stop.is_set, poll_s=0.05,
               batch_size=10_000)


def measure(url: str, rate: int, seconds: float, base: int) -> dict[str, Any]:
    """One steady run at ``rate`` appended events per second; the store at ``url`` must be empty."""
    sys.path.insert(0, str(REPO))
    import projections as shop
    import upcasters

    from eventmig.jobs.seed import ShopHistory
    from eventmig.backends.sql.following import FollowerDB
    from eventmig.backends.sql.readmodels import ReadModelDB
    from eventmig.jobs.rebuild import rebuild
    from eventmig.backends import open_store

    total = base + int(rate * seconds)
    events = list(ShopHistory(total, 5).events())
    store = open_store(url)
    store.write_batch(events[:base])
    rebuild(store, shop.projections, registry=upcasters.registry.compile(), workers=1)
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_follower, args=(url, stop, ready))
    proc.start()
    ready.wait(60)
    db = ReadModelDB(url)
    fdb = FollowerDB(db)
    samples: list[tuple[float, int]] = []
    sampling = True

    def sample() -> None:
        while sampling:
            rows = fdb.followers()
            if len(rows) == len(shop.projections) and all(r.checkpoint is not None for r in rows):
                samples.append((time.monotonic(), min(r.checkpoint for r in rows)))
            time.sleep(TICK_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    written: list[tuple[float, int]] = []  # (commit time, head position after it)
    per_tick = max(1, int(rate * TICK_S))
    at, started = base, time.monotonic()
    while at < total:
        due = started + (at - base) / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        store.write_batch(events[at:at + per_tick])
        at += per_tick
        written.append((time.monotonic(), store.head_position()))
    appended_for = time.monotonic() - started
    head = store.head_position()
    deadline = time.monotonic() + max(60.0, seconds * 4)
    while time.monotonic() < deadline and not (samples and samples[-1][1] >= head):
        time.sleep(TICK_S)
    sampling = False
    sampler.join()
    stop.set()
    proc.join(60)
    store.close()
    db.close()
    lags = []
    for committed, position in written:
        seen = next((t for t, checkpoint in samples if checkpoint >= position and t >= committed), None)
        if seen is not None:
            lags.append(seen - committed)
    caught_up = samples[-1][0] if samples and samples[-1][1] >= head else None
    span = (caught_up or time.monotonic()) - started
    return {
        "rate": rate, "seconds": round(appended_for, 2), "appended": total - base,
        "appended_per_second": round((total - base) / appended_for, 1),
        "applied_per_second": round((total - base) / span, 1) if caught_up else None,
        "caught_up": caught_up is not None,
        "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
        "lag_p95_s": round(statistics.quantiles(lags, n=20)[-1], 3) if len(lags) >= 2 else None,
        "lag_max_s": round(max(lags), 3) if lags else None,
        "batches_unseen": len(written) - len(lags),
    }


def _fresh_url(store: str, work: Path, rate: int) -> tuple[str, Any]:
    if store == "sqlite":
        return f"sqlite:///{work}/follow-{rate}.db", None
    from eventmig.testing.plugin import fresh_schema

    schema = fresh_schema(POSTGRES if store == "postgres" else store)
    return schema.__enter__(), schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000", help="appended events per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of appends per rate")
    parser.add_argument("--base", type=int, default=100_000, help="events in the store before following starts")
    parser.add_argument("--store", default="sqlite", help="sqlite, postgres, or a PostgreSQL server URL")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in (int(r) for r in args.rates.split(",") if r.strip()):
            url, schema = _fresh_url(args.store, Path(tmp), rate)
            try:
                result = measure(url, rate, args.seconds, args.base)
            finally:
                if schema is not None:
                    schema.__exit__(None, None, None)
            result["store"] = args.store if args.store in ("sqlite", "postgres") else "postgres"
            results.append(result)
            print(json.dumps(result), flush=True)
    return 0 if all(r["caught_up"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
