"""A PostgreSQL task hub schema reached through a psycopg connection pool: transactions with
retries, migrations, and LISTEN/NOTIFY wake-ups.

The pool (``psycopg_pool.AsyncConnectionPool``) belongs to the event loop that called
:meth:`Database.start`. A call from another event loop (another thread) runs on a
connection of its own, opened and closed around the call, so the store can still serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from duratask.backends._migrations import (
    Migration,
    check_upgradable,
    load_logic,
    load_migrations,
    mismatched_tables,
)
from duratask.backends._ownership import FUNCTION, MARKER, TABLE, Found, own_objects, survey
from duratask.backends._wakeups import ACTIVITY, ENTITY, ORCHESTRATION, SCHEDULE, WakeUps
from duratask.backends.postgres import _queries as queries
from duratask.errors import (
    NotATaskHubError,
    StoreError,
    StoreFullError,
    TaskHubNotFoundError,
)

T = TypeVar("T")
Connection: TypeAlias = psycopg.AsyncConnection[DictRow]
Job: TypeAlias = Callable[[Connection], Awaitable[T]]

_LOG = logging.getLogger("duratask.postgres")
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Seconds to wait for a server that does not answer, unless the URL says (connect_timeout).
CONNECT_TIMEOUT = 5
# Schemas a task hub must never take over (delete_task_hub drops its schema).
_RESERVED_SCHEMAS = frozenset({"public", "information_schema"})

# NOTIFY payloads: which kind of work became available, or STATE + an instance id. Nothing
# notifies SCHEDULE yet (schedulers poll at most every second), but it may be waited for.
WORK_KINDS = (ORCHESTRATION, ACTIVITY, ENTITY, SCHEDULE)
STATE = "state:"


# What a migration meets in a hub whose tables are not at the version it records.
_MISMATCHED_SCHEMA = (
    psycopg.errors.DuplicateTable,
    psycopg.errors.DuplicateColumn,
    psycopg.errors.DuplicateObject,
    psycopg.errors.DuplicateFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
)


def _own(migrations: list[Migration], logic: str) -> frozenset[tuple[str, str]]:
    return own_objects([*(m.script for m in migrations), logic])


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case identifier a task hub may own; ValueError if not."""
    if not isinstance(schema, str) or not SCHEMA_NAME.match(schema):
        raise ValueError(
            f"invalid task hub schema name {schema!r}: use 1-63 characters of a-z, 0-9 and _, "
            "not starting with a digit"
        )
    if schema in _RESERVED_SCHEMAS or schema.startswith("pg_"):
        raise ValueError(f"schema {schema!r} is reserved by PostgreSQL; choose another name")
    return schema


def split_schema(url_or_conninfo: str) -> tuple[str, str | None]:
    """A libpq connection string without duratask's ``schema`` URL parameter, and that
    parameter (None if absent). Key/value conninfo strings are returned as they are."""
    parts = urlsplit(url_or_conninfo)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        return url_or_conninfo, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in pairs if key == "schema"]
    if len(schemas) > 1:
        raise ValueError(f"store URL gives schema more than once: {schemas}")
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), (schemas[0] if schemas else None)


