"""Reaching the task hub a command names: checking the URL, connecting, masking secrets."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from duratask.backends import open_store
from duratask.backends.base import TaskHubStore
from duratask.backends.memory import MemoryOrchestrationService
from duratask.cli.errors import ExitCode, cli_error, usage_error
from duratask.client import AsyncTaskHubClient

T = TypeVar("T")

STORE_ENV = "DURATASK_STORE"
POSTGRES_CONNECT_TIMEOUT = 10  # seconds, unless the URL sets connect_timeout
_SECRET_KEYS = frozenset({"password", "sslpassword"})


def require_store_url(url: str | None) -> str:
    """The store URL, or a usage error (exit code 2) saying how to give one."""
    if url is None or not url.strip():
        raise usage_error(
            f"no task hub store given: pass --store URL or set {STORE_ENV} "
            "(e.g. sqlite:///hub.db or postgresql://user@host/db?schema=NAME)"
        )
    return url.strip()


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (user info and query parameters)."""
    parts = urlsplit(url)
    netloc, changed = parts.netloc, False
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc, changed = f"{userinfo.split(':', 1)[0]}:***@{host}", True
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() in _SECRET_KEYS for key, _ in pairs):
        pairs = [(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in pairs]
        changed = True
    if not changed:
        return url  # rebuilding would rewrite sqlite:///path as sqlite:/path
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(pairs, safe="*")))


def scheme_of(url: str) -> str:
    """The store kind a URL names: memory, sqlite, postgresql (or the raw scheme)."""
    scheme = urlsplit(url).scheme.lower()
    return "postgresql" if scheme == "postgres" else scheme


class Creates(Enum):
    """What opening a SQLite store may create that does not exist yet."""

    NOTHING = "nothing"  # the hub must exist: a mistyped path fails, leaving nothing behind
    HUB = "hub"  # a new hub file, in a directory that exists
    PATH = "path"  # the file and any missing directories (``hub create``)


def build_store(url: str, *, creates: Creates = Creates.NOTHING) -> TaskHubStore:
    """The store object for ``url`` (not opened), checked before anything is created."""
    try:
        store = open_store(url)
    except ValueError as exc:
        raise usage_error(f"--store: {exc}") from None
    except ModuleNotFoundError as exc:
        raise cli_error(
            f"the {scheme_of(url)} store needs the module {exc.name!r}: "
            "pip install 'duratask[postgres]'",
            ExitCode.STORE,
        ) from None
    path = getattr(store, "path", None)
    if scheme_of(url) == "sqlite" and isinstance(path, str) and path != ":memory:":
        _check_sqlite_path(Path(path), creates)
    return store


def _check_sqlite_path(path: Path, creates: Creates) -> None:
    if creates is Creates.PATH:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cli_error(
                f"cannot create the directory of the SQLite task hub {str(path)!r}: "
                f"{exc.strerror or exc}",
                ExitCode.STORE,
            ) from None
        return
    if not path.parent.is_dir():
        raise cli_error(
            f"cannot reach the SQLite task hub {str(path)!r}: "
            f"the directory {str(path.parent)!r} does not exist",
            ExitCode.STORE,
        )
    if creates is Creates.NOTHING and not path.exists():
        raise cli_error(
            f"no SQLite task hub at {str(path)!r} (create it with 'duratask hub create', "
            "or start a worker or an orchestration on it)",
            ExitCode.STORE,
        )


async def _probe_postgres(url: str) -> None:
    """Fail fast, with the server's own words, when PostgreSQL cannot be reached.

    The store's connection pool would retry for its whole pool timeout before giving up.
    """
    import psycopg

    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    if not any(key == "connect_timeout" for key, _ in pairs):
        pairs.append(("connect_timeout", str(POSTGRES_CONNECT_TIMEOUT)))
    conninfo = urlunsplit(parts._replace(query=urlencode(pairs)))
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise cli_error(f"cannot connect to {mask_url(url)}: {reason}", ExitCode.STORE) from None
    await conn.close()


@contextlib.asynccontextmanager
async def connect(
    url: str, *, creates: Creates = Creates.NOTHING
) -> AsyncIterator[AsyncTaskHubClient]:
    """An open client on the task hub at ``url``."""
    store = build_store(url, creates=creates)
    if scheme_of(url) == "postgresql":
        await _probe_postgres(url)
    client = AsyncTaskHubClient(store)
    try:
        await client.__aenter__()
        yield client
    finally:
        try:
            await client.close()
        finally:
            await store.close()


def with_client(
    url: str | None,
    action: Callable[[AsyncTaskHubClient], Awaitable[T]],
    *,
    creates: Creates = Creates.NOTHING,
) -> T:
    """Run ``action`` with a client on the store (given or from the environment)."""
    resolved = require_store_url(url)

    async def run() -> T:
        async with connect(resolved, creates=creates) as client:
            return await action(client)

    return asyncio.run(run())


def same_store(a: TaskHubStore, b: TaskHubStore) -> bool | None:
    """Whether two store objects reach the same task hub; None when that cannot be told."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, MemoryOrchestrationService):
        return False  # one object per named in-process hub: another object is another hub
    path_a, path_b = getattr(a, "path", None), getattr(b, "path", None)
    if isinstance(path_a, str) and isinstance(path_b, str):
        return Path(path_a).resolve() == Path(path_b).resolve()
    schema_a, schema_b = getattr(a, "schema", None), getattr(b, "schema", None)
    if isinstance(schema_a, str) and isinstance(schema_b, str) and schema_a != schema_b:
        return False
    return None


def describe_store(store: TaskHubStore) -> str:
    """A short human description of a store object (no secrets)."""
    path = getattr(store, "path", None)
    if isinstance(path, str):
        return f"SQLite {str(Path(path).resolve())!r}"
    schema = getattr(store, "schema", None)
    if isinstance(schema, str):
        return f"PostgreSQL schema {schema!r}"
    name = re.sub(r"(Orchestration)?Service$", "", type(store).__name__)
    return f"{name} store"
