"""SQLite group commit: queued writes share one transaction, each in its own savepoint."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from duratask.backends.sqlite.database import Database


async def test_queued_writes_share_commits_and_fail_alone(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "hub.db"))
    db.start()
    batches: list[int] = []
    commit_batch = db._commit_batch

    def counting(batch: list[Any]) -> list[tuple[bool, object]]:
        batches.append(len(batch))
        return commit_batch(batch)

    db._commit_batch = counting  # type: ignore[method-assign]
    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER NOT NULL)"))

        def insert(v: int) -> Any:
            def job(conn: sqlite3.Connection) -> int:
                conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
                if v == 7:
                    raise ValueError("job 7 fails after writing")
                return v

            return job

        results = await asyncio.gather(
            *(db.write(insert(v)) for v in range(20)), return_exceptions=True
        )
        stored = await db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")])
    finally:
        await db.stop()

    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [v for v in range(20) if v != 7]
    assert stored == [v for v in range(20) if v != 7], "the failed job's insert was undone"
    assert len(batches) - 1 < 20, f"20 concurrent writes took {batches[1:]} transactions"


async def test_write_before_start_is_refused(tmp_path: Path) -> None:
    from duratask.errors import StoreError

    db = Database(str(tmp_path / "hub.db"))
    with pytest.raises(StoreError, match="not open"):
        await db.write(lambda c: None)


async def test_only_batches_of_lease_writes_skip_the_fsync(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "hub.db"))  # synchronous=FULL by default
    db.start()

    def level(conn: sqlite3.Connection) -> int:  # 1 = NORMAL, 2 = FULL
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    try:
        assert await db.write(level) == 2
        assert await db.write(level, durable=False) == 1
        # In one batch with a durable write, a lease write is synced like it. The writer is
        # held busy until both are queued, so they share the next batch.
        gate = threading.Event()
        busy = asyncio.ensure_future(db.write(lambda c: gate.wait(5)))
        lease = asyncio.ensure_future(db.write(level, durable=False))
        durable = asyncio.ensure_future(db.write(level))
        await asyncio.sleep(0)
        gate.set()
        await busy
        assert [await lease, await durable] == [2, 2]
        await db.write(level, durable=False)
        assert await db.run(level) == 2, "other jobs find the configured level again"
        assert await db.write(level) == 2
    finally:
        await db.stop()
