"""Where orchestration code runs: on threads of its own, under a time budget per episode.

Episodes never run on the worker's event loop, so code that computes for a long time (or
never yields at all) cannot hold up what the loop does meanwhile: renewing leases, fetching
and committing work, answering a shutdown. A watchdog thread enforces the budget from
outside: past it, it raises :class:`EpisodeOverBudget` inside the episode's thread (the way
``KeyboardInterrupt`` reaches a thread, checked between bytecodes), again and again until
the episode ends, so ``except Exception`` in orchestration code cannot swallow it. Code
blocked inside one long call into C (a ``time.sleep``, a huge regular expression) is
stopped only when that call returns. Code in the middle of an import is not interrupted
until the import is done: an import cut short can leave a module half initialised for the
whole process, and so hurt other episodes.

A hand-off costs a thread switch (tens of microseconds); the threads are daemons, so a
spinning episode never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_RAISE_AGAIN_EVERY = 0.1  # seconds: for code that catches BaseException and carries on


class EpisodeOverBudget(BaseException):
    """Raised inside orchestration code that ran past its episode's time budget; a
    BaseException so that the code's own ``except Exception`` does not catch it."""


class _Job:
    __slots__ = (
        "args",
        "context",
        "deadline",
        "fn",
        "future",
        "loop",
        "raised",
        "returned",
        "thread_id",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        deadline: float | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop
        self.deadline = deadline
        self.context = contextvars.copy_context()
        self.thread_id: int | None = None  # while it runs
        self.returned = False  # the code returned (or raised): raise nothing more in it
        self.raised = False  # the watchdog has raised EpisodeOverBudget in it


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Have ``thread_id`` raise ``exc`` at its next bytecode (None: forget a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _importing(thread_id: int) -> bool:
    """Whether ``thread_id`` is running an import (its stack passes through importlib)."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: nobody waits for it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class OrchestrationCodeRunner:
    """Runs functions that execute orchestration code on up to ``threads`` daemon threads,
    each call within ``budget`` seconds (None: no limit)."""

    def __init__(self, threads: int, budget: float | None) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if budget is not None and budget <= 0:
            raise ValueError("the episode budget must be positive")
        self.budget = budget
        self._max_threads = threads
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._running: set[_Job] = set()
        self._threads = 0
        self._idle = 0
        self._numbers = itertools.count(1)
        self._watchdog: threading.Thread | None = None
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a code thread, in the caller's context; :class:`EpisodeOverBudget`
        if it ran past the budget."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, args, future, loop, None)
        with self._lock:
            if self._closed:
                raise RuntimeError("the orchestration code runner is closed")
            if self._idle == 0 and self._threads < self._max_threads:
                self._start_thread()
            else:
                self._idle -= self._idle > 0
        self._jobs.put(job)
        return await future

    def close(self) -> None:
        """Let the threads end once their current call returns (they are daemons: a call
        that never returns does not hold up the process)."""
        with self._lock:
            self._closed = True
            threads = self._threads
            self._changed.notify_all()
        for _ in range(threads):
            self._jobs.put(None)

    # -- threads ------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._threads += 1
        name = f"duratask-orchestration-code-{next(self._numbers)}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()
        if self.budget is not None and self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="duratask-episode-watchdog", daemon=True
            )
            self._watchdog.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while (job := self._jobs.get()) is not None:
            value: Any = None
            error: BaseException | None = None
            try:
                try:
                    self._begin(job, me)
                    value = job.context.run(job.fn, *job.args)
                except BaseException as exc:
                    job.returned = True
                    error = exc
                job.returned = True
                self._end(job, me)
            except EpisodeOverBudget as late:  # queued as the call returned: it was over
                error = error or late
                self._end(job, me)
            job.loop.call_soon_threadsafe(_settle, job.future, value, error)
        with self._lock:
            self._threads -= 1

    def _begin(self, job: _Job, me: int) -> None:
        with self._lock:
            job.thread_id = me
            if self.budget is not None:  # the budget counts from here, not while queued
                job.deadline = time.monotonic() + self.budget
            self._running.add(job)

    def _end(self, job: _Job, me: int) -> None:
        """Stop being a target, and drop any exception the watchdog queued too late, before
        this thread runs anything else."""
        with self._lock:
            self._running.discard(job)
            job.thread_id = None
            if job.raised:  # only then can one be pending (the watchdog raises under the lock)
                _raise_in(me, None)
            self._idle += 1

    def _watch(self) -> None:
        # No episode needs waking the watchdog when it starts: the budget is the same for
        # all, so one that starts after the watchdog looked is due no sooner than a budget
        # from then, and the watchdog never sleeps longer than that. (A notify per episode
        # would wake this thread, and take the GIL, at every step.)
        assert self.budget is not None
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                wait = self.budget
                for job in self._running:
                    assert job.deadline is not None and job.thread_id is not None
                    if job.returned:
                        continue
                    if now >= job.deadline:
                        if not _importing(job.thread_id):
                            _raise_in(job.thread_id, EpisodeOverBudget)
                            job.raised = True
                        job.deadline = now + _RAISE_AGAIN_EVERY
                    wait = min(wait, job.deadline - now)
                self._changed.wait(wait)
