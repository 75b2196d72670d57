"""The service clients of one event loop (the async clients are bound to the loop that
first uses them), closed when that loop ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Clients:
    """The service clients of one event loop."""

    tables: dict[str, Any]
    queues: dict[str, Any]
    container: Any
    leases: Any
    services: list[Any]
    table_service: Any

    closer: Any = None
    starter: Any = None
    closed: bool = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for client in [*self.tables.values(), *self.queues.values(), self.container, self.leases]:
            await client.close()
        for service in self.services:
            if service is not None:
                await service.close()


async def _close_at_loop_end(clients: _Clients) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await clients.close()
