"""The synchronous face of :class:`TimeSkippingHub`, for tests that are plain functions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from duratask._portal import Portal
from duratask.backends.memory import MemoryOrchestrationService
from duratask.client import TaskHubClient
from duratask.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter
from duratask.state import OrchestrationState
from duratask.testing._clock import VirtualClock
from duratask.testing._hub import StatusCheck, TimeSkippingHub, is_finished, is_started
from duratask.worker import TaskHubWorker

__all__ = ["SyncTimeSkippingHub"]


class SyncTimeSkippingHub:
    """:class:`TimeSkippingHub` for synchronous tests: ``with SyncTimeSkippingHub() as hub:``.

    The hub (worker and virtual clock) runs on an event loop in a daemon thread; ``client``
    is a :class:`~duratask.TaskHubClient` whose waits skip virtual time like the async hub's.
    Takes the same arguments as :class:`TimeSkippingHub`.

    Attributes:
        client: A synchronous client of the hub, whose waits skip virtual time.
    """

    def __init__(
        self,
        *,
        auto_skip: bool = True,
        start: datetime | None = None,
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idle_timeout: float = 30.0,
        **worker_options: Any,
    ) -> None:
        self._hub = TimeSkippingHub(
            auto_skip=auto_skip,
            start=start,
            data_converter=data_converter,
            max_payload_bytes=max_payload_bytes,
            idle_timeout=idle_timeout,
            **worker_options,
        )
        self._portal = Portal("duratask-testing-hub")
        self.client: TaskHubClient = _SyncTimeSkippingClient(
            self,
            self._hub.store,
            data_converter=data_converter,
            max_payload_bytes=max_payload_bytes,
            clock=self._hub.clock,
        )

    @property
    def clock(self) -> VirtualClock:
        """The hub's virtual clock."""
        return self._hub.clock

    @property
    def store(self) -> MemoryOrchestrationService:
        """The hub's memory store."""
        return self._hub.store

    @property
    def worker(self) -> TaskHubWorker:
        """The hub's worker: register orchestrations and activities on it."""
        return self._hub.worker

    @property
    def auto_skip(self) -> bool:
        """Whether client waits skip virtual time."""
        return self._hub.auto_skip

    @property
    def now(self) -> datetime:
        """The hub's current virtual time (aware UTC)."""
        return self._hub.now

    def register(
        self,
        *orchestrations: Callable[..., Any],
        activities: tuple[Any, ...] = (),
        entities: tuple[Any, ...] = (),
    ) -> None:
        """See :meth:`TimeSkippingHub.register`."""
        self._hub.register(*orchestrations, activities=activities, entities=entities)

    def start(self) -> None:
        """Start the worker on the hub's event loop thread."""
        self._portal.call(self._hub.start)

    def stop(self) -> None:
        """Stop the worker, close the client and end the loop thread."""
        try:
            self.client.close()
        finally:
            try:
                self._portal.call(self._hub.stop)
            finally:
                self._portal.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def advance(self, delta: timedelta) -> datetime:
        """See :meth:`TimeSkippingHub.advance`."""
        return self._portal.call(self._hub.advance, delta)

    def advance_to(self, when: datetime) -> datetime:
        """See :meth:`TimeSkippingHub.advance_to`."""
        return self._portal.call(self._hub.advance_to, when)

    def wait_until_idle(self) -> None:
        """See :meth:`TimeSkippingHub.wait_until_idle`."""
        self._portal.call(self._hub.wait_until_idle)

    @contextlib.contextmanager
    def _skipping(self, instance_id: str, done: StatusCheck) -> Iterator[None]:
        if not self._hub.auto_skip:
            yield
            return
        skipper = self._portal.call(self._hub._begin_skipping, instance_id, done)
        try:
            yield
        finally:
            self._portal.call(self._hub._end_skipping, skipper)


class _SyncTimeSkippingClient(TaskHubClient):
    """The sync hub's client: its waits skip virtual time when the hub auto-skips."""

    def __init__(self, hub: SyncTimeSkippingHub, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub = hub

    def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_start`; skips virtual time."""
        with self._hub._skipping(instance_id, is_started):
            return super().wait_for_orchestration_start(instance_id, timeout)

    def wait_for_orchestration_completion(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_completion`; skips virtual
        time."""
        with self._hub._skipping(instance_id, is_finished):
            return super().wait_for_orchestration_completion(instance_id, timeout)
