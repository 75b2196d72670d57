"""The threads plain-function activities run on.

Unlike :class:`concurrent.futures.ThreadPoolExecutor`, whose threads the interpreter waits
for at exit, these are daemon threads: an activity that hangs (or ran past its timeout and
could not be stopped) never keeps a stopped worker's process alive. A call given up on
(:meth:`DaemonThreadPool.abandon`) no longer counts against the pool's size, so the hung
thread does not take a slot from the activities that follow.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Call = tuple[Future[Any], Callable[[], Any]]


class DaemonThreadPool:
    """Up to ``max_threads`` daemon threads (plus one per abandoned call still running),
    started as calls come."""

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._max = max_threads
        self._name = name
        self._numbers = itertools.count(1)
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._abandoned: set[Future[Any]] = set()
        self._closed = False

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn()`` on a pool thread; its future."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the activity thread pool is shut down")
            self._calls.put((future, fn))
            self._start_if_needed()
        return future

    def abandon(self, future: Future[Any]) -> None:
        """Stop counting a call that is given up on (its thread runs on until it returns)."""
        with self._lock:
            if not future.done() and future not in self._abandoned:
                self._abandoned.add(future)
                self._start_if_needed()

    def shutdown(self) -> None:
        """Take no more calls; idle threads end, running ones end when their call does."""
        with self._lock:
            self._closed = True
            for _ in range(self._threads):
                self._calls.put(None)

    def _start_if_needed(self) -> None:
        # With the lock held: a thread for the new call unless one is idle or the pool is full.
        if self._idle == 0 and self._threads < self._max + len(self._abandoned):
            self._threads += 1
            name = f"{self._name}-{next(self._numbers)}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            call = self._calls.get()
            with self._lock:
                self._idle -= 1
                if call is None:
                    self._threads -= 1
                    return
            future, fn = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._abandoned.discard(future)
                if self._threads > self._max + len(self._abandoned):
                    self._threads -= 1  # one that stood in for an abandoned call retires
                    return
