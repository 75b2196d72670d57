"""One SQLite connection, owned by a dedicated thread, with transactions, retries and migrations.

Every call runs on the store's single worker thread and is awaited through
``loop.run_in_executor``, so the blocking ``sqlite3`` module never stalls an event loop and
the same store can serve callers from different event loops over its life.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from duratask.backends.migrations import load_migrations
from duratask.backends.sqlite import queries
from duratask.errors import StoreError

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, one per ``execute`` (executescript would COMMIT)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if any(s.strip() and not s.strip().startswith("--") for s in pending.splitlines()):
        raise StoreError(f"incomplete SQL statement at the end of a migration: {pending!r}")
    return statements


# Levels that fsync on every commit (in WAL mode), which a non-durable batch may skip.
_SYNCING = frozenset({"FULL", "EXTRA"})


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """True for "database is locked/busy": another connection holds the lock; retry."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """A SQLite file reached through one connection on one dedicated thread."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        retries: int = 5,
        retry_delay: float = 0.02,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        self.path = path
        self._synchronous = synchronous
        self._conn_synchronous: str | None = None
        self._busy_timeout = busy_timeout
        self._retries = retries
        self._retry_delay = retry_delay
        self._state_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._pending_writes: list[_PendingWrite] = []
        self._draining = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> bool:
        """Start the worker thread; False if it was already running. The connection opens
        on first use."""
        with self._state_lock:
            if self._executor is not None:
                return False
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="duratask-sqlite")
            return True

    async def stop(self) -> None:
        """Close the connection and stop the thread; :meth:`start` may be called again."""
        with self._state_lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"SQLite store {self.path!r}: cannot create its directory: {exc}"
                ) from exc
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                self._conn_synchronous = self._synchronous
                conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _synced_connection(self) -> sqlite3.Connection:
        """The connection at the configured sync level (a relaxed lease batch may have left
        it lower), for jobs that write outside the group commit (migrations)."""
        conn = self._connection()
        if not conn.in_transaction:
            self._set_synchronous(conn, self._synchronous)
        return conn

    def _set_synchronous(self, conn: sqlite3.Connection, level: str) -> None:
        """Set the connection's sync level (only between transactions: SQLite refuses it
        inside one)."""
        if self._conn_synchronous != level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._conn_synchronous = level

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- running jobs --------------------------------------------------------------------
    async def write(self, job: Job[T], *, durable: bool = True) -> T:
        """Run ``job`` in a write transaction: its changes are committed if it returns and
        rolled back if it raises. It may run more than once (busy retries), so it must only
        touch the database.

        A write that need not survive a power loss (``durable=False``: a lease, which dies
        with its worker anyway) skips the fsync when its whole batch is like it; a crash of
        the process loses nothing either way, and the next durable commit syncs it too.

        Group commit: writes that queue up while one is being committed are run together in
        the next ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint, so they share
        one commit (one fsync) yet each still commits or rolls back on its own.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._state_lock:
            executor = self._executor
            if executor is None:
                raise StoreError(f"SQLite store {self.path!r} is not open; call open() first")
            self._pending_writes.append(_PendingWrite(job, loop, future, durable))
            start_drain = not self._draining
            self._draining = True
        if start_drain:
            executor.submit(self._drain_writes)
        return await future

    def _drain_writes(self) -> None:
        """On the connection's thread: commit queued writes, a batch per transaction."""
        while True:
            with self._state_lock:
                batch, self._pending_writes = self._pending_writes, []
                if not batch:
                    self._draining = False
                    return
            try:
                outcomes = self._commit_batch(batch)
            except BaseException as exc:  # the whole batch failed to commit
                error = _store_error(self.path, exc)
                outcomes = [(False, error)] * len(batch)
            # One wake-up per event loop for the whole batch, not one per write.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, tuple[bool, object]]]] = {}
            for pending, outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle_all, settled)
                except RuntimeError:  # that loop is closed: nobody awaits its writes
                    pass

    def _commit_batch(self, batch: list[_PendingWrite]) -> list[tuple[bool, object]]:
        attempt = 0
        while True:
            conn: sqlite3.Connection | None = None
            try:
                # Connecting sets WAL mode, which can be refused as busy while another
                # connection opens the same new file: retried like any busy error.
                conn = self._connection()
                relaxed = self._synchronous in _SYNCING and not any(p.durable for p in batch)
                self._set_synchronous(conn, "NORMAL" if relaxed else self._synchronous)
                conn.execute("BEGIN IMMEDIATE")
                outcomes = [_in_savepoint(conn, pending.job, self.path) for pending in batch]
                conn.execute("COMMIT")
                return outcomes
            except sqlite3.OperationalError as exc:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not is_busy(exc) or attempt >= self._retries:
                    raise
            except BaseException:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            time.sleep(self._retry_delay * 2**attempt)  # the writer thread, not the event loop
            attempt += 1

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` in a read transaction (one consistent snapshot)."""
        return await self.run(lambda conn: _transaction(conn, "BEGIN", job))

    async def run(self, job: Job[T]) -> T:
        """Run ``job`` on the connection's thread, retrying while the database is busy."""
        attempt = 0
        while True:
            executor = self._executor
            if executor is None:
                raise StoreError(f"SQLite store {self.path!r} is not open; call open() first")
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    executor, lambda: job(self._synced_connection())
                )
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt >= self._retries:
                    raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
            await asyncio.sleep(self._retry_delay * 2**attempt)
            attempt += 1

    # -- schema --------------------------------------------------------------------------
    async def migrate(self, now_us: int) -> None:
        """Apply the migrations the file lacks, all in one write transaction.

        The version is read under the write lock, so processes opening a new file at the
        same time apply each migration exactly once."""
        migrations = load_migrations("duratask.backends.sqlite", "SQLite")

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(queries.CREATE_SCHEMA_VERSION)
            current: int = conn.execute(queries.SELECT_SCHEMA_VERSION).fetchone()[0]
            if current > len(migrations):
                raise StoreError(
                    f"SQLite task hub {self.path!r} has schema version {current}, newer than "
                    f"this duratask supports ({len(migrations)})"
                )
            for migration in migrations[current:]:
                for statement in split_statements(migration.script):
                    conn.execute(statement)
                conn.execute(queries.INSERT_SCHEMA_VERSION, (migration.version, now_us))

        await self.write(job)

    async def drop_all_tables(self) -> None:
        """Drop every table of the file (the file itself stays)."""

        def job(conn: sqlite3.Connection) -> None:
            # foreign_keys cannot change inside a transaction; off, tables drop in any order.
            conn.execute("PRAGMA foreign_keys = OFF")
            try:

                def drop(conn: sqlite3.Connection) -> None:
                    for (name,) in conn.execute(queries.LIST_TABLES).fetchall():
                        conn.execute(f"DROP TABLE IF EXISTS {_quote_identifier(name)}")

                _transaction(conn, "BEGIN IMMEDIATE", drop)
            finally:
                conn.execute("PRAGMA foreign_keys = ON")

        await self.run(job)


@dataclass(frozen=True, slots=True)
class _PendingWrite:
    job: Job[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool = True


def _in_savepoint(conn: sqlite3.Connection, job: Job[Any], path: str) -> tuple[bool, object]:
    """Run one job of a batch; (True, result), or (False, error) with its changes undone."""
    conn.execute("SAVEPOINT job")
    try:
        result = job(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            raise  # the whole batch retries
        return False, _store_error(path, exc) if isinstance(exc, sqlite3.Error) else exc
    conn.execute("RELEASE job")
    return True, result


def _store_error(path: str, exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite store {path!r}: {exc}")
    return exc


def _settle_all(settled: list[tuple[asyncio.Future[Any], tuple[bool, object]]]) -> None:
    for future, outcome in settled:
        _settle(future, outcome)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, object]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        assert isinstance(value, BaseException)
        future.set_exception(value)


def _transaction(conn: sqlite3.Connection, begin: str, job: Job[T]) -> T:
    conn.execute(begin)
    try:
        result = job(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
