"""Run coroutines from synchronous code on an event loop owned by a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Portal:
    """An event loop in a daemon thread, started on first use.

    :meth:`call` runs a coroutine function on it and blocks until the result is ready.
    :meth:`close` cancels whatever is still running, stops the loop and joins the thread.
    """

    def __init__(self, name: str = "duratask-portal") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """True once the loop thread has been started (and until :meth:`close`)."""
        return self._loop is not None and not self._closed

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread, if started."""
        return self._thread

    def call(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(*args, **kwargs)`` on the portal's loop and return its result."""
        return self.call_within(None, fn, *args, **kwargs)

    def call_within(
        self,
        timeout: float | None,
        fn: Callable[P, Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """:meth:`call`, giving up (``TimeoutError``, the call cancelled) after ``timeout``
        seconds (None: no limit)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the portal is closed")
            if self._thread is threading.current_thread():
                raise RuntimeError("cannot block on the portal from its own event loop")
            loop = self._start()
            future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel pending work, stop the loop and join its thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._thread is not None and self._thread is threading.current_thread():
                raise RuntimeError("cannot close the portal from its own event loop")
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name=self._name, daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
