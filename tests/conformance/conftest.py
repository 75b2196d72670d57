"""Fixtures for the store conformance suite: every test runs once per store kind.

To add a store, give ``STORE_KINDS`` a new id and ``_HUBS`` a factory for it (a factory may
``pytest.skip`` when its server is unavailable).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from duratask.backends.base import OrchestrationService
from duratask.backends.memory import MemoryOrchestrationService
from duratask.backends.sqlite import SqliteOrchestrationService

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


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

    def __init__(self, kind: str, make: Callable[[], OrchestrationService]) -> None:
        self.kind = kind
        self._make = make
        self.handles: list[OrchestrationService] = []

    def handle(self) -> OrchestrationService:
        store = self._make()
        self.handles.append(store)
        return store


def _memory_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    store = MemoryOrchestrationService(clock=clock)
    return StoreHub("memory", lambda: store)


def _sqlite_hub(tmp_path: Path, clock: FakeClock) -> StoreHub:
    path = str(tmp_path / "hub" / "taskhub.db")
    return StoreHub("sqlite", lambda: SqliteOrchestrationService(path, clock=clock))


_HUBS: dict[str, Callable[[Path, FakeClock], StoreHub]] = {
    "memory": _memory_hub,
    "sqlite": _sqlite_hub,
}
STORE_KINDS = list(_HUBS)

# Store URLs for end-to-end tests, where workers and clients open stores by URL.
_URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp_path: f"memory://{uuid.uuid4().hex}",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'hub.db'}",
}


@pytest.fixture(params=list(_URLS), ids=list(_URLS))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, isolated task hub, once per store kind."""
    return _URLS[request.param](tmp_path)


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


@pytest.fixture
async def store(store_hub: StoreHub) -> OrchestrationService:
    """A fresh, opened store on an isolated hub (closed after the test)."""
    store = store_hub.handle()
    await store.open()
    return store


@pytest.fixture
async def peer(store_hub: StoreHub, store: OrchestrationService) -> OrchestrationService:
    """A second opened handle on the same hub as ``store``."""
    other = store_hub.handle()
    await other.open()
    return other
