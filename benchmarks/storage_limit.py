"""L, the storage limit: how many small write transactions per second the store commits.

Measured raw, without duratask: one connection inserting a small row and committing, in a
loop, for a fixed time. A durable workflow engine needs at least one commit per step (duratask
needs two per activity: the activity's result, then the orchestration episode that consumes
it), so L bounds what any engine can do on this machine's disk, in this run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

from benchmarks.hubs import HubPlace

# The connection settings of duratask's SQLite store (src/duratask/backends/sqlite/database.py):
# WAL journal, synchronous=FULL, a busy timeout, foreign keys on; writes in BEGIN IMMEDIATE.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
)
_ROW = "x" * 64


def sqlite_commits_per_s(path: str, seconds: float) -> dict[str, float]:
    """Commits/s of ``BEGIN IMMEDIATE; INSERT; COMMIT`` on one connection with duratask's
    pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        conn.execute("CREATE TABLE bench_limit (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_limit (payload) VALUES (?)", (_ROW,))
            conn.execute("COMMIT")
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        return {"commits_per_s": count / (now - started), "commits": count}
    finally:
        conn.close()


async def sqlite_store_thread_commits_per_s(path: str, seconds: float) -> float | None:
    """The same commits through duratask's own SQLite connection layer (statements on the
    event loop, the commit on the store's thread): the limit as duratask's store can reach it.
    None if that internal layer is not available."""
    try:
        from duratask.backends.sqlite._database import Database
    except ImportError:
        return None
    db = Database(path)
    db.start()
    try:
        await db.run(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS bench_limit2 (id INTEGER PRIMARY KEY, payload TEXT)"
            )
        )
        count = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            await db.write(
                lambda c: c.execute("INSERT INTO bench_limit2 (payload) VALUES (?)", (_ROW,))
            )
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return count / (now - started)
    finally:
        await db.stop()


def pg_commits_per_s(place: HubPlace, connections: int, seconds: float) -> dict[str, float]:
    """Total commits/s of ``INSERT`` + ``COMMIT`` loops on ``connections`` connections in
    parallel (one thread each), into one table of a fresh schema."""
    import psycopg
    from psycopg import sql

    schema = sql.Identifier(place.schema)
    table = sql.SQL("{}.bench_limit").format(schema)
    with psycopg.connect(place.pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        admin.execute(
            sql.SQL("CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)").format(
                table
            )
        )
    insert = sql.SQL("INSERT INTO {} (payload) VALUES (%s)").format(table)
    counts = [0] * connections
    errors: list[BaseException] = []
    stop_at: list[float] = []
    # The last party to arrive sets the common deadline, once every connection is open.
    barrier = threading.Barrier(
        connections + 1, action=lambda: stop_at.append(time.perf_counter() + seconds)
    )

    def loop(index: int) -> None:
        try:
            with psycopg.connect(place.pg_url) as conn:
                barrier.wait()
                deadline = stop_at[0]
                while time.perf_counter() < deadline:
                    conn.execute(insert, (_ROW,), prepare=True)
                    conn.commit()
                    counts[index] += 1
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - (stop_at[0] - seconds)
    total = sum(counts)
    return {"commits_per_s": total / elapsed, "commits": total, "connections": connections}


def measure(place: HubPlace, params: dict[str, Any]) -> dict[str, Any]:
    """Run L for ``place.store`` with ``params`` (``seconds``, ``connections``)."""
    seconds = float(params.get("seconds", 3.0))
    if place.store == "sqlite":
        result: dict[str, Any] = sqlite_commits_per_s(place.sqlite_path("limit.db"), seconds)
        via = asyncio.run(
            sqlite_store_thread_commits_per_s(place.sqlite_path("limit2.db"), seconds)
        )
        if via is not None:
            result["store_thread_commits_per_s"] = via
        return result
    if place.store == "postgresql":
        return pg_commits_per_s(place, int(params.get("connections", 1)), seconds)
    if place.store == "azure":
        # A table storage store's commit is an entity write: Azurite's inserts into one
        # partition, one in flight, are its L.
        from benchmarks.azure_storage import raw_limit

        inserts = asyncio.run(raw_limit(place.duratask_url(), seconds))
        return {"commits_per_s": inserts, "commits": round(inserts * seconds)}
    raise ValueError(f"no storage limit for store {place.store!r}")
