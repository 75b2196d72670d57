"""Fixtures for the store conformance suite: every test runs once per store kind.

To add a store, give ``STORE_KINDS`` a new id and ``_HUBS`` a factory for it (a factory may
``pytest.skip`` when its server is unavailable).

PostgreSQL: the server is ``DURATASK_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); every test gets a schema of its own, dropped
afterwards. An unreachable server skips the PostgreSQL tests with a warning in the summary,
or fails them when ``DURATASK_REQUIRE_POSTGRES=1`` (as in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from duratask.backends.base import TaskHubStore
from duratask.backends.memory import MemoryOrchestrationService
from duratask.backends.sqlite import SqliteOrchestrationService

from .. import azurite
from .e2e_hub import TaskHub

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
_STORES = Path(__file__).parents[2] / "src" / "duratask" / "backends"


def _versions(kind: str) -> list[int]:
    return sorted(
        int(p.name.split("_", 1)[0]) for p in (_STORES / kind / "migrations").glob("*.sql")
    )


# The schema versions a store's migrations table lists once it is up to date.
ALL_SQLITE_VERSIONS = _versions("sqlite")
ALL_POSTGRES_VERSIONS = _versions("postgres")


class FakeClock:
    """A store clock that only moves when a test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


class StoreHub:
    """One isolated task hub; ``handle()`` gives another store object on the same hub (what
    another process would have), or the same object where a store cannot be shared."""

    def __init__(
        self,
        kind: str,
        make: Callable[[], TaskHubStore],
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self._make = make
        self.cleanup = cleanup
        self.handles: list[TaskHubStore] = []

    def handle(self) -> TaskHubStore:
        store = self._make()
        self.handles.append(store)
        return store


def _memory_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    store = MemoryOrchestrationService(clock=clock)
    return StoreHub("memory", lambda: store)


def _sqlite_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    (tmp_path / "hub").mkdir(exist_ok=True)
    path = str(tmp_path / "hub" / "taskhub.db")
    return StoreHub("sqlite", lambda: SqliteOrchestrationService(path, clock=clock))


# -- PostgreSQL ----------------------------------------------------------------------------------
POSTGRES_URL = os.environ.get(
    "DURATASK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_postgres_problem: list[str] = []  # why PostgreSQL is unusable, once known (empty: usable)
_postgres_checked: list[bool] = []


def require_postgres() -> str:
    """The test server's URL; skips the test (fails it under ``DURATASK_REQUIRE_POSTGRES=1``)
    when PostgreSQL or psycopg is unavailable. Checked once per session."""
    if not _postgres_checked:
        _postgres_checked.append(True)
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            _postgres_problem.append(" ".join(f"{type(exc).__name__}: {exc}".split()))
    if _postgres_problem:
        why = f"PostgreSQL not reachable at {POSTGRES_URL} ({_postgres_problem[0]})"
        if os.environ.get("DURATASK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why}; DURATASK_REQUIRE_POSTGRES=1 forbids skipping", pytrace=False)
        pytest.skip(f"{why}; start it or set DURATASK_TEST_POSTGRES_URL")
    return POSTGRES_URL


def new_schema() -> str:
    """A fresh schema name for one test's task hub."""
    return f"t_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _postgres_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    url = require_postgres()
    from duratask.backends.postgres import PostgresOrchestrationService

    schema = new_schema()
    return StoreHub(
        "postgres",
        lambda: PostgresOrchestrationService(url, schema=schema, clock=clock),
        cleanup=lambda: drop_schema(schema),
    )


def _postgres_url(tmp_path: Path) -> str:
    url = require_postgres()
    return f"{url}{'&' if '?' in url else '?'}schema={new_schema()}"


# -- Azure Storage (on Azurite) --------------------------------------------------------------
def _azure_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    emulator = azurite.require_azurite()
    from duratask.backends.azure import AzureOrchestrationService

    url = emulator.url(azurite.new_hub())
    return StoreHub("azure", lambda: AzureOrchestrationService(url, clock=clock))


def _azure_url(tmp_path: Path) -> str:
    return azurite.require_azurite().url(azurite.new_hub())


# Test modules of features the Azure Storage store does not have (none at present).
_NOT_ON_AZURE: dict[str, str] = {}


# Tests the Azure Storage store is not made for: a query reads the whole instances table (the
# table service indexes nothing but the keys), so walking 300 instances a page of one at a
# time takes minutes; and SQL query plans.
_NOT_ON_AZURE_TESTS = {
    "test_paging_by_last_update_holds_over_many_instances": (
        "the Azure Storage store reads the whole instances table per page (no index): "
        "paging semantics are checked on it by test_instance_listing.py"
    ),
    "test_the_page_query_walks_the_last_update_index": "SQL query plans",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(item, "originalname", item.name)
        reason = _NOT_ON_AZURE.get(item.path.name) or _NOT_ON_AZURE_TESTS.get(name)
        if reason and "[azure" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    azurite.warn_in_summary(terminalreporter, "Azure Storage store tests")
    if _postgres_problem:
        required = os.environ.get("DURATASK_REQUIRE_POSTGRES") == "1"
        terminalreporter.write_line(
            f"WARNING: PostgreSQL store tests {'FAILED' if required else 'SKIPPED'}: "
            f"not reachable at {POSTGRES_URL} ({_postgres_problem[0]}); "
            "start it or set DURATASK_TEST_POSTGRES_URL",
            red=True,
            bold=True,
        )


_HUBS: dict[str, Callable[[Path, FakeClock], StoreHub]] = {
    "memory": _memory_hub,
    "sqlite": _sqlite_hub,
    "postgres": _postgres_hub,
    "azure": _azure_hub,
}
STORE_KINDS = list(_HUBS)

# Store URLs for end-to-end tests, where workers and clients open stores by URL.
_URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp_path: f"memory://{uuid.uuid4().hex}",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'hub.db'}",
    "postgres": _postgres_url,
    "azure": _azure_url,
}


@pytest.fixture(params=list(_URLS), ids=list(_URLS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, isolated task hub, once per store kind."""
    url = _URLS[request.param](tmp_path)
    yield url
    if request.param == "postgres":
        drop_schema(parse_qs(urlsplit(url).query)["schema"][0])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=STORE_KINDS, ids=STORE_KINDS)
async def store_hub(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[StoreHub]:
    hub = _HUBS[request.param](tmp_path, clock)
    yield hub
    for store in hub.handles:
        await store.close()
    if hub.cleanup is not None:
        hub.cleanup()


@pytest.fixture
async def store(store_hub: StoreHub) -> TaskHubStore:
    """A fresh, opened store on an isolated hub (closed after the test)."""
    store = store_hub.handle()
    await store.open()
    return store


@pytest.fixture
async def peer(store_hub: StoreHub, store: TaskHubStore) -> TaskHubStore:
    """A second opened handle on the same hub as ``store``."""
    other = store_hub.handle()
    await other.open()
    return other


@pytest.fixture(params=[1000, 0, 1], ids=["cache", "no-cache", "cache-1"])
def cache_size(request: pytest.FixtureRequest) -> int:
    """Every scenario runs with the orchestration cache, without it, and with room for one."""
    return int(request.param)


@pytest.fixture
async def hub(store_url: str, cache_size: int) -> AsyncIterator[TaskHub]:
    """A worker and client on a fresh hub of every store kind, with every cache setting."""
    hub = TaskHub(store_url, orchestration_cache_size=cache_size)
    yield hub
    await hub.stop()
