"""The task hub worker: hosts orchestrations and activities and drives them against a store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from duratask._engine import OrchestrationCursor, OrchestrationExecutor
from duratask.backends import open_store
from duratask.backends.base import (
    ActivityWorkItem,
    EagerLease,
    HistoryMark,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationService,
    OrchestrationWorkItem,
    SupportsEagerOrchestrations,
    SupportsWakeUps,
)
from duratask.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter, PayloadCodec
from duratask.errors import LeaseLostError
from duratask.history import TaskFailed, TimerFired
from duratask.registry import Registry
from duratask.state import FailureDetails
from duratask.tracing._activity import traced_activity
from duratask.tracing._logs import log_commit
from duratask.worker.activity_runner import run_activity
from duratask.worker.dispatcher import Dispatcher
from duratask.worker.episode import Defer, deliveries, plan_episode, poison_details
from duratask.worker.orchestration_cache import OrchestrationCache

_LOG = logging.getLogger("duratask.worker")
_MAX_LEASE = timedelta(minutes=5)
_ACTIVITY_BATCH = 8  # activities leased by one fetch, at most


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TaskHubWorker:
    """Runs registered orchestrations and activities from a task hub.

    Use ``start()``/``stop()`` (a background thread with its own event loop), ``with worker:``,
    or ``await worker.run()`` inside your own event loop (stop it with ``await worker.shutdown()``
    or by cancelling it).

    Work delivered more than ``max_deliveries`` times without completing (its worker crashed,
    hung or failed each time) is given up so the rest of the hub keeps moving: the
    orchestration ends FAILED with a ``PoisonWorkError``, or the activity's task fails with it.

    ``orchestration_cache_size`` live orchestrations are kept in memory between episodes so
    their next step replays nothing (0 disables the cache: every episode replays its history).

    Up to ``max_concurrent_orchestrations`` episodes and ``max_concurrent_activities``
    activities run at once (100 each by default); ``async def`` activities run on the event
    loop, plain functions on ``activity_threads`` threads (up to 32 by default).

    Each work item is leased for ``lease_duration`` (30 s by default, 5 min at most) and the
    lease is renewed while the work runs; work of a worker that died is taken over by
    another once its lease expires. On shutdown, running work gets ``shutdown_grace`` to
    finish before it is cancelled (and then runs again elsewhere). ``data_converter`` and
    ``max_payload_bytes`` apply to every payload the worker's orchestrations and activities
    make, and should match the clients'. ``clock`` is for tests (see
    :class:`~duratask.testing.VirtualClock`).

    Attributes:
        store: The task hub store the worker runs against (built from the URL if given one).
        registry: The orchestrations and activities registered on the worker.
        worker_id: The worker's name in leases and logs: host, process id and a random
            suffix unless given.
    """

    def __init__(
        self,
        store: str | OrchestrationService,
        *,
        max_concurrent_orchestrations: int = 100,
        max_concurrent_activities: int = 100,
        lease_duration: timedelta = timedelta(seconds=30),
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        worker_id: str | None = None,
        activity_threads: int | None = None,
        shutdown_grace: timedelta = timedelta(seconds=30),
        orchestration_cache_size: int = 1000,
        max_deliveries: int = 10,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not timedelta(0) < lease_duration <= _MAX_LEASE:
            raise ValueError(f"lease_duration must be between 0 and {_MAX_LEASE}")
        if max_concurrent_orchestrations < 1 or max_concurrent_activities < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.store = open_store(store)
        self.registry = Registry()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._codec = PayloadCodec(data_converter, max_payload_bytes)
        self._lease = lease_duration
        self._max_orchestrations = max_concurrent_orchestrations
        self._max_activities = max_concurrent_activities
        self._activity_threads = activity_threads or min(32, max_concurrent_activities)
        self._grace = shutdown_grace.total_seconds()
        self._clock = clock
        self._executor = OrchestrationExecutor(self.registry, self._codec)
        self._eager_store = (
            self.store if isinstance(self.store, SupportsEagerOrchestrations) else None
        )
        self._cache = OrchestrationCache(orchestration_cache_size)
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._max_deliveries = max_deliveries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._orchestrations: Dispatcher[OrchestrationWorkItem] | None = None
        self._activities: Dispatcher[ActivityWorkItem] | None = None

    @property
    def orchestration_cache(self) -> OrchestrationCache:
        """The live-orchestration cache (its ``hits`` and ``misses`` show how well it works)."""
        return self._cache

    # -- registration ---------------------------------------------------------------------
    def add_orchestration(
        self, fn: Callable[..., Any], *, name: str | None = None, version: str | None = None
    ) -> str:
        """Register an orchestration (``async def`` or generator); returns its name."""
        return self.registry.add_orchestration(fn, name=name, version=version)

    def add_activity(self, fn: Callable[..., Any], *, name: str | None = None) -> str:
        """Register an activity (sync or ``async def``); returns its name."""
        return self.registry.add_activity(fn, name=name)

    # -- running in the caller's event loop -------------------------------------------------
    async def run(self) -> None:
        """Process work until :meth:`shutdown` (or :meth:`stop`) is called, or cancelled."""
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        await self.store.open()
        renew_every = self._lease.total_seconds() / 3
        pushes = self.store if isinstance(self.store, SupportsWakeUps) else None
        # When every process is woken by pushes, polling is only the fallback: make it rare,
        # even right after work was found. Otherwise work other processes make is only
        # found by polling: look again soon after finding some.
        everywhere = pushes is not None and pushes.wakes_all_processes
        max_poll = 1.0 if everywhere else 0.25
        min_poll = max_poll if everywhere else 0.001

        def notified(kind: str) -> Callable[[float], Awaitable[bool]] | None:
            if pushes is None:
                return None
            return lambda timeout: pushes.wait_for_notification(timeout, kind=kind)

        async def lock_orchestrations(_: int) -> list[OrchestrationWorkItem]:
            item = await self.store.lock_next_orchestration_work_item(
                self.worker_id, self._lease, self._cache.marks() if self._cache.enabled else None
            )
            return [] if item is None else [item]

        self._orchestrations = Dispatcher(
            "orchestration",
            lock_orchestrations,
            self._process_orchestration,
            lambda wi: self.store.renew_orchestration_work_item(wi, self._lease),
            concurrency=self._max_orchestrations,
            renew_interval=renew_every,
            min_poll=min_poll,
            max_poll=max_poll,
            notified=notified("orchestration"),
        )
        self._activities = Dispatcher(
            "activity",
            lambda wanted: self.store.lock_next_activity_work_items(
                self.worker_id, self._lease, wanted
            ),
            self._process_activity,
            lambda wi: self.store.renew_activity_work_item(wi, self._lease),
            concurrency=self._max_activities,
            renew_interval=renew_every,
            batch=_ACTIVITY_BATCH,
            min_poll=min_poll,
            max_poll=max_poll,
            notified=notified("activity"),
        )
        self._thread_pool = ThreadPoolExecutor(
            self._activity_threads, thread_name_prefix="duratask-activity"
        )
        loops = [
            asyncio.create_task(self._orchestrations.run()),
            asyncio.create_task(self._activities.run()),
        ]
        self._started.set()
        _LOG.info(
            "worker %s started",
            self.worker_id,
            extra={"event": "duratask.worker.started", "worker_id": self.worker_id},
        )
        try:
            await self._stop_requested.wait()
        finally:
            await self._drain(loops)
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
            await self.store.close()
            _LOG.info(
                "worker %s stopped",
                self.worker_id,
                extra={"event": "duratask.worker.stopped", "worker_id": self.worker_id},
            )

    async def shutdown(self) -> None:
        """Ask :meth:`run` to stop: no new work is fetched; in-flight work finishes."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        dispatchers = [d for d in (self._orchestrations, self._activities) if d is not None]
        for d in dispatchers:
            d.stop()
        await asyncio.gather(*loops, return_exceptions=True)
        in_flight = [t for d in dispatchers for t in d.in_flight]
        if in_flight:
            _, pending = await asyncio.wait(in_flight, timeout=self._grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- running in a background thread ---------------------------------------------------------
    def start(self) -> None:
        """Run the worker in a background thread; returns once it is processing work."""
        if self._thread is not None:
            raise RuntimeError("the worker is already started")
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"duratask-worker-{self.worker_id}", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.run())
        except BaseException as exc:
            if not self._started.is_set():
                self._start_error = exc
            else:
                _LOG.exception(
                    "worker %s crashed",
                    self.worker_id,
                    extra={"event": "duratask.worker.crashed", "worker_id": self.worker_id},
                )
        finally:
            self._started.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background worker started by :meth:`start` and wait for it."""
        thread, loop, stop = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop already finished
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> TaskHubWorker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- work items -----------------------------------------------------------------------------
    async def _process_orchestration(self, work_item: OrchestrationWorkItem) -> None:
        now = self._clock()
        mark = self._history_mark(work_item)
        cursor = self._cache.take(work_item.instance_id, mark) if mark else None
        try:
            if cursor is None and not work_item.history_loaded:
                # Evicted while the store was leasing it: read the history after all.
                work_item.history = await self.store.get_history(work_item.instance_id)
            poison = self._poison(work_item)
            outcome, live_cursor = plan_episode(
                work_item, self._executor, now, cursor=cursor, poison=poison
            )
            if isinstance(outcome, Defer):
                await self.store.abandon_orchestration_work_item(work_item, outcome.retry_at)
                self._wake_at(outcome.retry_at, self._orchestrations)
                return
            committed = await self._commit_running_activities_here(
                outcome,
                lambda commit: self.store.complete_orchestration_work_item(work_item, commit),
            )
            assert committed is not None  # a leased work item's commit writes or raises
            outcome = committed
        except LeaseLostError:
            _LOG.warning(
                "instance %r: lease lost, the episode was not committed",
                work_item.instance_id,
                extra={
                    "event": "duratask.lease.lost",
                    "instance_id": work_item.instance_id,
                    "work": "orchestration",
                },
            )
            return
        except Exception:
            _LOG.exception(
                "instance %r: the episode failed; it will be retried",
                work_item.instance_id,
                extra={
                    "event": "duratask.orchestration.episode_failed",
                    "instance_id": work_item.instance_id,
                },
            )
            # Back off as the same work keeps failing; it is given up after max_deliveries.
            delay = timedelta(seconds=min(60, 2 ** (deliveries(work_item) - 1)))
            await self.store.abandon_orchestration_work_item(work_item, now + delay)
            self._wake_at(now + delay, self._orchestrations)
            return
        self._after_episode(work_item, outcome, live_cursor)

    def _after_episode(
        self,
        work_item: OrchestrationWorkItem,
        outcome: OrchestrationCommit,
        live_cursor: OrchestrationCursor | None,
    ) -> None:
        """After an episode committed: keep its cursor, log it, wake what it made ready."""
        if live_cursor is not None and outcome.state.execution_id is not None:
            live_cursor.committed()
            length = len(outcome.new_events)
            if not outcome.reset_history:
                length += work_item.history_length
            mark = HistoryMark(outcome.state.execution_id, length)
            self._cache.put(work_item.instance_id, mark, live_cursor, outcome.state)
        log_commit(work_item.instance_id, outcome)
        self._after_commit(outcome)

    async def _commit_running_activities_here(
        self,
        commit: OrchestrationCommit,
        store_commit: Callable[[OrchestrationCommit], Awaitable[list[ActivityWorkItem] | None]],
        *,
        consumes_nothing: bool = False,
    ) -> OrchestrationCommit | None:
        """Commit the episode with ``store_commit``; the activities it schedules that this
        worker has room for are leased to it in the same transaction and start at once,
        with no fetch round trip. Returns the commit as made, or None if ``store_commit``
        wrote nothing. ``consumes_nothing``: the episode's messages were never stored."""
        activities = self._activities
        claimed = 0
        if activities is not None and commit.activities:
            # An activity that finished here and schedules the next gives it its own slot.
            claimed = activities.hand_over()
            claimed += await activities.claim(len(commit.activities) - claimed)
        changes: dict[str, Any] = {}
        if claimed:
            changes["eager_activities"] = EagerLease(self.worker_id, self._lease, claimed)
        if consumes_nothing:
            changes["consumed_message_ids"] = ()
        if changes:  # one copy for both: this runs at every step
            commit = dataclasses.replace(commit, **changes)
        leased: list[ActivityWorkItem] | None = []
        try:
            leased = await store_commit(commit)
        finally:
            if activities is not None and claimed:
                for item in leased or ():
                    activities.submit(item)
                activities.unclaim(claimed - len(leased or ()))
        return None if leased is None else commit

    @staticmethod
    def _history_mark(work_item: OrchestrationWorkItem) -> HistoryMark | None:
        state = work_item.state
        if state is None or state.execution_id is None:
            return None
        return HistoryMark(state.execution_id, work_item.history_length)

    def _after_commit(self, commit: OrchestrationCommit) -> None:
        eager = commit.eager_activities.max_items if commit.eager_activities else 0
        if len(commit.activities) > eager and self._activities is not None:
            self._activities.wake()
        for message in commit.messages:
            if isinstance(message.event, TimerFired) and message.visible_at is not None:
                self._wake_at(message.visible_at, self._orchestrations)
            elif self._orchestrations is not None:
                self._orchestrations.wake()

    def _wake_at(self, when: datetime, dispatcher: Dispatcher[Any] | None) -> None:
        if dispatcher is None or self._loop is None:
            return
        delay = max(0.0, (when - self._clock()).total_seconds())
        self._loop.call_later(delay, dispatcher.wake)

    def _poison(self, work_item: OrchestrationWorkItem) -> FailureDetails | None:
        delivered = deliveries(work_item)
        if delivered <= self._max_deliveries:
            return None
        _LOG.error(
            "instance %r: its work was delivered %d times without completing; marking it FAILED",
            work_item.instance_id,
            delivered,
            extra={
                "event": "duratask.orchestration.poisoned",
                "instance_id": work_item.instance_id,
                "deliveries": delivered,
            },
        )
        return poison_details(
            f"the work of orchestration instance {work_item.instance_id!r}", delivered
        )

    async def _process_activity(self, work_item: ActivityWorkItem) -> None:
        if work_item.dequeue_count > self._max_deliveries:
            result = self._give_up_activity(work_item)
        else:
            result = await traced_activity(
                work_item,
                self.store,
                lambda: run_activity(
                    work_item, self.registry, self._codec, self._thread_pool, self._clock()
                ),
            )
        try:
            if await self._complete_and_continue_here(work_item, result):
                return
        except LeaseLostError:
            _LOG.warning(
                "activity %r of %r: lease lost; another worker will run it again",
                work_item.request.name,
                work_item.request.instance_id,
                extra={
                    "event": "duratask.lease.lost",
                    "instance_id": work_item.request.instance_id,
                    "work": "activity",
                    "activity_name": work_item.request.name,
                    "task_id": work_item.request.task_id,
                },
            )
            return
        if self._orchestrations is not None:
            self._orchestrations.wake()

    async def _complete_and_continue_here(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> bool:
        """Commit the activity's result. When the instance is cached here and waits for this
        result alone and the store allows, the instance's next episode runs here on the
        result, once an orchestration slot is free, and commits with it in one transaction
        (True), with no wake-up or fetch in between; if the instance is busy after all, the
        instance is leased to this worker with the result, as a fetch would. A fan-in is
        left to gather its results instead."""
        store, orchestrations = self._eager_store, self._orchestrations
        request = work_item.request
        claimed = 0
        if (
            store is not None
            and orchestrations is not None
            and self._cache.awaits_only(request.instance_id, request.task_id)
        ):
            # Waiting is safe: an episode never waits for an activity slot. Storing the
            # result instead would cost two more store calls (a lease and a commit).
            claimed = int(await orchestrations.reserve())
        if not claimed:
            await self.store.complete_activity_work_item(work_item, result)
            return False
        assert store is not None and orchestrations is not None
        try:
            if await self._continue_with_result(store, work_item, result):
                orchestrations.unclaim(1)
                return True
        except BaseException:
            orchestrations.unclaim(1)
            raise
        leased = None
        try:
            marks = self._cache.marks() if self._cache.enabled else None
            leased = await store.complete_activity_and_lease_instance(
                work_item, result, self.worker_id, self._lease, marks
            )
        finally:
            if leased is not None:
                orchestrations.submit(leased)
            else:
                orchestrations.unclaim(1)
        return leased is not None

    async def _continue_with_result(
        self,
        store: SupportsEagerOrchestrations,
        work_item: ActivityWorkItem,
        result: OrchestrationMessage,
    ) -> bool:
        """Run the cached instance's next episode on the activity's result and commit both
        together; False (nothing committed) when the instance is busy or changed."""
        instance_id = work_item.request.instance_id
        cached = self._cache.take_current(instance_id)
        if cached is None:
            return False
        mark, cursor, state = cached
        now = self._clock()
        episode = OrchestrationWorkItem(
            instance_id=instance_id,
            lock_token="",
            locked_until=now,
            history=[],
            messages=[LockedMessage(0, result)],
            state=state,
            history_length=mark.length,
            history_loaded=False,
        )
        try:
            planned, live_cursor = plan_episode(episode, self._executor, now, cursor=cursor)
            if isinstance(planned, Defer) or planned.state.execution_id is None:
                return False
            # The result was never stored as a message: nothing is consumed.
            outcome = await self._commit_running_activities_here(
                planned,
                lambda commit: store.complete_activity_and_episode(work_item, episode, commit),
                consumes_nothing=True,
            )
            if outcome is None:  # the instance was busy or changed: nothing written
                return False
        except LeaseLostError:
            raise
        except Exception:
            _LOG.exception(
                "instance %r: running its episode on an activity result failed; the result "
                "is stored for a later episode",
                instance_id,
                extra={
                    "event": "duratask.orchestration.episode_failed",
                    "instance_id": instance_id,
                },
            )
            return False
        self._after_episode(episode, outcome, live_cursor)
        return True

    def _give_up_activity(self, work_item: ActivityWorkItem) -> OrchestrationMessage:
        request = work_item.request
        _LOG.error(
            "activity %r of %r was delivered %d times without completing; failing its task",
            request.name,
            request.instance_id,
            work_item.dequeue_count,
            extra={
                "event": "duratask.activity.poisoned",
                "instance_id": request.instance_id,
                "activity_name": request.name,
                "task_id": request.task_id,
                "deliveries": work_item.dequeue_count,
            },
        )
        details = poison_details(f"activity {request.name!r}", work_item.dequeue_count)
        failed = TaskFailed(
            timestamp=self._clock(), task_scheduled_id=request.task_id, failure_details=details
        )
        return OrchestrationMessage(request.instance_id, failed, request.execution_id)
