"""``duratask serve`` in a thread of the test process, and the official SDK around it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from durabletask import client as sdk_client
from durabletask import worker as sdk_worker

from duratask.backends import TaskHubStore
from duratask.serve import SidecarServer


class ServerThread:
    """A :class:`SidecarServer` running on its own event loop in a daemon thread."""

    def __init__(self, store: str | TaskHubStore, **options: Any) -> None:
        options.setdefault("port", 0)
        self.server = SidecarServer(store, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"localhost:{self.server.port}"

    def call(self, coro: Any, timeout: float = 30) -> Any:
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.server.stop(grace=0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@contextlib.contextmanager
def serving(store: str | TaskHubStore, **options: Any) -> Iterator[ServerThread]:
    server = ServerThread(store, **options).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def sdk_worker_on(
    address: str,
    orchestrators: list[Any] = (),  # type: ignore[assignment]
    activities: list[Any] = (),  # type: ignore[assignment]
    *,
    filters: bool = False,
    configure: Callable[[sdk_worker.TaskHubGrpcWorker], None] | None = None,
    **options: Any,
) -> Iterator[sdk_worker.TaskHubGrpcWorker]:
    """An SDK worker with these functions registered, running until the block ends."""
    w = sdk_worker.TaskHubGrpcWorker(host_address=address, **options)
    for fn in orchestrators:
        w.add_orchestrator(fn)
    for fn in activities:
        w.add_activity(fn)
    if filters:
        w.use_work_item_filters()
    if configure is not None:
        configure(w)
    w.start()  # type: ignore[no-untyped-call]
    try:
        yield w
    finally:
        w.stop()  # type: ignore[no-untyped-call]


def sdk_client_on(address: str, **options: Any) -> sdk_client.TaskHubGrpcClient:
    return sdk_client.TaskHubGrpcClient(host_address=address, **options)


def wait_until(condition: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
