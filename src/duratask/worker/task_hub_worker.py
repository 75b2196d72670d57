"""The task hub worker: hosts orchestrations and activities and drives them against a store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from duratask._engine import OrchestrationExecutor
from duratask._local_workers import LocalWorker
from duratask._registry import Registry, check_name
from duratask.backends import open_store
from duratask.backends.base import (
    ActivityWorkItem,
    EntityMessage,
    EntityWorkItem,
    HistoryMark,
    OrchestrationMessage,
    OrchestrationWorkItem,
    SupportsEagerStart,
    SupportsWakeUps,
    TaskHubStore,
    WorkFilter,
)
from duratask.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter, PayloadCodec
from duratask.errors import FeatureNotSupportedError, LeaseLostError
from duratask.history import TaskFailed
from duratask.state import DEFAULT_TASK_QUEUE, FailureDetails
from duratask.tracing._activity import traced_activity
from duratask.tracing._episode import TRACING
from duratask.worker._activity_runner import run_activity
from duratask.worker._code_runner import EpisodeOverBudget, OrchestrationCodeRunner
from duratask.worker._dispatcher import Dispatcher, Permit
from duratask.worker._eager import ActivityResults
from duratask.worker._eager_start import EagerStarts
from duratask.worker._entity_batch import process_entity_batch
from duratask.worker._episode import (
    Defer,
    EpisodeInput,
    deliveries,
    orchestration_work,
    plan_episode,
    poison_details,
)
from duratask.worker._episodes import EpisodeCommitter
from duratask.worker._orchestration_cache import OrchestrationCache
from duratask.worker._presence import Presence
from duratask.worker._scheduler import Scheduler
from duratask.worker._store_full import install as install_store_full_filter
from duratask.worker._threads import DaemonThreadPool

_LOG = logging.getLogger("duratask.worker")
install_store_full_filter(_LOG)
_MAX_LEASE = timedelta(minutes=5)
_ACTIVITY_BATCH = 8  # activities leased by one fetch, at most
_CODE_THREADS = 2  # one orchestration spinning to its budget does not stall the others


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

    ``verify_replay`` (for tests and staging) replays every episode from the stored history,
    never from the cache, and checks each replayed step strictly: its kind and name, and
    also what it was given (activity and sub-orchestration inputs, child instance ids,
    timer times, event data). Orchestration code that is not deterministic (it reads the
    clock, random numbers, I/O) then fails with
    :class:`~duratask.errors.NonDeterminismError` at its next episode, instead of only when
    a crash or an eviction makes the worker replay it.

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

    Orchestration code runs on threads of its own, never on the loop that keeps leases
    alive, and each episode has ``episode_budget`` (5 s by default; None: no limit) to
    run it: past that, the code is interrupted, the episode is abandoned and counts as a
    delivery, so an orchestration that never yields ends FAILED as poison, naming the
    budget, instead of halting the worker.

    An episode that failed (a store error, its code over budget) is retried after a delay
    that doubles with each delivery (1, 2, 4 ... seconds), up to ``max_retry_delay`` (60 s by
    default). Redelivered work (its worker may have died running it) runs with nothing else
    in flight beside it on this worker, so that if it kills this worker too, only it is
    charged the delivery.

    Entities (see :meth:`add_entity`) run up to ``max_concurrent_entities`` at once (one
    batch per entity at a time), each batch up to ``entity_batch_size`` operations (500 by
    default) and one commit.
    With ``fire_schedules`` (the default) the worker also fires the hub's schedules (see
    :class:`~duratask.ScheduleSpec`): any number of workers may, each slot still runs once.

    ``activity_timeout`` bounds every delivery of an activity whose call sets no
    ``timeout`` (None: no limit). ``unknown_work`` says what happens to instances and
    activities this worker has not registered (by name, and version for orchestrations):
    ``"wait"`` (the default) leases only what it registered, so that work the worker
    cannot run waits for one that can (a rolling deploy never fails instances of a new
    orchestration); ``"fail"`` leases anything and fails what it cannot run at once.

    Attributes:
        store: The task hub store the worker runs against (built from the URL if given one).
        registry: The orchestrations and activities registered on the worker.
        worker_id: The worker's name in leases and logs: host, process id and a random
            suffix unless given.
        verify_replay: Whether every episode is replayed from the stored history and
            checked strictly (see above).
        task_queues: The task queues the worker serves (see above).
    """

    def __init__(
        self,
        store: str | TaskHubStore,
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
        activity_timeout: timedelta | None = None,
        unknown_work: Literal["wait", "fail"] = "wait",
        episode_budget: timedelta | None = timedelta(seconds=5),
        verify_replay: bool = False,
        clock: Callable[[], datetime] = _utc_now,
        max_concurrent_entities: int = 100,
        entity_batch_size: int = 500,
        fire_schedules: bool = True,
        max_retry_delay: timedelta = timedelta(seconds=60),
        task_queues: Iterable[str] = (DEFAULT_TASK_QUEUE,),
    ) -> None:
        if not timedelta(0) < lease_duration <= _MAX_LEASE:
            raise ValueError(f"lease_duration must be between 0 and {_MAX_LEASE}")
        if (
            min(max_concurrent_orchestrations, max_concurrent_activities, max_concurrent_entities)
            < 1
        ):
            raise ValueError("concurrency limits must be at least 1")
        if entity_batch_size < 1:
            raise ValueError("entity_batch_size must be at least 1")
        self._max_entities = max_concurrent_entities
        self._entity_batch = entity_batch_size
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
        self.verify_replay = verify_replay
        self._executor = OrchestrationExecutor(self.registry, self._codec, strict=verify_replay)
        self._cache = OrchestrationCache(0 if verify_replay else orchestration_cache_size)
        self._fire_schedules = fire_schedules
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._max_deliveries = max_deliveries
        if activity_timeout is not None and activity_timeout <= timedelta(0):
            raise ValueError("activity_timeout must be positive")
        self._activity_timeout = activity_timeout
        if unknown_work not in ("wait", "fail"):
            raise ValueError(f"unknown_work must be 'wait' or 'fail', not {unknown_work!r}")
        self._unknown_work = unknown_work
        self._filter_made: tuple[int, WorkFilter | None] = (-1, None)
        if isinstance(task_queues, str):
            raise TypeError("task_queues takes a collection of names, not one string")
        self.task_queues = frozenset(check_name(q, "task queue") for q in task_queues)
        if not self.task_queues:
            raise ValueError("task_queues must name at least one task queue")
        self._queues_only = WorkFilter(task_queues=self.task_queues)
        if episode_budget is not None and episode_budget <= timedelta(0):
            raise ValueError("episode_budget must be positive")
        self._episode_budget = episode_budget
        if max_retry_delay < timedelta(0):
            raise ValueError("max_retry_delay must not be negative")
        self._max_retry_delay = max_retry_delay
        self._code: OrchestrationCodeRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._orchestrations: Dispatcher[OrchestrationWorkItem] | None = None
        self._activities: Dispatcher[ActivityWorkItem] | None = None
        self._entities: Dispatcher[EntityWorkItem] | None = None
        self._episodes: EpisodeCommitter | None = None
        self._results: ActivityResults | None = None

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

    def add_entity(self, entity: Any, *, name: str | None = None) -> str:
        """Register a durable entity: a function ``(ctx, input)`` that dispatches on
        ``ctx.operation_name``, or a class whose public methods are its operations (sync or
        ``async def``); returns its name (lower-case)."""
        return self.registry.add_entity(entity, name=name)

    # -- running in the caller's event loop -------------------------------------------------
    async def run(self) -> None:
        """Process work until :meth:`shutdown` (or :meth:`stop`) is called, or cancelled."""
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        await self.store.open()
        if self.registry.entity_names and not getattr(self.store, "supports_entities", True):
            await self.store.close()
            raise FeatureNotSupportedError(
                f"this worker registered entities ({', '.join(sorted(self.registry.entity_names))}"
                f"), which {self.store.describe()} does not keep; use a SQLite or PostgreSQL "
                "task hub for entities"
            )
        orchestrations, activities = self._build_runtime()
        entities = self._entities
        assert entities is not None
        self._thread_pool = DaemonThreadPool(self._activity_threads, "duratask-activity")
        presence = Presence(
            self.store,
            self.worker_id,
            self.registry,
            self._clock,
            self._in_flight,
            self.task_queues,
        )
        await presence.start()
        scheduler = Scheduler(self.store, self.worker_id, self._clock, self._lease)
        # A store written before schedules existed has no schedule methods: nothing to fire.
        if self._fire_schedules and hasattr(self.store, "due_schedules"):
            await scheduler.start()
        loops = [
            asyncio.create_task(orchestrations.run()),
            asyncio.create_task(activities.run()),
            asyncio.create_task(entities.run()),
        ]
        local: LocalWorker | None = None
        try:
            await asyncio.sleep(0)  # the dispatchers begin: they take work from here on
            local = self._offer_eager_starts(orchestrations)
            self._started.set()
            _LOG.info(
                "worker %s started",
                self.worker_id,
                extra={"event": "duratask.worker.started", "worker_id": self.worker_id},
            )
            await self._stop_requested.wait()
        finally:
            if local is not None:
                await local.close()
            await scheduler.stop()
            await self._drain(loops)
            self._thread_pool.shutdown()
            if self._code is not None:
                self._code.close()
            await presence.stop()
            await self.store.close()
            _LOG.info(
                "worker %s stopped",
                self.worker_id,
                extra={"event": "duratask.worker.stopped", "worker_id": self.worker_id},
            )

    def _offer_eager_starts(
        self, orchestrations: Dispatcher[OrchestrationWorkItem]
    ) -> LocalWorker | None:
        """Offer this worker to the clients of its process on its hub (eager start), if
        its store can lease an instance as it creates it."""
        store = self.store
        if not isinstance(store, SupportsEagerStart):
            return None
        starts = EagerStarts(
            store,
            orchestrations,
            self.registry,
            self._work_filter,
            owner=self.worker_id,
            lease=self._lease,
        )
        return LocalWorker(self.store.describe().hub, starts.start_here)

    def _work_filter(self) -> WorkFilter:
        """What this worker leases: work on its task queues; of that, what it registered
        (so far: functions registered while it runs count at once), unless it fails unknown
        work."""
        if self._unknown_work == "fail":
            return self._queues_only
        generation, made = self._filter_made
        if generation != self.registry.generation or made is None:
            made = WorkFilter(
                orchestrations=self.registry.orchestration_keys,
                activities=frozenset(self.registry.activity_names),
                entities=frozenset(self.registry.entity_names),
                task_queues=self.task_queues,
            )
            self._filter_made = (self.registry.generation, made)
        return made

    def _in_flight(self) -> dict[str, int]:
        return {
            kind: len(dispatcher.in_flight)
            for kind, dispatcher in (
                ("orchestrations", self._orchestrations),
                ("activities", self._activities),
                ("entities", self._entities),
            )
            if dispatcher is not None
        }

    def _build_runtime(
        self,
    ) -> tuple[Dispatcher[OrchestrationWorkItem], Dispatcher[ActivityWorkItem]]:
        """The dispatchers and the episode machinery of one run (no I/O)."""
        budget = self._episode_budget
        self._code = OrchestrationCodeRunner(
            min(_CODE_THREADS, self._max_orchestrations),
            None if budget is None else budget.total_seconds(),
        )
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
                self.worker_id,
                self._lease,
                self._cache.marks() if self._cache.enabled else None,
                self._work_filter(),
            )
            return [] if item is None else [item]

        orchestrations: Dispatcher[OrchestrationWorkItem] = Dispatcher(
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
        activities: Dispatcher[ActivityWorkItem] = Dispatcher(
            "activity",
            lambda wanted: self.store.lock_next_activity_work_items(
                self.worker_id, self._lease, wanted, self._work_filter()
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
        self._entities = Dispatcher(
            "entity",
            self._lock_entity,
            self._process_entity,
            lambda wi: self.store.renew_entity_work_item(wi, self._lease),
            concurrency=self._max_entities,
            renew_interval=renew_every,
            min_poll=min_poll,
            max_poll=max_poll,
            notified=notified("entity"),
        )
        self._orchestrations, self._activities = orchestrations, activities
        self._episodes = EpisodeCommitter(
            self.store,
            self._cache,
            orchestrations,
            activities,
            owner=self.worker_id,
            lease=self._lease,
            wake_at=self._wake_at,
            work_filter=self._work_filter,
        )
        self._results = ActivityResults(
            self.store,
            self._cache,
            self._executor,
            self._episodes,
            orchestrations,
            self._clock,
            self._code,
        )
        return orchestrations, activities

    async def shutdown(self) -> None:
        """Ask :meth:`run` to stop: no new work is fetched; in-flight work finishes."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        dispatchers = [
            d for d in (self._orchestrations, self._activities, self._entities) if d is not None
        ]
        for d in dispatchers:
            d.stop()
        await asyncio.gather(*loops, return_exceptions=True)
        # An episode committing as the worker stops may still start the activities it
        # leased to this worker: wait for those too, within the same grace.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        while in_flight := [t for d in dispatchers for t in d.in_flight]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
                break
            await asyncio.wait(in_flight, timeout=remaining)

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
    async def _process_orchestration(
        self, work_item: OrchestrationWorkItem, _: Permit[OrchestrationWorkItem] | None = None
    ) -> None:
        orchestrations = self._orchestrations
        assert orchestrations is not None  # set by run()
        if deliveries(work_item) > 1:
            # Delivered before and never committed: its worker may have died running it. It
            # runs with no other episode in flight here, so that if its code kills this
            # worker too, no other instance is charged a delivery for it.
            async with orchestrations.alone():
                await self._run_episode(work_item)
        else:
            await self._run_episode(work_item)

    async def _run_episode(self, work_item: OrchestrationWorkItem) -> None:
        episodes, code = self._episodes, self._code
        assert episodes is not None and code is not None  # set by run()
        now = self._clock()
        mark = self._history_mark(work_item)
        cursor = self._cache.take(work_item.instance_id, mark) if mark else None
        try:
            if cursor is None and not work_item.history_loaded:
                # Evicted while the store was leasing it: read the history after all.
                work_item.history = await self.store.get_history(work_item.instance_id)
            poison = self._poison(work_item)
            source = EpisodeInput.of(work_item)
            planned, live_cursor = await code.run(
                functools.partial(
                    plan_episode,
                    source,
                    self._executor,
                    now,
                    cursor=cursor,
                    poison=poison,
                    observer=TRACING,
                )
            )
            if isinstance(planned, Defer):
                await self.store.abandon_orchestration_work_item(work_item, planned.retry_at)
                self._wake_at(planned.retry_at, self._orchestrations)
                return
            commit = await episodes.commit(work_item.fence(), planned)
        except asyncio.CancelledError:
            # Stopping: let another worker have the instance now, not when the lease ends.
            with contextlib.suppress(Exception):
                await self.store.abandon_orchestration_work_item(work_item)
            raise
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
        except EpisodeOverBudget:
            await self._over_budget(work_item, now)
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
            delay = self._retry_delay(deliveries(work_item))
            await self.store.abandon_orchestration_work_item(work_item, now + delay)
            self._wake_at(now + delay, self._orchestrations)
            return
        episodes.after(work_item.instance_id, work_item.history_length, commit, live_cursor)
        self._wake_for_delayed(commit.entity_messages)

    async def _over_budget(self, work_item: OrchestrationWorkItem, now: datetime) -> None:
        """The episode's code ran past its budget: abandon it (a delivery), or, on its last
        allowed delivery, end the instance FAILED, saying so."""
        budget = self._episode_budget
        delivered = deliveries(work_item)
        _LOG.error(
            "instance %r: its orchestration code ran past the episode budget of %ss and was "
            "interrupted (delivery %d of at most %d)",
            work_item.instance_id,
            budget.total_seconds() if budget else None,
            delivered,
            self._max_deliveries,
            extra={
                "event": "duratask.orchestration.over_budget",
                "instance_id": work_item.instance_id,
                "deliveries": delivered,
            },
        )
        if delivered < self._max_deliveries:
            delay = self._retry_delay(delivered)
            await self.store.abandon_orchestration_work_item(work_item, now + delay)
            self._wake_at(now + delay, self._orchestrations)
            return
        what = orchestration_work(work_item.instance_id)
        reason = (
            f"its orchestration code ran past the episode budget ({budget}) each time: "
            "code that never yields (an endless loop) or computes too long in one step"
        )
        if work_item.history_loaded is False:
            work_item.history = await self.store.get_history(work_item.instance_id)
        planned, _ = plan_episode(
            EpisodeInput.of(work_item),
            self._executor,
            now,
            poison=poison_details(what, delivered, reason),
        )
        assert self._episodes is not None
        if not isinstance(planned, Defer):
            try:
                await self._episodes.commit(work_item.fence(), planned)
            except LeaseLostError:
                return

    def _retry_delay(self, delivered: int) -> timedelta:
        """How long work that failed at its ``delivered``-th delivery rests."""
        return min(self._max_retry_delay, timedelta(seconds=2 ** min(delivered - 1, 16)))

    @staticmethod
    def _history_mark(work_item: OrchestrationWorkItem) -> HistoryMark | None:
        state = work_item.state
        if state is None or state.execution_id is None:
            return None
        return HistoryMark(state.execution_id, work_item.history_length)

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
        return poison_details(orchestration_work(work_item.instance_id), delivered)

    async def _process_activity(
        self, work_item: ActivityWorkItem, running: Permit[ActivityWorkItem] | None = None
    ) -> None:
        results, activities = self._results, self._activities
        assert results is not None and activities is not None  # set by run()
        try:
            if work_item.dequeue_count > self._max_deliveries:
                result = self._give_up_activity(work_item)
            elif work_item.dequeue_count > 1:
                # Delivered before and never finished: its worker may have died running it.
                # It runs alone, so that if it kills this worker too, no other activity
                # is charged a delivery for it; one at a time, and none waits its turn
                # here (where the death of the one before would charge it too).
                if activities.someone_alone:
                    await self.store.abandon_activity_work_item(work_item)
                    return
                async with self._suspect_alone():
                    result = await self._run_activity(work_item)
            else:
                result = await self._run_activity(work_item)
        except asyncio.CancelledError:
            # Stopping: hand it back unrun (not a delivery) for another worker to take now.
            with contextlib.suppress(Exception):
                await self.store.abandon_activity_work_item(work_item)
            raise
        try:
            await results.deliver(work_item, result, running)
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

    async def _lock_entity(self, _: int) -> list[EntityWorkItem]:
        work_filter = self._work_filter()
        if work_filter.entities is not None and not work_filter.entities:
            return []  # none registered: nothing to ask the store for
        item = await self.store.lock_next_entity_work_item(
            self.worker_id, self._lease, self._entity_batch, work_filter
        )
        return [] if item is None else [item]

    async def _process_entity(
        self, work_item: EntityWorkItem, _: Permit[EntityWorkItem] | None = None
    ) -> None:
        now = self._clock()
        try:
            commit = await process_entity_batch(work_item, self.registry, self._codec, now)
            await self.store.complete_entity_work_item(work_item, commit)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.store.abandon_entity_work_item(work_item)
            raise
        except LeaseLostError:
            _LOG.warning(
                "entity %r: lease lost, the batch was not committed",
                work_item.entity_id,
                extra={
                    "event": "duratask.lease.lost",
                    "instance_id": work_item.entity_id,
                    "work": "entity",
                },
            )
            return
        except Exception:
            _LOG.exception(
                "entity %r: the batch failed; it will be retried",
                work_item.entity_id,
                extra={"event": "duratask.entity.batch_failed", "entity_id": work_item.entity_id},
            )
            retry_at = now + timedelta(seconds=1)
            await self.store.abandon_entity_work_item(work_item, retry_at)
            self._wake_at(retry_at, self._entities)
            return
        if commit.messages and self._orchestrations is not None:
            self._orchestrations.wake()
        if commit.entity_messages and self._entities is not None:
            self._entities.wake()
        self._wake_for_delayed(commit.entity_messages)

    def _wake_for_delayed(self, messages: Sequence[EntityMessage]) -> None:
        """Look for entity work again when delayed signals sent from here fall due."""
        for message in messages:
            if message.visible_at is not None:
                self._wake_at(message.visible_at, self._entities)

    @contextlib.asynccontextmanager
    async def _suspect_alone(self) -> AsyncIterator[None]:
        """For an activity that may have killed its last worker: run it with no other
        activity, episode or entity batch in flight here (those are quick to finish), and
        none starting meanwhile, so that if it kills this worker too, only it is charged a
        delivery. Taken in one order (activities, orchestrations, entities), as an
        orchestration running alone takes only its own."""
        async with contextlib.AsyncExitStack() as stack:
            for dispatcher in (self._activities, self._orchestrations, self._entities):
                if dispatcher is not None:
                    await stack.enter_async_context(dispatcher.alone())
            yield

    async def _run_activity(self, work_item: ActivityWorkItem) -> OrchestrationMessage:
        return await traced_activity(
            work_item,
            self.store,
            lambda: run_activity(
                work_item,
                self.registry,
                self._codec,
                self._thread_pool,
                self._clock,
                default_timeout=self._activity_timeout,
                write_heartbeat=functools.partial(self._heartbeat, work_item),
            ),
        )

    async def _heartbeat(self, work_item: ActivityWorkItem, details: str | None) -> None:
        await self.store.record_activity_heartbeat(work_item, details, self._lease)

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
