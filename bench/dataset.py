"""The benchmark data: the shop's legacy history, generated once per (N, seed) and cached.

``eventmig.jobs.seed.ShopHistory`` produces N events over about N/10 streams, most
of them at old schema versions, with payloads of 150 to 300 bytes. The first
time a size is asked for, it is written through eventmig's SQLite store
(``seed``) into ``bench/data/shop-n<N>-s<seed>.db``; every benchmark run then
starts from a copy of that file (SQLite) or from a bulk load of its rows
through the store's ``write_batch`` (PostgreSQL), so runs never regenerate
data and every case and baseline reads exactly the same events.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
DEFAULT_SEED = 42
POSTGRES_URL = os.environ.get("EVENTMIG_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_READ_SQL = (
    "SELECT stream, version, event_id, type, data, metadata, recorded_at FROM events "
    "WHERE global_position > ? ORDER BY global_position LIMIT ?"
)


def cached_dataset(n: int, seed: int = DEFAULT_SEED, *, data_dir: Path = DATA_DIR, log: Any = print) -> Path:
    """Path of the cached legacy store of ``n`` events; generated on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"shop-n{n}-s{seed}.db"
    if path.exists():
        return path
    from eventmig.jobs.seed import seed as seed_store
    from eventmig.backends import open_store

    tmp = data_dir / f".{path.name}.{os.getpid()}.tmp"
    _remove_sqlite(tmp)
    started = time.perf_counter()
    log(f"generating {n:,} shop events (seed {seed}) into {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    store = open_store(f"sqlite:///{tmp}")
    try:
        written = seed_store(store, n, seed=seed, batch_size=10_000)
    finally:
        store.close()
    if written != n:
        raise RuntimeError(f"generated {written} events instead of {n}")
    _checkpoint(tmp)
    os.replace(tmp, path)
    log(f"  generated in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return path


def copy_dataset(source: Path, target: Path) -> Path:
    """A private copy of a cached store for one run (the cache itself is never written)."""
    _remove_sqlite(target)
    shutil.copyfile(source, target)
    return target


def dataset_stats(path: Path) -> dict[str, Any]:
    """Events, streams and payload sizes of a cached store (shown in the results)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        events, streams, avg_data, min_data, max_data = conn.execute(
            "SELECT count(*), count(DISTINCT stream), avg(length(data)), min(length(data)), max(length(data)) FROM events"
        ).fetchone()
        legacy = conn.execute(
            "SELECT count(*) FROM events WHERE type IN ('ItemAdded', 'CartViewed', 'OrderShipped') "
            "OR json_extract(metadata, '$.schema_version') IS NULL AND type IN ('OrderPlaced', 'CustomerRegistered') "
            "OR json_extract(metadata, '$.schema_version') = 2 AND type = 'OrderPlaced'"
        ).fetchone()[0]
    return {
        "events": events,
        "streams": streams,
        "payload_bytes_avg": round(avg_data or 0, 1),
        "payload_bytes_min": min_data,
        "payload_bytes_max": max_data,
        "events_needing_upcast_or_drop": legacy,
    }


def read_rows(path: Path, batch_size: int = 10_000) -> Iterator[list[tuple[Any, ...]]]:
    """The cached events as TargetEvent-ordered tuples, in commit order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        position = -1
        while True:
            cur = conn.execute(
                "SELECT global_position, stream, version, event_id, type, data, metadata, recorded_at FROM events "
                "WHERE global_position > ? ORDER BY global_position LIMIT ?",
                (position, batch_size),
            )
            rows = cur.fetchall()
            if not rows:
                return
            position = rows[-1][0]
            yield [r[1:] for r in rows]
    finally:
        conn.close()


# ------------------------------------------------------------------ PostgreSQL
def postgres_available(url: str = POSTGRES_URL) -> str | None:
    """None if the server answers, else why not (the PostgreSQL cases are then skipped)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is in the bench extra
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means: not available
        return f"PostgreSQL at {url} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


def postgres_version(url: str = POSTGRES_URL) -> str | None:
    try:
        import psycopg

        with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001
        return None


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it (no ``+psycopg``)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def new_schema(url: str = POSTGRES_URL, prefix: str = "bench") -> tuple[str, str]:
    """Create a fresh schema; return (schema, store URL whose connections use it)."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(schema: str, url: str = POSTGRES_URL) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def load_postgres(source: Path, store_url: str) -> float:
    """Load a cached data set into a fresh PostgreSQL store through ``write_batch``; return seconds."""
    from eventmig.backends import open_store
    from eventmig.model.records import TargetEvent

    started = time.perf_counter()
    store = open_store(store_url)
    try:
        for rows in read_rows(source):
            store.write_batch([TargetEvent(*r) for r in rows])
    finally:
        store.close()
    import psycopg

    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE events")
    return time.perf_counter() - started


# ------------------------------------------------------------------- helpers
def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".migrate.lock", ".writers"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            p.unlink()


remove_sqlite = _remove_sqlite
