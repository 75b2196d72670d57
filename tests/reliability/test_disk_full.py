"""A full disk under a SQLite task hub.

On a small file system of its own (a size-limited tmpfs, mounted when the suite runs as
root; skipped otherwise) a worker and a client fill the disk: clients get
:class:`StoreFullError`, the worker says so once per interval rather than with a traceback
per attempt, and once space is freed the hub goes on by itself (no manual checkpoint) and
every instance that was accepted completes. Without root, ``PRAGMA max_page_count`` stands
in for the small disk (it limits the database, not its WAL). In normal runs the WAL stays
near its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import duratask as dt
from duratask.backends.base import OrchestrationMessage
from duratask.backends.sqlite import SqliteOrchestrationService
from duratask.backends.sqlite._database import WAL_LIMIT_BYTES
from duratask.history import ExecutionStarted
from duratask.integrity import check_hub
from tests.conformance.conftest import T0, drop_schema, new_schema, require_postgres
from tests.conformance.e2e_hub import wait_until

pytestmark = pytest.mark.timeout(120)

DISK_BYTES = 16 * 1024 * 1024
INPUT = "x" * 64_000  # each instance's input: sixteen pages


async def echo(ctx: dt.ActivityContext, text: str) -> int:
    return len(text)


async def orchestration(ctx: dt.OrchestrationContext, text: str) -> int:
    length: int = await ctx.call_activity(echo, input=text[:100])
    return length


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a file system of ``DISK_BYTES``."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A file taking all the free space of ``folder``'s file system but ``leave`` bytes."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(shutil.disk_usage(folder).free - leave, 0))
    return filler


class Records(logging.Handler):
    """What the worker logs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def heartbeats_failed(self) -> list[logging.LogRecord]:
        return [
            r for r in self.records if getattr(r, "event", "") == "duratask.worker.heartbeat_failed"
        ]

    def full(self) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", "") == "duratask.store.full"]

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info is not None]


@contextlib.contextmanager
def worker_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("duratask.worker")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_full_disk_recovers_by_itself_once_space_is_freed(small_disk: Path) -> None:
    path = small_disk / "hub.db"
    url = f"sqlite:///{path}"
    worker = dt.TaskHubWorker(url, lease_duration=timedelta(seconds=3))
    worker.add_orchestration(orchestration)
    worker.add_activity(echo)
    accepted: list[str] = []
    refused: list[dt.StoreFullError] = []
    with worker_log() as log:
        async with dt.AsyncTaskHubClient(url) as client:
            worker.start()
            try:
                filler = fill(small_disk, leave=6 * 1024 * 1024)
                # Start instances (the worker runs them meanwhile) until the disk is full.
                for _ in range(1000):
                    try:
                        accepted.append(
                            await client.schedule_new_orchestration(orchestration, input=INPUT)
                        )
                    except dt.StoreFullError as exc:
                        refused.append(exc)
                        if len(refused) >= 20:
                            break
                        await asyncio.sleep(0.05)
                assert refused, "the disk never filled"
                assert "database or disk is full" in str(refused[0])
                assert "free some space and the hub goes on by itself" in str(refused[0])

                async def worker_reported_it() -> bool:  # the worker meets the full disk too
                    return bool(log.full())

                await wait_until(worker_reported_it, 30, "the worker's report of the full disk")
                reports_while_full = len(log.full())

                # Space is back: room for the WAL's limit and for the accepted work (each
                # instance's input is written once more, into its history). Nothing else is
                # done by hand.
                freed = WAL_LIMIT_BYTES + 2 * len(INPUT) * len(accepted) + 1024 * 1024
                os.truncate(filler, max(filler.stat().st_size - freed, 0))
                largest_wal = 0

                async def all_completed() -> bool:
                    nonlocal largest_wal
                    with contextlib.suppress(OSError):
                        largest_wal = max(largest_wal, os.path.getsize(f"{path}-wal"))
                    for instance_id in accepted:
                        state = await client.get_orchestration_state(instance_id)
                        if state is None or not state.runtime_status.is_terminal:
                            return False
                    return True

                await wait_until(all_completed, what="every accepted instance", timeout=90)
                late = await client.schedule_new_orchestration(orchestration, input="late")
                done = await client.wait_for_orchestration_completion(late, timeout=30)
                assert done.runtime_status is dt.OrchestrationStatus.COMPLETED
            finally:
                worker.stop()
            for instance_id in accepted:
                state = await client.get_orchestration_state(instance_id)
                assert state is not None
                assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
                assert state.serialized_output == "100"
    assert len(accepted) > 10
    assert largest_wal < 2 * WAL_LIMIT_BYTES + 2 * 1024 * 1024, "the WAL took the freed space"
    assert await check_hub(url) == []
    assert reports_while_full == 1, [r.getMessage() for r in log.full()]
    assert "the task hub's disk is full" in log.full()[0].getMessage()
    assert log.tracebacks() == [], log.tracebacks()[:3]
    assert log.heartbeats_failed() == [], "a full disk is one report, not one per heartbeat"


