"""SQLite group commit: queued writes share one transaction; a failed one is undone alone."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from duratask.backends.sqlite._database import Database


async def _started_with_table(tmp_path: Path) -> Database:
    """A started store with an empty table ``t (v)``."""
    db = Database(str(tmp_path / "hub.db"))
    db.start()
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER NOT NULL)"))
    return db


def inserting(v: int) -> Callable[[sqlite3.Connection], sqlite3.Cursor]:
    """A write job adding the row ``v`` to ``t``."""
    return lambda c: c.execute("INSERT INTO t VALUES (?)", (v,))


async def test_queued_writes_share_commits_and_fail_alone(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "hub.db"))
    db.start()
    batches: list[int] = []
    commit_batch = db._commit_batch

    def counting(batch: list[Any]) -> Coroutine[Any, Any, list[tuple[bool, object]]]:
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


async def test_a_batch_without_failures_runs_each_job_once_and_no_savepoint_each(
    tmp_path: Path,
) -> None:
    db = await _started_with_table(tmp_path)
    try:
        statements: list[str] = []
        assert db._conn is not None
        db._conn.set_trace_callback(statements.append)
        runs: list[int] = []

        def insert(v: int) -> Any:
            def job(conn: sqlite3.Connection) -> int:
                runs.append(v)
                conn.execute("INSERT INTO t (v) VALUES (?)", (v,))
                return v

            return job

        results = await asyncio.gather(*(db.write(insert(v)) for v in range(10)))
        db._conn.set_trace_callback(None)
    finally:
        await db.stop()
    assert results == list(range(10))
    assert sorted(runs) == list(range(10)), "each job ran exactly once"
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert 1 <= len(savepoints) < 10, f"one savepoint per batch, not per job: {savepoints}"


async def test_savepoint_journals_stay_in_memory(tmp_path: Path) -> None:
    """A batch's savepoints journal in memory: on disk, every transaction would create,
    write and delete a temporary file on the event loop."""
    db = Database(str(tmp_path / "hub.db"))
    db.start()
    try:
        assert await db.write(lambda c: c.execute("PRAGMA temp_store").fetchone()[0]) == 2
    finally:
        await db.stop()


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
        # In one batch with a durable write, a lease write is synced like it. Writes queued
        # in the same turn of the event loop share a batch.
        lease = asyncio.ensure_future(db.write(level, durable=False))
        durable = asyncio.ensure_future(db.write(level))
        assert [await lease, await durable] == [2, 2]
        await db.write(level, durable=False)
        assert await db.run(level) == 2, "other jobs find the configured level again"
        assert await db.write(level) == 2
    finally:
        await db.stop()


async def test_stop_lets_queued_writes_finish_then_refuses_more(tmp_path: Path) -> None:
    from duratask.errors import StoreError

    db = Database(str(tmp_path / "hub.db"))
    db.start()
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER NOT NULL)"))
    writes = [asyncio.ensure_future(db.write(inserting(v))) for v in range(20)]
    await asyncio.sleep(0)  # the writes are queued and their drain has started
    await db.stop()
    assert all(w.done() and w.exception() is None for w in writes)
    with pytest.raises(StoreError, match="not open"):
        await db.write(lambda c: None)
    db.start()
    try:
        assert await db.read(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 20
    finally:
        await db.stop()


async def test_a_store_serves_writes_from_two_event_loops(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "hub.db"))
    db.start()
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER NOT NULL)"))

    async def insert_many(first: int) -> None:
        for v in range(first, first + 50):
            await db.write(inserting(v))

    other = threading.Thread(target=lambda: asyncio.run(insert_many(1000)))
    other.start()
    try:
        await insert_many(0)
    finally:
        await asyncio.to_thread(other.join)
    try:
        values = await db.read(lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")])
        assert values == [*range(50), *range(1000, 1050)]
    finally:
        await db.stop()


async def test_durable_commits_run_on_the_loop_only_while_the_disk_is_quick(
    tmp_path: Path,
) -> None:
    db = await _started_with_table(tmp_path)
    try:
        committed_on: list[int] = []
        assert db._conn is not None
        db._conn.set_trace_callback(
            lambda sql: committed_on.append(threading.get_ident()) if sql == "COMMIT" else None
        )
        db._commit_seconds = 1.0  # a disk whose fsync takes a second: off the loop
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        db._commit_seconds = 0.0  # a quick disk: a hand-over would cost more than the fsync
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        loop_thread = threading.get_ident()
        assert committed_on[0] != loop_thread and committed_on[1] == loop_thread
        assert db._commit_seconds > 0.0, "the commit on the loop was timed too"
    finally:
        await db.stop()


async def test_a_relaxed_write_is_made_durable_by_the_next_covering_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_durable returns once a covering write's durable commit follows a relaxed one,
    with no fsync of its own; without one, it syncs the WAL itself once its wait is over."""
    db = await _started_with_table(tmp_path)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    try:
        await db.write(inserting(1))
        await db.wait_durable(60)  # nothing relaxed: at once

        await db.write(inserting(2), durable=False)
        waiting = asyncio.ensure_future(db.wait_durable(60))
        await asyncio.sleep(0)
        assert not waiting.done()
        await db.write(lambda c: None)  # durable, but writes nothing: syncs nothing
        for _ in range(3):  # the turns a wake-up would take
            await asyncio.sleep(0)
        assert not waiting.done(), "a commit that wrote nothing was taken for a sync"
        await db.write(inserting(3), covering=True)  # its sync covers the relaxed one before
        await asyncio.wait_for(waiting, 10)
        assert synced == []

        await db.write(inserting(4), durable=False)
        await asyncio.wait_for(db.wait_durable(0.01), 10)
        assert len(synced) == 1, "the WAL was synced when no durable commit came"
        await db.wait_durable(60)  # covered now: at once
    finally:
        await db.stop()
