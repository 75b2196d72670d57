"""A SQLite file's connections, with group commit, retries and migrations.

Statements run on the caller's event loop thread; what may block (waiting for a lock another
process holds, a commit's fsync on a slow disk) runs on the store's own thread. The same
store can serve callers from different event loops over its life.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from duratask.backends._durability import Durability
from duratask.backends._migrations import check_upgradable, load_migrations, mismatched_tables
from duratask.backends._ownership import TABLE, Found, own_objects, survey
from duratask.backends.sqlite import _queries as queries
from duratask.errors import (
    NotATaskHubError,
    StoreError,
    StoreFullError,
    TaskHubNotFoundError,
)

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

MIN_SQLITE_VERSION = (3, 35, 0)  # UPDATE ... RETURNING
SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_FULL = 13


# sqlite3 binds None through its adapter protocol, and without an adapter registered for
# None that lookup fails by raising (and formatting) an AttributeError on every NULL
# parameter: a dozen per episode commit. An adapter that maps None to None binds NULL as
# before, at the cost of one dictionary lookup. (Adapters are process-wide; this one changes
# no value for anybody.) The adapter is the ``get`` of an empty dict, a C function that
# returns None for any key: a Python function would cost a frame for every NULL.
_NOTHING: dict[None, None] = {}
_bind_null: Callable[[None], None] = _NOTHING.get
sqlite3.register_adapter(type(None), _bind_null)


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


# Commits between WAL checkpoints at most (each of a few pages; SQLite's own default is
# 1000 pages).
_CHECKPOINT_EVERY = 200
# The WAL is kept near this size: looked at after every commit (a stat, about a
# microsecond). A checkpoint is run once a round of commits reaches the end of a file this
# big, so that the next round restarts at its start: a WAL overwritten in place is synced
# faster than one that grows (which is also a change of the file's size to journal; on
# ext4, 0.35 against 0.25 ms a commit). A WAL reset truncates the file to it
# (journal_size_limit); once past it by _WAL_SLACK_BYTES (readers held the last round
# from restarting), the WAL is checkpointed and truncated. Bounded, it can neither fill a
# disk in normal runs nor need more than this much freed space to be checkpointed once
# the disk is full.
WAL_LIMIT_BYTES = 4 * 1024 * 1024
_WAL_SLACK_BYTES = 1024 * 1024
# How long a checkpoint that truncates the WAL waits for readers to finish, and how long
# after one that could not (a long read in another process) the next is tried; but once the
# WAL is this many times its limit, every durable commit tries, so that a reader that never
# stops cannot let the WAL take a disk's free space.
_TRUNCATE_WAIT_MS = 250
_TRUNCATE_BACKOFF_SECONDS = 5.0
_WAL_HARD_LIMIT_FACTOR = 2
# While the disk is full, writes fail at once, without touching the disk, but for one try
# this often: a checkpoint first (which frees the WAL's space), then the writes.
FULL_RETRY_SECONDS = 0.5
# A durable COMMIT this quick (a fast local disk) runs on the event loop: handing it to the
# store's thread and back would take longer than the fsync itself.
_INLINE_COMMIT_SECONDS = 0.0005
# Levels that fsync on every commit (in WAL mode), which a non-durable batch may skip.
_SYNCING = frozenset({"FULL", "EXTRA"})


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """True for "database is locked/busy": another connection holds the lock; retry."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def is_full(exc: sqlite3.Error) -> bool:
    """True for "database or disk is full": no space left for the file or its WAL."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == _SQLITE_FULL)
    return "is full" in str(exc).lower()


class Database:
    """A SQLite file reached through one write connection and a read connection per thread.

    Statements run on the calling event loop's thread: they take microseconds, and handing
    each one to another thread would cost a GIL hand-over (up to the interpreter's 5 ms
    switch interval while the loop is busy). What can block runs on the store's own thread:
    waiting for the write lock when another process holds it, and a durable ``COMMIT`` (its
    fsync) unless this disk's commits take less time than that hand-over would. The event
    loop is never stalled on another process, nor on a slow disk.
    """

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
        self._wal_path = f"{path}-wal"
        self._synchronous = synchronous
        self._conn_synchronous: str | None = None
        self._busy_timeout = busy_timeout
        self._retries = retries
        self._retry_delay = retry_delay
        self._state_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used by the one running drain only
        self._readers: dict[int, sqlite3.Connection] = {}  # by thread id
        self._pending_writes: list[_PendingWrite] = []
        self._commits_since_checkpoint = 0
        self._wal_size = 0  # at the last commit
        self._checkpoint_due = False
        self._wal_too_big = False
        self._wal_far_too_big = False
        self._truncate_not_before = 0.0
        # The disk was full at the last write: the next ones wait for a checkpoint.
        self._full = False
        self._next_full_retry = 0.0
        # How long durable commits take here (first measured on the store's thread).
        self._commit_seconds = _INLINE_COMMIT_SECONDS
        self._draining = False
        self._closing = False
        # The running drain, held strongly: an event loop keeps only weak references.
        self._drain_task: asyncio.Task[None] | None = None
        # Relaxed commits (no fsync), and which a durable commit or an fsync has covered.
        self._durability = Durability()
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> bool:
        """Start the store's thread; False if it was already running. Connections open on
        first use."""
        with self._state_lock:
            if self._executor is not None:
                return False
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="duratask-sqlite")
            return True

    async def stop(self) -> None:
        """Let queued writes finish, close the connections and stop the thread;
        :meth:`start` may be called again."""
        loop = asyncio.get_running_loop()
        with self._state_lock:
            executor = self._executor
            if executor is None or self._closing:
                return
            self._closing = True  # refuse new work; the drain still commits on the thread
            idle: asyncio.Future[None] | None = None
            if self._draining:
                idle = loop.create_future()
                self._idle_waiters.append((loop, idle))
        try:
            if idle is not None:
                await idle
            await loop.run_in_executor(executor, self._disconnect)
        finally:
            with self._state_lock:
                self._executor = None
                self._closing = False
            executor.shutdown(wait=False)

    def _check_open(self) -> None:
        if self._executor is None or self._closing:
            raise StoreError(f"SQLite store {self.path!r} is not open; call open() first")

    def _open(self, *, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        """On the store's thread: open the write connection (setting WAL mode can wait for
        another process opening the same new file)."""
        if self._conn is None:
            if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
                raise StoreError(
                    f"SQLite store {self.path!r}: duratask needs SQLite "
                    f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer; this Python's sqlite3 "
                    f"module uses {sqlite3.sqlite_version}"
                )
            conn = self._open(busy_timeout=self._busy_timeout)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                self._conn_synchronous = self._synchronous
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA busy_timeout = 0")  # statements on a loop never wait
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _commit_durably
                conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
                # Savepoint and statement journals in memory: on disk, each transaction
                # would create, write and delete a temporary file on the event loop.
                conn.execute("PRAGMA temp_store = MEMORY")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _reader(self, *, waiting: bool) -> sqlite3.Connection:
        """This thread's read connection; on an event loop's thread (``waiting=False``) it
        fails at once instead of waiting on a lock."""
        key = threading.get_ident()
        with self._state_lock:
            conn = self._readers.get(key)
        if conn is None:
            conn = self._open(busy_timeout=self._busy_timeout if waiting else 0.0)
            with self._state_lock:
                self._readers[key] = conn
        return conn

    def _set_synchronous(self, conn: sqlite3.Connection, level: str) -> None:
        """Set the connection's sync level (only between transactions: SQLite refuses it
        inside one)."""
        if self._conn_synchronous != level:
            conn.execute(f"PRAGMA synchronous = {level}")
            self._conn_synchronous = level

    def _disconnect(self) -> None:
        with self._state_lock:
            readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            reader.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError(f"SQLite store {self.path!r} is not open; call open() first")
        done = executor.submit(fn)
        try:
            return await asyncio.wrap_future(done)
        except asyncio.CancelledError:
            # The caller's loop is closing: let the connection's call end before anyone
            # else uses the connection.
            with contextlib.suppress(BaseException):
                done.result()
            raise

    # -- running jobs --------------------------------------------------------------------
    async def write(self, job: Job[T], *, durable: bool = True, covering: bool = False) -> T:
        """Run ``job`` in a write transaction: its changes are committed if it returns and
        rolled back if it raises. It may run more than once (busy retries), so it must only
        touch the database.

        A write that need not survive a power loss (``durable=False``: a lease, which dies
        with its worker anyway) skips the fsync when its whole batch is like it; a crash of
        the process loses nothing either way, and the next durable commit syncs it too.

        Group commit: writes that queue up while one is being committed are run together in
        the next ``BEGIN IMMEDIATE`` transaction, each inside its own savepoint, so they share
        one commit (one fsync) yet each still commits or rolls back on its own.

        ``covering``: the job surely changes the file (an episode's commit), so that its
        durable commit syncs every relaxed one before it (see :meth:`wait_durable`).
        """
        result: T = await self._enqueue(_PendingWrite(job, durable=durable, covering=covering))
        return result

    async def run(self, job: Job[T]) -> T:
        """Run ``job`` on the store's thread outside any transaction, in turn with the
        writes (for statements a transaction refuses: some pragmas, schema resets)."""
        result: T = await self._enqueue(_PendingWrite(job, alone=True))
        return result

    async def read(self, job: Job[T]) -> T:
        """Run ``job`` in a read transaction (one consistent snapshot)."""
        self._check_open()
        try:
            return _transaction(self._reader(waiting=False), "BEGIN", job)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise _store_error(self.path, exc) from exc
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        # Rare in WAL mode (a file being recovered or checkpointed): wait off the loop.
        try:
            return await self._on_thread(
                lambda: _transaction(self._reader(waiting=True), "BEGIN", job)
            )
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    async def wait_durable(self, timeout: float) -> None:
        """Return once every write committed before the call is durable: at once if it is
        (or this file's sync level never syncs), else when a covering write's durable
        commit has synced it or, after ``timeout`` seconds, once the WAL has been synced
        here."""
        if self._synchronous not in _SYNCING:
            return
        if not await self._durability.wait(self._durability.relaxed, timeout):
            await self._on_thread(self._sync_wal)

    def _sync_wal(self) -> None:
        """On the store's thread: fsync the WAL, which holds every relaxed commit not yet
        checkpointed (a checkpoint syncs the database file it copies them into)."""
        covered = self._durability.relaxed  # those committed before the fsync begins
        try:
            fd = os.open(self._wal_path, os.O_RDONLY)
        except FileNotFoundError:  # no WAL: the last connection checkpointed it all
            fd = None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._durability.covered(covered)

    async def _enqueue(self, pending: _PendingWrite) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._state_lock:
            self._check_open()
            self._pending_writes.append(pending.waited_on(loop, future))
            start_drain = not self._draining
            self._draining = True
        if start_drain:
            self._drain_task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Commit queued writes, a batch per transaction, until none is left. Runs on the
        loop of the write that found no drain running; writes from other loops join it.

        If that loop closes meanwhile, the writes not yet committed go back to the queue
        for a drain on the loop of the next one (a rolled-back job may run again)."""
        task = asyncio.current_task()
        unsettled: list[_PendingWrite] = []
        try:
            while True:
                with self._state_lock:
                    unsettled, self._pending_writes = self._pending_writes, []
                    if not unsettled:
                        self._draining = False
                        idle, self._idle_waiters = self._idle_waiters, []
                        break
                together = [p for p in unsettled if not p.alone]
                if together:
                    try:
                        done = await self._commit_batch(together)
                    except asyncio.CancelledError:
                        raise
                    except BaseException as exc:  # the whole batch failed to commit
                        done = [(False, _store_error(self.path, exc))] * len(together)
                    if any(isinstance(value, StoreFullError) for _, value in done):
                        self._full = True
                    _settle_batch(list(zip(together, done, strict=True)))
                    unsettled = [p for p in unsettled if p.alone]
                    if self._conn is not None and (
                        self._checkpoint_due or self._truncate_is_due()
                    ):  # after the batch's writers are told, not before
                        await self._on_thread(self._checkpoint_now)
                while unsettled:
                    _settle_batch([(unsettled[0], await self._run_alone(unsettled[0].job))])
                    unsettled.pop(0)
                if task is not None and task.cancelling():  # a commit finished first
                    raise asyncio.CancelledError
        except asyncio.CancelledError:
            with self._state_lock:
                self._pending_writes[:0] = unsettled
            self._hand_over_drain()
            raise
        for loop, future in idle:
            loop.call_soon_threadsafe(_settle, future, (True, None))

    def _hand_over_drain(self) -> None:
        with self._state_lock:
            self._draining = False
            successor = self._pending_writes[0].loop if self._pending_writes else None
        if successor is not None:
            successor.call_soon_threadsafe(self._restart_drain)

    def _restart_drain(self) -> None:
        with self._state_lock:
            if self._draining or not self._pending_writes:
                return
            self._draining = True
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _run_alone(self, job: Job[Any]) -> tuple[bool, object]:
        attempt = 0
        while True:
            try:
                return True, await self._on_thread(lambda: self._alone(job))
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt >= self._retries:
                    return False, _store_error(self.path, exc)
            except Exception as exc:
                return False, _store_error(self.path, exc)
            await asyncio.sleep(self._retry_delay * 2**attempt)
            attempt += 1

    def _alone(self, job: Job[T]) -> T:
        """On the store's thread: ``job`` on the write connection at the configured sync
        level (a relaxed lease batch may have left it lower), waiting on locks."""
        conn = self._connect_writer()
        self._set_synchronous(conn, self._synchronous)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        try:
            return job(conn)
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    async def _commit_batch(self, batch: list[_PendingWrite]) -> list[tuple[bool, object]]:
        if self._full and not await self._space_is_back():
            raise _full_error(self.path)
        attempt = 0
        while True:
            try:
                # Connecting sets WAL mode, which can be refused as busy while another
                # connection opens the same new file: retried like any busy error.
                conn = self._conn
                if conn is None:
                    conn = await self._on_thread(self._connect_writer)
                return await self._commit_on(conn, batch)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt >= self._retries:
                    raise
            await asyncio.sleep(self._retry_delay * 2**attempt)
            attempt += 1

    async def _commit_on(
        self, conn: sqlite3.Connection, batch: list[_PendingWrite]
    ) -> list[tuple[bool, object]]:
        """One attempt: the batch's jobs in one transaction, each undone alone if it fails."""
        relaxed = self._synchronous in _SYNCING and not any(p.durable for p in batch)
        self._set_synchronous(conn, "NORMAL" if relaxed else self._synchronous)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                await self._on_thread(functools.partial(self._begin_waiting, conn))
            outcomes = _run_jobs(conn, [pending.job for pending in batch], self.path)
            if relaxed:  # no fsync, and checkpoints only follow durable commits: no wait
                conn.execute("COMMIT")
                self._durability.relaxed += 1
                self._committed()
                return outcomes
            # A commit that changed nothing writes nothing, and syncs nothing: only one with
            # a write that surely changed the file (and succeeded) covers relaxed commits.
            covers = any(p.covering and ok for p, (ok, _) in zip(batch, outcomes, strict=True))
            if self._fsync_is_quick():
                self._commit_durably(conn, covers)
                return outcomes
            try:
                await self._on_thread(functools.partial(self._commit_durably, conn, covers))
            except asyncio.CancelledError:
                if conn.in_transaction:
                    raise
                # Committed before the loop closed: report it; the drain stops after that.
            return outcomes
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _fsync_is_quick(self) -> bool:
        """Whether a durable COMMIT may run on the event loop: when this disk's commits take
        less than a hand-over to the store's thread does."""
        return self._commit_seconds < _INLINE_COMMIT_SECONDS

    def _truncate_is_due(self) -> bool:
        return self._wal_too_big and (
            self._wal_far_too_big or time.monotonic() >= self._truncate_not_before
        )

    def _commit_durably(self, conn: sqlite3.Connection, covers: bool = False) -> None:
        """COMMIT (with its fsync), timed. (The write connection never checkpoints on its
        own, so that a commit run on an event loop never does: see _checkpoint_now.)"""
        started = time.perf_counter()
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        self._commit_seconds += (elapsed - self._commit_seconds) / 8  # moving average
        if covers:  # its WAL frames follow those of every relaxed commit before it
            self._durability.covered(self._durability.relaxed)
        self._committed()

    def _committed(self) -> None:
        """Count a commit, and see whether the WAL is due a checkpoint: its round reached
        the end of the file's limit, or it has grown past that limit."""
        self._commits_since_checkpoint += 1
        try:
            size = os.path.getsize(self._wal_path)
        except OSError:
            size = 0
        grew, self._wal_size = size > self._wal_size, size
        self._checkpoint_due = self._commits_since_checkpoint >= _CHECKPOINT_EVERY or (
            grew and size >= WAL_LIMIT_BYTES
        )
        self._wal_too_big = size > WAL_LIMIT_BYTES + _WAL_SLACK_BYTES
        self._wal_far_too_big = size > _WAL_HARD_LIMIT_FACTOR * WAL_LIMIT_BYTES

    def _checkpoint_now(self) -> None:
        """On the store's thread, between batches, once their writers have been told:
        copy the WAL back into the database (PASSIVE: the next round of commits restarts
        the WAL at its start), or empty it if it has grown too big."""
        conn = self._conn
        if conn is None:
            return
        if self._truncate_is_due():
            self._checkpoint(conn, "TRUNCATE")
        else:
            self._checkpoint(conn, "PASSIVE")

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> bool:
        """On the store's thread, between transactions: copy the WAL into the database
        (TRUNCATE: all of it, waiting briefly for readers, then empty the file). True if
        the whole WAL was copied. A failed checkpoint is no failed write: it is tried again
        later."""
        self._commits_since_checkpoint = 0
        self._checkpoint_due = False
        if mode == "TRUNCATE":
            conn.execute(f"PRAGMA busy_timeout = {_TRUNCATE_WAIT_MS}")
        try:
            busy = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
        except sqlite3.Error:  # no room for the database to grow into, say
            busy = 1
        finally:
            if mode == "TRUNCATE":
                conn.execute("PRAGMA busy_timeout = 0")
        if mode == "TRUNCATE":
            if busy:
                self._truncate_not_before = time.monotonic() + _TRUNCATE_BACKOFF_SECONDS
            else:
                self._wal_too_big = False
        return not busy

    async def _space_is_back(self) -> bool:
        """After a write met a full disk: first checkpoint the WAL into the database and
        empty it (space freed goes to that, not to a WAL growing again), then let writes
        try again; at most once per ``FULL_RETRY_SECONDS``, other writes failing at once
        meanwhile."""
        now = time.monotonic()
        if now < self._next_full_retry:
            return False
        self._next_full_retry = now + FULL_RETRY_SECONDS

        def checkpoint() -> bool:
            return self._checkpoint(self._connect_writer(), "TRUNCATE")

        try:
            emptied = await self._on_thread(checkpoint)
        except sqlite3.Error:
            return False
        self._full = not emptied
        return emptied

    def _begin_waiting(self, conn: sqlite3.Connection) -> None:
        """On the store's thread: ``BEGIN IMMEDIATE``, waiting up to the busy timeout for
        another connection to release the write lock."""
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    # -- schema --------------------------------------------------------------------------
    async def migrate(self, now_us: int, *, create: bool = True) -> None:
        """Apply the migrations the file lacks, all in one write transaction; without
        ``create``, :class:`TaskHubNotFoundError` if the file holds no task hub. A file
        holding other tables is refused (:class:`NotATaskHubError`) before anything in it
        changes; a hub whose version this duratask cannot use raises
        :class:`SchemaVersionError`.

        The version is read under the write lock, so processes opening a new file at the
        same time apply each migration exactly once."""
        migrations = load_migrations("duratask.backends.sqlite", "SQLite")
        own = own_objects(m.script for m in migrations)
        if os.path.exists(self.path):
            # A look first, on a connection that changes nothing: the write connection
            # would switch the file to WAL mode, which a foreign file must not undergo.
            await self._on_thread(lambda: self._look(own, create=create))

        def job(conn: sqlite3.Connection) -> None:
            found = self._require_hub(conn, own, create=create)
            conn.execute(queries.CREATE_SCHEMA_VERSION)
            current: int = conn.execute(queries.SELECT_SCHEMA_VERSION).fetchone()[0]
            check_upgradable(self._where(), current, len(migrations), found)
            for migration in migrations[current:]:
                try:
                    for statement in split_statements(migration.script):
                        conn.execute(statement)
                except sqlite3.OperationalError as exc:
                    if is_busy(exc) or is_full(exc):
                        raise
                    raise mismatched_tables(
                        self._where(), current, len(migrations), migration, str(exc)
                    ) from None
                conn.execute(queries.INSERT_SCHEMA_VERSION, (migration.version, now_us))

        await self.write(job)

    def _where(self) -> str:
        return f"the SQLite file {self.path!r}"

    def _look(self, own: frozenset[tuple[str, str]], *, create: bool) -> None:
        """On the store's thread: refuse a file that holds no hub, on a connection that only
        reads."""
        try:
            conn = self._open(busy_timeout=self._busy_timeout)
            try:
                _transaction(conn, "BEGIN", lambda c: self._require_hub(c, own, create=create))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def _require_hub(
        self, conn: sqlite3.Connection, own: frozenset[tuple[str, str]], *, create: bool
    ) -> Found:
        """What the file holds, if it may be used as a hub; the error that says why not."""
        found = survey(_objects(conn, own), own)
        if found.found is Found.FOREIGN:
            raise NotATaskHubError(self._where(), found.foreign)
        if found.found is Found.NOTHING and not create:
            raise TaskHubNotFoundError(f"no task hub in the SQLite file {self.path!r}")
        return found.found

    async def drop_own_tables(self) -> None:
        """Drop the hub's own tables (the file, and anything else in it, stays)."""
        migrations = load_migrations("duratask.backends.sqlite", "SQLite")
        own = own_objects(m.script for m in migrations)

        def job(conn: sqlite3.Connection) -> None:
            # foreign_keys cannot change inside a transaction; off, tables drop in any order.
            conn.execute("PRAGMA foreign_keys = OFF")
            try:

                def drop(conn: sqlite3.Connection) -> None:
                    self._require_hub(conn, own, create=False)
                    for (name,) in conn.execute(queries.LIST_TABLES).fetchall():
                        if (TABLE, name.lower()) in own:
                            conn.execute(f"DROP TABLE IF EXISTS {_quote_identifier(name)}")

                _transaction(conn, "BEGIN IMMEDIATE", drop)
            finally:
                conn.execute("PRAGMA foreign_keys = ON")

        await self.run(job)


def _objects(conn: sqlite3.Connection, own: frozenset[tuple[str, str]]) -> list[tuple[str, str]]:
    """The file's objects as ``(kind, name)``: tables and views, and the indexes and
    triggers of tables that are not duratask's."""
    found = []
    for kind, name, table in conn.execute(queries.LIST_OBJECTS).fetchall():
        if kind == "table" or kind == "view":
            found.append((TABLE if kind == "table" else kind, name))
        elif (TABLE, str(table).lower()) not in own:
            found.append((kind, name))
    return found


@dataclass(frozen=True, slots=True)
class _PendingWrite:
    job: Job[Any]
    durable: bool = True
    alone: bool = False  # run outside the batch's transaction (Database.run)
    covering: bool = False  # it surely changes the file: its durable commit syncs
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[Any] | None = None

    def waited_on(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> _PendingWrite:
        return _PendingWrite(self.job, self.durable, self.alone, self.covering, loop, future)


def _settle_batch(outcomes: list[tuple[_PendingWrite, tuple[bool, object]]]) -> None:
    """Settle each write's future on its own loop: one wake-up per loop for the batch."""
    here = asyncio.get_running_loop()
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, tuple[bool, object]]]] = {}
    for pending, outcome in outcomes:
        assert pending.loop is not None
        by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
    for loop, settled in by_loop.items():
        if loop is here:
            _settle_all(settled)
            continue
        try:
            loop.call_soon_threadsafe(_settle_all, settled)
        except RuntimeError:  # that loop is closed: nobody awaits its writes
            pass