def start_message(n: int, text: str) -> OrchestrationMessage:
    event = ExecutionStarted(
        timestamp=T0, name="o", input=f'"{text}"', instance_id=f"i{n}", execution_id="e"
    )
    return OrchestrationMessage(f"i{n}", event)


async def test_writes_refused_for_want_of_space_are_typed_and_resume_by_themselves(
    tmp_path: Path,
) -> None:
    """Without a small disk: the database is held to its size with ``max_page_count``."""
    store = SqliteOrchestrationService(str(tmp_path / "hub.db"))
    await store.open()
    try:
        await store.create_instance(start_message(0, "first"), frozenset())
        writer = store._db._conn
        assert writer is not None
        pages = writer.execute("PRAGMA page_count").fetchone()[0]
        writer.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(dt.StoreFullError, match="database or disk is full"):
            for n in range(1, 50):
                await store.create_instance(start_message(n, "x" * 20_000), frozenset())
        with pytest.raises(dt.StoreFullError):  # at once, still full
            await store.create_instance(start_message(99, "y" * 20_000), frozenset())
        writer.execute("PRAGMA max_page_count = 1000000")  # space is back

        async def accepted() -> bool:
            try:
                await store.create_instance(start_message(100, "z" * 20_000), frozenset())
            except dt.StoreFullError:
                return False
            return True

        await wait_until(accepted, what="writes to go through again", timeout=10)
        state = await store.get_instance("i100")
        assert state is not None
        assert await store.get_instance("i0") is not None, "nothing written before is lost"
    finally:
        await store.close()


async def test_the_wal_stays_near_its_limit_in_normal_runs(tmp_path: Path) -> None:
    """Once, the WAL grew to 2.7 times the database: it was checkpointed every 200 commits
    whatever their size, and never truncated."""
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path))
    await store.open()
    largest = 0
    try:
        for n in range(400):  # about 25 MB written
            await store.create_instance(start_message(n, "x" * 64_000), frozenset())
            largest = max(largest, os.path.getsize(f"{path}-wal"))
    finally:
        await store.close()
    assert largest < WAL_LIMIT_BYTES + 2 * 1024 * 1024, largest
    assert path.stat().st_size > 20 * 1024 * 1024


async def test_the_wal_is_reused_in_place_once_it_reached_its_limit(tmp_path: Path) -> None:
    """Checkpointed as each round of commits reaches the end of the file, the WAL restarts
    at its start and is overwritten, neither emptied (then grown again, which syncs
    slower) nor grown far past its limit."""
    path = tmp_path / "hub.db"
    store = SqliteOrchestrationService(str(path))
    await store.open()
    sizes: list[int] = []
    try:
        for n in range(300):  # about 20 MB written: five rounds of the WAL
            await store.create_instance(start_message(n, "x" * 64_000), frozenset())
            sizes.append(os.path.getsize(f"{path}-wal"))
    finally:
        await store.close()
    full = next(i for i, size in enumerate(sizes) if size >= WAL_LIMIT_BYTES)
    assert min(sizes[full:]) >= WAL_LIMIT_BYTES, "the WAL was emptied"
    assert max(sizes) < WAL_LIMIT_BYTES + 512 * 1024, max(sizes)


async def test_a_full_disk_on_the_postgres_server_is_a_store_full_error(
    request: pytest.FixtureRequest,
) -> None:
    """The server's "disk full" (SQLSTATE 53100), raised here by the statement itself."""
    server = require_postgres()
    schema = new_schema()
    request.addfinalizer(lambda: drop_schema(schema))
    from duratask.backends.postgres import PostgresOrchestrationService
    from duratask.backends.postgres._database import Connection

    store = PostgresOrchestrationService(server, schema=schema)
    await store.open()

    async def job(conn: Connection) -> None:
        await conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"
        )

    try:
        with pytest.raises(dt.StoreFullError, match="could not extend file"):
            await store._db.transaction(job)
    finally:
        await store.close()
