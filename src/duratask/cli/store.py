"""Reaching the task hub a command names: checking the URL, connecting, masking secrets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from duratask.backends import StoreLifecycle, TaskHubStore, open_store
from duratask.cli.errors import ExitCode, cli_error, usage_error
from duratask.client import AsyncTaskHubClient
from duratask.errors import TaskHubNotFoundError

T = TypeVar("T")

STORE_ENV = "DURATASK_STORE"
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


class Creates(Enum):
    """What opening a store for a command may create that does not exist yet."""

    NOTHING = "nothing"  # the hub must exist: a mistyped URL fails, leaving nothing behind
    HUB = "hub"  # a new hub where it can be made (a SQLite file in a directory that exists)
    PATH = "path"  # the hub with whatever holds it (``hub create``: missing directories too)


def scheme_of(url: str) -> str:
    """The store kind a URL names: memory, sqlite, postgresql (or the raw scheme)."""
    scheme = urlsplit(url).scheme.lower()
    return "postgresql" if scheme == "postgres" else scheme


def build_store(url: str) -> TaskHubStore:
    """The store object for ``url`` (not opened)."""
    try:
        return open_store(url)
    except ValueError as exc:
        raise usage_error(f"--store: {exc}") from None
    except ModuleNotFoundError as exc:
        raise cli_error(
            f"the {scheme_of(url)} store needs the module {exc.name!r}: "
            "pip install 'duratask[postgres]'",
            ExitCode.STORE,
        ) from None


async def open_hub(store: TaskHubStore, *, creates: Creates) -> None:
    """Open ``store`` as a command may: read-only commands never create a hub."""
    try:
        if creates is Creates.PATH:
            await store.create_task_hub()
        else:
            await store.open(create=creates is Creates.HUB)
    except TaskHubNotFoundError as exc:
        raise cli_error(
            f"{exc} (create it with 'duratask hub create', or start a worker or an "
            "orchestration on it)",
            ExitCode.STORE,
        ) from None


@contextlib.asynccontextmanager
async def connect(
    url: str, *, creates: Creates = Creates.NOTHING
) -> AsyncIterator[AsyncTaskHubClient]:
    """An open client on the task hub at ``url``."""
    store = build_store(url)
    await open_hub(store, creates=creates)
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


def same_store(a: StoreLifecycle, b: StoreLifecycle) -> bool:
    """Whether two store objects reach the same task hub."""
    return a is b or a.describe().hub == b.describe().hub


def describe_store(store: StoreLifecycle) -> str:
    """A short human description of a store object (no secrets)."""
    return str(store.describe())
