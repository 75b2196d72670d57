"""Instances this server has just ended, handed to the clients waiting on them.

When an episode's commit ends an instance (COMPLETED, FAILED, TERMINATED), the server knows
the row it wrote and the instance's tags; once that commit is durable, a client waiting for
the instance's completion is answered with them, without waiting for the store's change
notice and reading the row and the history back. Only durable state is ever handed over:
the commit has returned before :meth:`Endings.ended` is called.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from duratask.state import OrchestrationState


@dataclass(frozen=True, slots=True)
class Ending:
    """An instance's row as its ending commit wrote it, and its tags."""

    state: OrchestrationState
    tags: dict[str, str] | None


class Endings:
    """The clients waiting on instances to end, by instance id."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Ending]]] = {}

    @contextlib.contextmanager
    def expect(self, instance_id: str) -> Iterator[asyncio.Future[Ending]]:
        """A future set when this server durably ends ``instance_id`` (while inside)."""
        future: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(instance_id, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiting.get(instance_id)
            if waiting is not None:
                waiting.remove(future)
                if not waiting:
                    del self._waiting[instance_id]

    def ended(self, state: OrchestrationState, tags: dict[str, str] | None) -> None:
        """A commit that ended the instance with row ``state`` is durable."""
        for future in self._waiting.get(state.instance_id, ()):
            if not future.done():
                future.set_result(Ending(state, tags))


__all__ = ["Ending", "Endings"]