def advisory_lock_key(schema: str) -> int:
    """The ``pg_advisory_xact_lock`` key that serialises schema changes of one task hub."""
    digest = hashlib.sha256(f"duratask:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def is_retryable(exc: psycopg.Error) -> bool:
    """True for failures a fresh attempt may not meet: a lost or refused connection, a server
    shutting down, a serialization failure or a deadlock (the transaction was rolled back).

    A pool timeout has already waited long enough, and a cancelled statement was cancelled
    on purpose; neither is retried."""
    if isinstance(exc, PoolTimeout | psycopg.errors.QueryCanceled):
        return False
    return isinstance(exc, psycopg.OperationalError)


class Database:
    """One task hub schema in one PostgreSQL database."""

    def __init__(
        self,
        conninfo: str,
        schema: str,
        *,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        pool_timeout: float = 30.0,
        retries: int = 6,
        retry_delay: float = 0.05,
        max_retry_delay: float = 2.0,
    ) -> None:
        self.schema = check_schema_name(schema)
        if min_pool_size < 0 or max_pool_size < max(min_pool_size, 1):
            raise ValueError("need 0 <= min_pool_size <= max_pool_size and max_pool_size >= 1")
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"invalid PostgreSQL connection string: {exc}") from None
        extra: dict[str, Any] = {}
        if "application_name" not in params:
            extra["application_name"] = f"duratask[{schema}]"
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT
        self._conninfo = conninfo
        self._connect_kwargs: dict[str, Any] = {
            **extra,
            "autocommit": True,
            "row_factory": dict_row,
        }
        host = params.get("host") or params.get("hostaddr") or "localhost"
        port, dbname = str(params.get("port") or 5432), params.get("dbname") or ""
        self.description = f"PostgreSQL task hub {schema!r} at {host}:{port}/{dbname}"
        self.location = f"PostgreSQL schema {schema!r} at {host}:{port}/{dbname}"
        self.hub_key = ("postgresql", str(host), port, str(dbname), schema)
        # The channel of this hub's wake-ups is the schema name (unique in the database).
        self.channel = schema
        self._min_pool_size = min_pool_size
        self._max_pool_size = max_pool_size
        self._pool_timeout = pool_timeout
        self._retries = retries
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._schema_ident = sql.Identifier(schema)
        self._statements: dict[str, bytes] = {}
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: _Listener | None = None
        self.wakeups = WakeUps()

    def q(self, template: str) -> bytes:
        """The statement ``template`` with ``{schema}`` bound to this hub's schema."""
        statement = self._statements.get(template)
        if statement is None:
            # Templates are fixed strings of this package (_queries.py, logic.sql,
            # migrations/). Kept as bytes: psycopg would quote the schema again at every
            # execution of a Composed.
            composed = sql.SQL(template).format(schema=self._schema_ident)
            statement = self._statements[template] = composed.as_bytes(None)
        return statement

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> bool:
        """Open the pool on the running event loop; False if it was already open."""
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            if self._loop is loop:
                return False
            if self._loop is not None and not self._loop.is_closed():
                raise StoreError(
                    f"{self.description} is already open on another event loop; "
                    "close it there first"
                )
            # The event loop of the old pool is gone, and its connections with it.
            self._pool = self._loop = self._listener = None
        # One connection first, so that an unreachable server fails now, with its own
        # words; the pool would retry quietly until its timeout.
        try:
            probe = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise StoreError(f"{self.description}: cannot connect: {reason}") from exc
        await probe.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs=self._connect_kwargs,
            min_size=self._min_pool_size,
            max_size=self._max_pool_size,
            timeout=self._pool_timeout,
            name=f"duratask-{self.schema}",
            open=False,
        )
        try:
            await pool.open(wait=self._min_pool_size > 0, timeout=self._pool_timeout)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreError(f"{self.description}: cannot connect: {exc}") from exc
            raise
        self._pool, self._loop = pool, loop
        return True

    async def stop(self) -> None:
        """Stop listening and close the pool; :meth:`start` may be called again."""
        pool, loop, listener = self._pool, self._loop, self._listener
        self._pool = self._loop = self._listener = None
        if pool is None or loop is None:
            return

        async def shut() -> None:
            if listener is not None:
                await listener.stop()
            await pool.close()

        if asyncio.get_running_loop() is loop:
            await shut()
        elif loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(shut(), loop))
        # else: the pool's loop is stopped or gone; its connections went with it.

    def _require_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            raise StoreError(f"{self.description} is not open; call open() first")
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        pool = self._require_pool()
        if asyncio.get_running_loop() is self._loop:
            async with pool.connection() as conn:
                yield conn
            return
        # Another event loop: the pool's connections cannot be driven from here.
        conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        try:
            yield conn
        finally:
            await conn.close()

    # -- running jobs --------------------------------------------------------------------
    async def transaction(self, job: Job[T]) -> T:
        """Run ``job`` in one transaction: committed if it returns, rolled back if it raises.

        Connection failures, serialization failures and deadlocks are retried on a fresh
        connection with exponential back-off, so ``job`` may run more than once and must only
        touch the database. A failure during COMMIT is ambiguous (the transaction may have
        committed): the retry then meets the state the first attempt left, which the fencing
        of work item operations makes safe."""
        return await self._run(job, in_transaction=True)

    async def autocommit(self, job: Job[T]) -> T:
        """Run ``job`` outside an explicit transaction: each statement commits on its own
        (for single-statement jobs), with the same retries as :meth:`transaction`."""
        return await self._run(job, in_transaction=False)

    async def _run(self, job: Job[T], *, in_transaction: bool) -> T:
        attempt = 0
        while True:
            try:
                async with self._connection() as conn:
                    if not in_transaction:
                        return await job(conn)
                    async with conn.transaction():
                        return await job(conn)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.errors.DiskFull):
                    raise StoreFullError(
                        f"{self.description}: {exc}: nothing was written; free some space "
                        "on the server"
                    ) from exc
                if not is_retryable(exc) or attempt >= self._retries:
                    raise StoreError(f"{self.description}: {exc}") from exc
                _LOG.warning(
                    "%s: %s; retrying (attempt %d)",
                    self.description,
                    exc,
                    attempt + 1,
                    extra={"event": "duratask.store.retry"},
                )
                await self._recover(exc, attempt)
            attempt += 1

    async def _recover(self, exc: psycopg.Error, attempt: int) -> None:
        """Back off before a retry; after a lost connection, weed out the pool's other
        connections that died with it (a server restart kills them all)."""
        delay = min(self._retry_delay * 2**attempt, self._max_retry_delay)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        if self._pool is not None and asyncio.get_running_loop() is self._loop:
            if not isinstance(exc, psycopg.errors.TransactionRollback):
                with contextlib.suppress(psycopg.Error):
                    await self._pool.check()

    # -- schema --------------------------------------------------------------------------
    async def migrate(self, *, create: bool = True) -> None:
        """Create the schema (only with ``create``; without, :class:`TaskHubNotFoundError`
        if it holds no task hub), apply the migrations it lacks and install this version's
        logic (the store functions) if another is installed, all in one transaction. A
        schema holding other objects is refused (:class:`NotATaskHubError`) and left as it
        is; a hub whose version this duratask cannot use raises :class:`SchemaVersionError`.

        The transaction first takes an advisory lock derived from the schema name, so
        processes opening a new hub at the same time apply each migration exactly once."""
        migrations = load_migrations("duratask.backends.postgres", "PostgreSQL")
        logic = load_logic("duratask.backends.postgres")
        own = _own(migrations, logic.script)
        supported = len(migrations)
        key = {"key": advisory_lock_key(self.schema)}

        async def job(conn: Connection) -> None:
            await conn.execute(queries.ADVISORY_XACT_LOCK, key)
            exists = await self._schema_exists(conn)
            found = await self._require_hub(conn, own, create=create) if exists else None
            if found is None and not create:
                raise TaskHubNotFoundError(f"no {self.description}: no such task hub")
            await conn.execute(self.q(queries.CREATE_SCHEMA))
            await conn.execute(self.q(queries.CREATE_SCHEMA_VERSION))
            row = await (await conn.execute(self.q(queries.SELECT_SCHEMA_VERSION))).fetchone()
            current: int = row["version"] if row is not None else 0
            check_upgradable(self.location, current, supported, found)
            for migration in migrations[current:]:
                try:
                    await conn.execute(self.q(migration.script))
                except _MISMATCHED_SCHEMA as exc:
                    cause = " ".join(str(exc).split())
                    raise mismatched_tables(
                        self.location, current, supported, migration, cause
                    ) from None
                await conn.execute(
                    self.q(queries.INSERT_SCHEMA_VERSION), {"version": migration.version}
                )
            if found is Found.NOTHING:  # made in a schema that was there, empty, before
                await conn.execute(self.q(queries.MARK_SCHEMA_NOT_OWNED))
            installed = await (await conn.execute(self.q(queries.SELECT_LOGIC_DIGEST))).fetchone()
            if installed is None or installed["digest"] != logic.digest:
                await conn.execute(self.q(logic.script))
                await conn.execute(self.q(queries.RECORD_LOGIC_DIGEST), {"digest": logic.digest})

        await self.transaction(job)

    async def _schema_exists(self, conn: Connection) -> bool:
        found = await conn.execute(queries.SCHEMA_EXISTS, {"schema": self.schema})
        return await found.fetchone() is not None

    async def _require_hub(
        self, conn: Connection, own: frozenset[tuple[str, str]], *, create: bool
    ) -> Found:
        """What the (existing) schema holds, if it may be used as a hub; the error that
        says why not."""
        rows = await (await conn.execute(queries.LIST_OBJECTS, {"schema": self.schema})).fetchall()
        found = survey([(row["kind"], row["name"]) for row in rows], own)
        if found.found is Found.FOREIGN:
            raise NotATaskHubError(self.location, found.foreign)
        if found.found is Found.NOTHING and not create:
            raise TaskHubNotFoundError(f"no {self.description}: no such task hub")
        return found.found

    async def drop_own(self) -> None:
        """Drop the hub's own tables and functions, never another application's; then the
        schema, if duratask created it and nothing else is left in it."""
        own = _own(
            load_migrations("duratask.backends.postgres", "PostgreSQL"),
            load_logic("duratask.backends.postgres").script,
        )

        async def job(conn: Connection) -> None:
            await conn.execute(queries.ADVISORY_XACT_LOCK, {"key": advisory_lock_key(self.schema)})
            if not await self._schema_exists(conn):
                raise TaskHubNotFoundError(f"no {self.description}: no such task hub")
            await self._require_hub(conn, own, create=False)
            owns_schema = True  # a hub made before the mark: its schema was made with it
            rows = await (
                await conn.execute(queries.LIST_OBJECTS, {"schema": self.schema})
            ).fetchall()
            present = {(row["kind"], row["name"]) for row in rows}
            if (TABLE, MARKER) in present:
                marker = await (await conn.execute(self.q(queries.SELECT_MARKER))).fetchone()
                owns_schema = marker is None or bool(marker["owns_schema"])
            names = [name for kind, name in own if kind == FUNCTION]
            functions = await conn.execute(
                queries.LIST_FUNCTIONS, {"schema": self.schema, "names": names}
            )
            for row in await functions.fetchall():
                # regprocedure text: the function's qualified, quoted name and argument types.
                await conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(row["signature"])))
            tables = sorted(name for kind, name in present & own if kind == TABLE)
            if tables:
                # RESTRICT: a view of another application on one of them stops the drop.
                await conn.execute(
                    sql.SQL("DROP TABLE {} RESTRICT").format(
                        sql.SQL(", ").join(sql.Identifier(self.schema, t) for t in tables)
                    )
                )
            left = await (
                await conn.execute(queries.LIST_OBJECTS, {"schema": self.schema})
            ).fetchall()
            if owns_schema and not left:
                await conn.execute(self.q(queries.DROP_EMPTY_SCHEMA))

        await self.transaction(job)

    # -- notifications -----------------------------------------------------------------------
    async def notify(self, conn: Connection, kinds: Iterable[str]) -> None:
        """Queue a wake-up per kind of work; PostgreSQL delivers it when the transaction
        commits (and drops it if it rolls back)."""
        for kind in kinds:
            await conn.execute(queries.NOTIFY, {"channel": self.channel, "payload": kind})

    def ensure_listening(self) -> None:
        """Start the LISTEN connection (on the event loop that opened the store)."""
        self._require_pool()
        if asyncio.get_running_loop() is not self._loop:
            raise StoreError(
                f"{self.description}: wake-ups must be awaited on the event loop "
                "that opened the store"
            )
        if self._listener is None:
            self._listener = _Listener(
                self._conninfo, self._connect_kwargs, self.channel, self.wakeups
            )
            self._listener.start()

    async def wait_for_notification(self, timeout: float, kind: str | None) -> bool:
        """See :meth:`PostgresOrchestrationService.wait_for_notification`."""
        if kind is not None and kind not in WORK_KINDS:
            raise ValueError(f"kind must be one of {WORK_KINDS} or None, got {kind!r}")
        self.ensure_listening()
        return await self.wakeups.wait_for_work(max(timeout, 0), kind)


class _Listener:
    """One connection that LISTENs on the hub's channel, in a background task, feeding the
    store's :class:`WakeUps`: work notifications and changed instances.

    Whenever it (re)connects, everything counts as changed: notifications sent while it was
    not listening are lost, so waiters must look once more."""

    def __init__(
        self, conninfo: str, connect_kwargs: dict[str, Any], channel: str, wakeups: WakeUps
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._channel = channel
        self._wakeups = wakeups
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"duratask-listen-{self._channel}")

    async def stop(self) -> None:
        """Stop listening, and let current waiters go (they will find the store closed)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wakeups.everything_changed()

    def _deliver(self, payload: str) -> None:
        if payload.startswith(STATE):
            self._wakeups.instances_changed([payload[len(STATE) :]])
        elif payload in WORK_KINDS:
            self._wakeups.work([payload])
        else:
            self._wakeups.everything_changed()

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    delay = 0.05
                    self._wakeups.everything_changed()
                    async for notification in conn.notifies():
                        self._deliver(notification.payload)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
            except psycopg.Error as exc:
                _LOG.warning(
                    "listening on %r failed: %s; reconnecting",
                    self._channel,
                    exc,
                    extra={"event": "duratask.store.listen_failed"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
