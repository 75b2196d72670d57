"""Run one activity work item and build the result message for its orchestration.

The activity runs in the event loop (``async def``) or on a worker thread (a plain
function). Its result or failure is stamped with the time it came back. Under a timeout
(start to close, per delivery) or a heartbeat timeout, the runner stops waiting when the
limit passes and fails the task with :class:`ActivityTimeoutError`: an ``async`` activity is
cancelled; a thread cannot be stopped, so it runs on until the function returns (its result
discarded) on a daemon thread, which never holds up the process's exit, while the pool
starts another in its place. Heartbeat details are written to the store at most every
:data:`HEARTBEAT_WRITE_INTERVAL` seconds, which also extends the lease.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from duratask import history as h
from duratask._registry import Registry
from duratask.backends.base import ActivityWorkItem, OrchestrationMessage
from duratask.context import ActivityContext
from duratask.converter import PayloadCodec
from duratask.errors import ActivityNotRegisteredError, ActivityTimeoutError
from duratask.state import FailureDetails
from duratask.worker._threads import DaemonThreadPool

_LOG = logging.getLogger("duratask.worker")
HEARTBEAT_WRITE_INTERVAL = 2.0  # seconds between two writes of an activity's heartbeat


class _Heartbeats:
    """The heartbeats of one running activity: the last details and when they came, and
    their way to the store. ``beat`` may be called from any thread."""

    def __init__(
        self,
        codec: PayloadCodec,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[str | None], Awaitable[None]],
        details: str | None,
    ) -> None:
        self._codec = codec
        self._loop = loop
        self._write = write
        self.details = details  # JSON text
        self.last_beat = time.monotonic()
        self._written_at = 0.0
        self._pending = False
        self._writing: asyncio.Task[None] | None = None

    def beat(self, details: Any) -> None:
        encoded = self._codec.encode(details, "heartbeat details") if details is not None else None
        self.details = encoded if details is not None else self.details
        self.last_beat = time.monotonic()
        if not self._pending:
            self._pending = True
            delay = max(0.0, self._written_at + HEARTBEAT_WRITE_INTERVAL - self.last_beat)
            self._loop.call_soon_threadsafe(self._schedule, delay)

    def _schedule(self, delay: float) -> None:
        self._loop.call_later(delay, self._start_write)

    def _start_write(self) -> None:
        self._pending = False
        self._written_at = time.monotonic()
        if self._writing is None or self._writing.done():
            self._writing = self._loop.create_task(self._flush(self.details))

    async def _flush(self, details: str | None) -> None:
        try:
            await self._write(details)
        except Exception as exc:  # the lease may be gone: the result commit will say so
            _LOG.warning(
                "could not record a heartbeat: %s",
                exc,
                extra={"event": "duratask.activity.heartbeat_failed"},
            )

    def stop(self) -> None:
        if self._writing is not None:
            self._writing.cancel()


async def run_activity(
    work_item: ActivityWorkItem,
    registry: Registry,
    codec: PayloadCodec,
    thread_pool: DaemonThreadPool,
    clock: Callable[[], datetime],
    *,
    default_timeout: timedelta | None = None,
    write_heartbeat: Callable[[str | None], Awaitable[None]] | None = None,
) -> OrchestrationMessage:
    """Run the activity; failures (and timeouts) become TaskFailed, stamped when they came."""
    request = work_item.request
    loop = asyncio.get_running_loop()
    heartbeats = _Heartbeats(codec, loop, write_heartbeat or _nowhere, request.heartbeat_details)
    event: h.HistoryEvent
    try:
        spec = registry.get_activity(request.name)
        if spec is None:
            raise ActivityNotRegisteredError(
                f"activity {request.name!r} is not registered on this worker "
                f"(registered activities: {registry.activity_names})"
            )
        ctx = ActivityContext(
            orchestration_id=request.instance_id,
            execution_id=request.execution_id,
            task_id=request.task_id,
            name=request.name,
            attempt=request.attempt,
            delivery_count=work_item.dequeue_count,
            heartbeat_details=codec.decode(request.heartbeat_details),
            _beat=heartbeats.beat,
        )
        value = codec.decode(request.input, spec.input_type)
        give_up: Callable[[], None] | None = None
        timeout = request.timeout or default_timeout
        watched = timeout is not None or request.heartbeat_timeout is not None
        if spec.is_async:
            # A task of its own, so context variables the activity sets stay with it, as a
            # sync activity's stay in the copied context its thread runs.
            running: asyncio.Future[Any] = asyncio.ensure_future(spec.fn(ctx, value))
        else:
            call = functools.partial(contextvars.copy_context().run, spec.fn, ctx, value)
            submitted = thread_pool.submit(call)
            running = asyncio.wrap_future(submitted)
            give_up = functools.partial(thread_pool.abandon, submitted)
        if not watched:
            result = await running
        else:
            watch = _Watch(timeout, request.heartbeat_timeout, heartbeats, give_up)
            result = await watch.wait(running)
        encoded = codec.encode(result, f"result of activity {request.name!r}")
        event = h.TaskCompleted(
            timestamp=clock(), task_scheduled_id=request.task_id, result=encoded
        )
    except Exception as exc:
        event = h.TaskFailed(
            timestamp=clock(),
            task_scheduled_id=request.task_id,
            failure_details=FailureDetails.from_exception(exc),
            heartbeat_details=heartbeats.details,
        )
    finally:
        heartbeats.stop()
    return OrchestrationMessage(request.instance_id, event, request.execution_id)


class _Watch:
    """Waits for an activity within its timeouts; past one, gives it up."""

    def __init__(
        self,
        timeout: timedelta | None,
        heartbeat_timeout: timedelta | None,
        heartbeats: _Heartbeats,
        give_up: Callable[[], None] | None,
    ) -> None:
        self._timeout = timeout
        self._heartbeat_timeout = heartbeat_timeout
        self._heartbeats = heartbeats
        self._give_up = give_up
        self._deadline = time.monotonic() + timeout.total_seconds() if timeout else None

    async def wait(self, running: asyncio.Future[Any]) -> Any:
        """The activity's result, or :class:`ActivityTimeoutError` once a limit passed."""
        while True:
            problem = self._overdue(time.monotonic())
            if problem is not None:
                running.cancel()  # an async activity stops; a thread runs on, dropped
                if self._give_up is not None:
                    self._give_up()
                raise ActivityTimeoutError(problem)
            done, _ = await asyncio.wait({running}, timeout=self._until_next_check())
            if done:
                return running.result()

    def _until_next_check(self) -> float:
        now, limits = time.monotonic(), []
        if self._deadline is not None:
            limits.append(self._deadline - now)
        if self._heartbeat_timeout is not None:
            quiet = self._heartbeat_timeout.total_seconds()
            limits.append(self._heartbeats.last_beat + quiet - now)
        return max(0.0, min(limits))

    def _overdue(self, now: float) -> str | None:
        if self._deadline is not None and now >= self._deadline:
            return f"the activity ran past its timeout of {self._timeout}"
        if self._heartbeat_timeout is not None:
            if now >= self._heartbeats.last_beat + self._heartbeat_timeout.total_seconds():
                return (
                    f"the activity sent no heartbeat for {self._heartbeat_timeout} "
                    "(its heartbeat_timeout)"
                )
        return None


async def _nowhere(details: str | None) -> None:
    return None