def _run_jobs(
    conn: sqlite3.Connection, jobs: list[Job[Any]], path: str
) -> list[tuple[bool, object]]:
    """Each job's outcome, every success's changes kept and every failure's undone.

    Jobs seldom fail, so they first run back to back inside one savepoint (two statements a
    batch, not two a job); if one fails, that is rolled back and the batch runs again with
    each job in a savepoint of its own (a job may run more than once: jobs are repeatable).
    """
    conn.execute("SAVEPOINT batch")
    try:
        outcomes: list[tuple[bool, object]] = [(True, job(conn)) for job in jobs]
    except Exception as exc:
        if not conn.in_transaction:  # SQLite rolled it all back itself (on a full disk)
            raise
        conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            raise  # the whole batch retries
        return [_in_savepoint(conn, job, path) for job in jobs]
    conn.execute("RELEASE batch")
    return outcomes


def _in_savepoint(conn: sqlite3.Connection, job: Job[Any], path: str) -> tuple[bool, object]:
    """Run one job of a batch; (True, result), or (False, error) with its changes undone."""
    conn.execute("SAVEPOINT job")
    try:
        result = job(conn)
    except Exception as exc:
        if not conn.in_transaction:  # SQLite rolled it all back itself (on a full disk)
            raise
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            raise  # the whole batch retries
        return False, _store_error(path, exc) if isinstance(exc, sqlite3.Error) else exc
    conn.execute("RELEASE job")
    return True, result


def _full_error(path: str) -> StoreFullError:
    return StoreFullError(
        f"SQLite store {path!r}: database or disk is full: nothing was written (and nothing "
        "written before is lost); free some space and the hub goes on by itself"
    )


def _store_error(path: str, exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        if is_full(exc):
            return _full_error(path)
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
