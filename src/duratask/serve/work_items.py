"""The ``GetWorkItems`` stream: leasing orchestration episodes and activities to SDK workers.

Each stream is one worker connection. It leases work like any duratask worker (under its
own owner id, within the concurrency limits and work-item filters the worker sent), keeps
the leases alive while the worker holds them, and sends each item with a completion token.
The completion RPCs commit through the seam under the lease's fence, so a completion for a
lease that was taken over is refused. A stream that ends (the worker stopped, the
connection dropped) hands its unfinished items back at once, for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from durabletask.internal import orchestrator_service_pb2 as pb

from duratask import history as h
from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    EagerLease,
    EntityWorkItem,
    EpisodeFence,
    InstanceUnchanged,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    SupportsEagerStart,
    SupportsWakeUps,
    TaskHubStore,
    WorkerInfo,
    WorkFilter,
)
from duratask.entities._context import EntityAction, SignalAction, StartOrchestrationAction
from duratask.entities._executor import EntityBatchResult, OperationResult
from duratask.errors import InstanceBusyError, LeaseLostError
from duratask.serve.ahead import Ahead
from duratask.serve.episodes import (
    CodeRequest,
    WorkerReply,
    finish,
    first_input,
    give_up,
    prepare,
)
from duratask.serve.known_histories import KnownHistories
from duratask.serve.protocol import (
    ProtocolError,
    events_to_pb,
    failure_from_pb,
    optional_text,
    optional_time,
    text,
)
from duratask.state import DEFAULT_TASK_QUEUE, OrchestrationState, OrchestrationStatus
from duratask.worker._entity_batch import PlannedBatch, plan_entity_batch
from duratask.worker._episode import (
    Defer,
    EpisodeInput,
    deliveries,
    orchestration_work,
    poison_details,
)

_LOG = logging.getLogger("duratask.serve")
_T = TypeVar("_T")
_ABANDON_BACKOFF = timedelta(seconds=1)


class UnknownTokenError(LookupError):
    """A completion names no work item this server holds (finished, abandoned, or its
    lease lost)."""


# SDK workers know no task queues: they serve the default one, as duratask's workers do
# unless given others.
_SDK_QUEUES = frozenset({DEFAULT_TASK_QUEUE})


def work_filter(request: pb.GetWorkItemsRequest) -> WorkFilter:
    """The seam's filter for a worker's ``workItemFilters``: without them it runs anything
    on the default task queue. A filter naming no versions of an orchestration matches its
    unversioned instances."""
    if not request.HasField("workItemFilters"):
        return WorkFilter(task_queues=_SDK_QUEUES)
    filters = request.workItemFilters
    orchestrations: set[tuple[str, str | None]] = set()
    for item in filters.orchestrations:
        if item.versions:
            orchestrations.update((item.name, v) for v in item.versions)
        else:
            orchestrations.add((item.name, None))
    return WorkFilter(
        orchestrations=frozenset(orchestrations),
        activities=frozenset(item.name for item in filters.activities),
        entities=frozenset(item.name.lower() for item in filters.entities),
        task_queues=_SDK_QUEUES,
    )


class _Slots:
    """How many more items a worker takes of one kind (its concurrency limit)."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._changed = asyncio.Event()

    async def wait(self) -> int:
        while self.free <= 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free

    def take(self, n: int = 1) -> None:
        self.free -= n

    def give(self) -> None:
        self.free += 1
        self._changed.set()


class _Outbox:
    """The items waiting to be sent on one stream. A waiting sender holds one future, woken
    by the next item, by a pump that failed, or by the ping interval's end: no task per
    item, unlike a queue read raced against the pumps."""

    def __init__(self) -> None:
        self._items: deque[pb.WorkItem] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None

    def put_nowait(self, item: pb.WorkItem) -> None:
        self._items.append(item)
        self._wake()

    def fail(self, error: BaseException) -> None:
        self.failure = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def get_nowait(self) -> pb.WorkItem:
        return self._items.popleft()

    async def next(self, timeout: float) -> pb.WorkItem | None:
        """The next item, or None after ``timeout`` seconds without one; raises what a
        failed pump raised."""
        if not self._items and self.failure is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            ping = loop.call_later(timeout, self._wake)
            try:
                await waiter
            finally:
                ping.cancel()
                self._waiter = None
        if self.failure is not None:
            raise self.failure
        return self._items.popleft() if self._items else None


@dataclass(eq=False)
class _Stream:
    owner: str
    work_filter: WorkFilter
    named: bool  # the worker sent work-item filters: it is reported as a worker
    orchestration_slots: _Slots
    activity_slots: _Slots
    entity_slots: _Slots
    queue: _Outbox = field(default_factory=_Outbox)
    tokens: set[str] = field(default_factory=set)
    closed: bool = False


@dataclass(eq=False)
class _LeasedEpisode:
    """An episode at a worker: on a leased instance (``item``), or straight through on an
    activity's result (``finished`` with its ``result``, not stored yet: the episode's
    commit consumes it, or it is stored as a message if that cannot be), or the first
    episode of an instance sent ahead of the commit that creates and leases it (``ahead``;
    ``item`` and ``source`` are set when that commit is durable)."""

    stream: _Stream
    item: OrchestrationWorkItem | None
    source: EpisodeInput
    now: datetime
    finished: ActivityWorkItem | None = None
    result: OrchestrationMessage | None = None
    ahead: Ahead[OrchestrationWorkItem] | None = None
    plan: CodeRequest | None = None  # what was sent ahead

    @property
    def in_flight(self) -> bool:
        """Sent ahead of its commit, which has not ended yet."""
        return self.ahead is not None and not self.ahead.settled

    async def leased_item(self) -> OrchestrationWorkItem | None:
        """The leased work item (None straight through), once the commit it was sent ahead
        of is durable; :class:`LeaseLostError` if that commit failed."""
        if self.item is None and self.ahead is not None:
            await self.ahead.item()  # sets item and source as it lands
        return self.item

    def fence(self) -> EpisodeFence:
        if self.item is not None:
            return self.item.fence()
        state = self.source.state
        assert state is not None and state.execution_id is not None
        return InstanceUnchanged(state.execution_id, self.source.history_length)


@dataclass(eq=False)
class _LeasedActivity:
    """An activity at a worker; one sent ahead of the commit that leases it has ``item``
    None until that commit is durable (``ahead``)."""

    stream: _Stream
    request: ActivityRequest
    item: ActivityWorkItem | None
    ahead: Ahead[ActivityWorkItem] | None = None

    @property
    def in_flight(self) -> bool:
        """Sent ahead of its commit, which has not ended yet."""
        return self.ahead is not None and not self.ahead.settled

    async def leased_item(self) -> ActivityWorkItem:
        """The store's work item; :class:`LeaseLostError` if it was sent ahead of a commit
        that failed."""
        if self.item is None:
            assert self.ahead is not None
            self.item = await self.ahead.item()
        return self.item


@dataclass(eq=False)
class _LeasedEntity:
    stream: _Stream
    item: EntityWorkItem
    batch: PlannedBatch


_Leased = _LeasedEpisode | _LeasedActivity | _LeasedEntity


def batch_result_from_pb(result: pb.EntityBatchResult, operations: int) -> EntityBatchResult:
    """duratask's batch result for a worker's; :class:`ProtocolError` if it does not answer
    each of the ``operations`` once, or the whole batch failed."""
    if result.HasField("failureDetails"):
        failure = failure_from_pb(result.failureDetails)
        raise ProtocolError(f"the worker failed the batch: {failure.error_type}: {failure.message}")
    if len(result.results) != operations:
        raise ProtocolError(
            f"the worker answered {len(result.results)} of the batch's {operations} operations"
        )
    results: list[OperationResult] = []
    for outcome in result.results:
        if outcome.HasField("failure"):
            results.append(OperationResult(failure=failure_from_pb(outcome.failure.failureDetails)))
        else:
            results.append(OperationResult(result=optional_text(outcome.success, "result")))
    actions: list[EntityAction] = []
    for action in result.actions:
        kind = action.WhichOneof("operationActionType")
        if kind == "sendSignal":
            signal = action.sendSignal
            actions.append(
                SignalAction(
                    entity_id=signal.instanceId,
                    operation=signal.name,
                    request_id=uuid.uuid4().hex,
                    input=optional_text(signal, "input"),
                    signal_time=optional_time(signal, "scheduledTime"),
                )
            )
        elif kind == "startNewOrchestration":
            start = action.startNewOrchestration
            actions.append(
                StartOrchestrationAction(
                    instance_id=start.instanceId or uuid.uuid4().hex,
                    name=start.name,
                    version=optional_text(start, "version"),
                    input=optional_text(start, "input"),
                )
            )
        else:
            raise ProtocolError(f"unsupported entity operation action {kind!r}")
    return EntityBatchResult(results, optional_text(result, "entityState"), actions)


def _end_on_failure(outbox: _Outbox, task: asyncio.Task[None]) -> None:
    """A stream's pump or keep-alive ended (they run until the stream closes): unless it was
    cancelled, the stream ends with its error."""
    if not task.cancelled():
        outbox.fail(task.exception() or RuntimeError("a work item pump of the stream ended"))


def owner_prefix(port: int) -> str:
    """The lease owner ids of a server on this host and port: one process at a time listens
    there, so leases under this prefix that a starting server finds are its predecessor's."""
    return f"duratask-serve@{socket.gethostname()}:{port}/"


class WorkItemStreams:
    """Every worker stream of one server, and the items they hold."""

    def __init__(
        self,
        store: TaskHubStore,
        *,
        owner_prefix: str,
        lease: timedelta = timedelta(seconds=30),
        ping_interval: float = 10.0,
        max_poll: float = 0.5,
        clock: Callable[[], datetime] | None = None,
        max_deliveries: int = 10,
    ) -> None:
        self._store = store
        self._max_deliveries = max_deliveries
        self._prefix = owner_prefix
        self._lease = lease
        self._ping_interval = ping_interval
        self._max_poll = max_poll
        self._clock = clock or (lambda: datetime.now(UTC))
        self._leased: dict[str, _Leased] = {}
        self._known = KnownHistories()
        self._streams: set[_Stream] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def take_over_predecessor(self) -> int:
        """Break the leases a previous process on this address held (it is gone: this one
        listens there now), so its work is redelivered at once; how many."""
        broken = 0
        for holder in await self._store.lease_holders():
            if holder.owner.startswith(self._prefix):
                broken += await self._store.break_leases(holder.owner)
        return broken

    # -- the stream ------------------------------------------------------------------------

    async def serve(self, request: pb.GetWorkItemsRequest) -> AsyncGenerator[pb.WorkItem, None]:
        """The items of one worker stream, with health pings while idle."""
        stream = _Stream(
            owner=self._prefix + uuid.uuid4().hex[:12],
            work_filter=work_filter(request),
            named=request.HasField("workItemFilters"),
            orchestration_slots=_Slots(max(1, request.maxConcurrentOrchestrationWorkItems or 10)),
            activity_slots=_Slots(max(1, request.maxConcurrentActivityWorkItems or 10)),
            entity_slots=_Slots(max(1, request.maxConcurrentEntityWorkItems or 10)),
        )
        self._streams.add(stream)
        tasks = [
            asyncio.create_task(self._pump(stream, "orchestration")),
            asyncio.create_task(self._pump(stream, "activity")),
            asyncio.create_task(self._pump(stream, "entity")),
            asyncio.create_task(self._keep_alive(stream)),
        ]
        for task in tasks:
            task.add_done_callback(functools.partial(_end_on_failure, stream.queue))
        try:
            while True:
                # A pump that failed ends the stream with its error.
                item = await stream.queue.next(self._ping_interval)
                yield item if item is not None else pb.WorkItem(healthPing=pb.HealthPing())
        finally:
            stream.closed = True
            self._streams.discard(stream)
            for task in tasks:
                task.cancel()
            # The stream may be ending by cancellation: release its items in a task of
            # their own, which the cancellation does not reach.
            self._spawn(self._release(stream, tasks))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, stream: _Stream, tasks: list[asyncio.Task[None]]) -> None:
        """Hand back what the ended stream held. Items it never sent go back uncounted;
        activities its worker was given count as a delivery (it may have died running
        them), so one that kills its worker each time is given up after max_deliveries."""
        await asyncio.gather(*tasks, return_exceptions=True)
        unsent = set()
        while not stream.queue.empty():
            unsent.add(stream.queue.get_nowait().completionToken)
        released = 0
        delivered_activities = 0
        for token in list(stream.tokens):
            leased = self._leased.pop(token, None)
            stream.tokens.discard(token)
            if leased is None:
                continue
            released += 1
            if isinstance(leased, _LeasedEpisode | _LeasedActivity) and leased.in_flight:
                continue  # its commit is running: the call making it hands the item back
            if isinstance(leased, _LeasedActivity) and token not in unsent:
                delivered_activities += 1
                continue
            with contextlib.suppress(Exception):
                await self._give_back(leased)
        if delivered_activities:
            with contextlib.suppress(Exception):
                await self._store.break_leases(stream.owner)
        if stream.named:
            with contextlib.suppress(Exception):
                await self._store.remove_worker(stream.owner)
        if released:
            _LOG.info(
                "worker stream %s ended: %d unfinished item(s) handed back",
                stream.owner,
                released,
                extra={"event": "duratask.serve.stream_released", "items": released},
            )

    async def close(self) -> None:
        """Wait for the streams' releases (after the server stopped)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- leasing ---------------------------------------------------------------------------

    async def start_eagerly(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> bool:
        """Create an instance leased to a stream whose worker can run it now, and send it
        the first episode at once (eager start: no wake-up, fetch or lease commit). False,
        having created nothing, when the store cannot or no stream has room for it."""
        if not isinstance(self._store, SupportsEagerStart):
            return False
        event = message.event
        assert isinstance(event, h.ExecutionStarted)
        stream = next(
            (
                s
                for s in self._streams
                if not s.closed
                and s.orchestration_slots.free > 0
                and s.work_filter.runs_orchestration(event.name, event.version, event.task_queue)
            ),
            None,
        )
        if stream is None:
            return False
        # The store's write runs in a task of its own, after the stream's sender has taken
        # the episode sent ahead to gRPC.
        ahead = self._send_start_ahead(stream, message)
        if ahead is None:
            stream.orchestration_slots.take()  # held while the create runs
        try:
            item = await self._store.create_and_lease_instance(
                message, replaceable, stream.owner, self._lease, stream.work_filter
            )
        except BaseException:
            if ahead is not None:
                self._refuse_ahead(*ahead)
            raise
        finally:
            if ahead is None:
                stream.orchestration_slots.give()
        if item is not None and stream.closed:
            with contextlib.suppress(Exception):
                await self._store.abandon_orchestration_work_item(item)
            item = None
        if ahead is not None:
            token, episode = ahead
            if item is not None:
                source = EpisodeInput.of(item)
                if prepare(source, episode.now) == episode.plan:
                    episode.item, episode.source = item, source
                    assert episode.ahead is not None
                    episode.ahead.land(item)
                    return True
            # Nothing leased (the instance replaced another, or waits for a fetch), or not
            # the episode that was sent: that one is refused, the item runs as usual.
            self._refuse_ahead(token, episode)
        if item is not None:
            await self._dispatch_episode(stream, item)
        return True

    def _send_start_ahead(
        self, stream: _Stream, message: OrchestrationMessage
    ) -> tuple[str, _LeasedEpisode] | None:
        """Send a new instance's first episode to the stream's worker before the commit
        that creates and leases the instance (see :mod:`duratask.serve.ahead`): its
        token and episode, or None for an instance not due at once."""
        event = message.event
        assert isinstance(event, h.ExecutionStarted)
        if message.visible_at is not None or event.scheduled_start_time is not None:
            return None
        now = self._clock()
        source = first_input(message)
        planned = prepare(source, now)
        if not isinstance(planned, CodeRequest):
            return None
        episode = _LeasedEpisode(stream, None, source, now, ahead=Ahead(), plan=planned)
        return self._send_episode(stream, episode, planned), episode

    def _refuse_ahead(self, token: str, leased: _LeasedEpisode | _LeasedActivity) -> None:
        """The commit an item was sent ahead of failed or did not lease it: its completion
        is refused (if the worker sent it already, it waits on ``ahead``)."""
        assert leased.ahead is not None
        leased.ahead.fail()
        if self._leased.get(token) is leased:
            self._drop(token)

    async def _idle(self, kind: str, delay: float) -> None:
        if isinstance(self._store, SupportsWakeUps):
            await self._store.wait_for_notification(delay, kind=kind)
        else:
            await asyncio.sleep(delay)

    async def _lease_call(self, stream: _Stream, lock: Coroutine[Any, Any, _T]) -> _T:
        """The result of a lease call, which a stream that ends meanwhile does not lose: what
        it leased then is handed back."""
        call = asyncio.ensure_future(lock)
        try:
            result = await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._spawn(self._hand_back(done)))
            raise
        if stream.closed:
            await self._hand_back(call)
            raise asyncio.CancelledError
        return result

    async def _hand_back(self, call: asyncio.Future[Any]) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        leased = call.result()
        items = leased if isinstance(leased, list) else [leased]
        with contextlib.suppress(Exception):
            for item in items:
                if isinstance(item, OrchestrationWorkItem):
                    await self._store.abandon_orchestration_work_item(item)
                elif isinstance(item, ActivityWorkItem):
                    await self._store.abandon_activity_work_item(item)
                elif isinstance(item, EntityWorkItem):
                    await self._store.abandon_entity_work_item(item)

    async def _pump(self, stream: _Stream, kind: str) -> None:
        """Lease work of ``kind`` for the stream until it ends; a store error (a restart of
        the database, say) is logged and retried after a pause rather than ending the
        stream."""
        pumps = {
            "orchestration": self._orchestrations,
            "activity": self._activities,
            "entity": self._entities,
        }
        pump = pumps[kind]
        while not stream.closed:
            try:
                await pump(stream)
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOG.warning(
                    "leasing %s work for %s failed; retrying in 1 s",
                    kind,
                    stream.owner,
                    exc_info=True,
                    extra={"event": "duratask.serve.lease_error", "kind": kind},
                )
                await asyncio.sleep(1.0)

    async def _orchestrations(self, stream: _Stream) -> None:
        delay = 0.01
        while not stream.closed:
            await stream.orchestration_slots.wait()
            item = await self._lease_call(
                stream,
                self._store.lock_next_orchestration_work_item(
                    stream.owner, self._lease, work_filter=stream.work_filter
                ),
            )
            if item is None:
                await self._idle("orchestration", delay)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = 0.01
            await self._dispatch_episode(stream, item)

    async def _dispatch_episode(self, stream: _Stream, item: OrchestrationWorkItem) -> None:
        now = self._clock()
        source = EpisodeInput.of(item)
        planned: OrchestrationCommit | Defer | CodeRequest
        try:
            delivered = deliveries(item)
            if delivered > self._max_deliveries:
                planned = give_up(
                    source, now, poison_details(orchestration_work(item.instance_id), delivered)
                )
                _LOG.error(
                    "instance %r: its work was handed to SDK workers %d times without "
                    "completing; marking it FAILED",
                    item.instance_id,
                    delivered,
                    extra={
                        "event": "duratask.orchestration.poisoned",
                        "instance_id": item.instance_id,
                        "deliveries": delivered,
                    },
                )
            else:
                planned = prepare(source, now)
            if isinstance(planned, Defer):
                await self._store.abandon_orchestration_work_item(item, planned.retry_at)
                return
            if not isinstance(planned, CodeRequest):
                await self._store.commit_episode(item.fence(), planned)
                self._known.forget(item.instance_id)
                return
        except LeaseLostError:
            return
        except Exception:
            _LOG.exception(
                "cannot plan an episode of %r; handing it back",
                item.instance_id,
                extra={"event": "duratask.serve.episode_error", "instance_id": item.instance_id},
            )
            with contextlib.suppress(Exception):
                await self._store.abandon_orchestration_work_item(item, now + _ABANDON_BACKOFF)
            return
        self._send_episode(stream, _LeasedEpisode(stream, item, source, now), planned)

    def _send_episode(self, stream: _Stream, episode: _LeasedEpisode, planned: CodeRequest) -> str:
        token = self._hold(stream, episode)
        stream.orchestration_slots.take()
        request = pb.OrchestratorRequest(
            instanceId=planned.instance_id,
            executionId=text(planned.execution_id),
            pastEvents=self._known.to_pb(planned.instance_id, planned.past_events),
            newEvents=events_to_pb(planned.new_events),
        )
        stream.queue.put_nowait(pb.WorkItem(orchestratorRequest=request, completionToken=token))
        return token

    async def _activities(self, stream: _Stream) -> None:
        delay = 0.01
        while not stream.closed:
            free = await stream.activity_slots.wait()
            items = await self._lease_call(
                stream,
                self._store.lock_next_activity_work_items(
                    stream.owner, self._lease, max_items=free, work_filter=stream.work_filter
                ),
            )
            if not items:
                await self._idle("activity", delay)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = 0.01
            for item in items:
                if item.dequeue_count > self._max_deliveries:
                    await self._give_up_activity(item)
                    continue
                stream.activity_slots.take()
                self._send_activity(stream, item)

    async def _give_up_activity(self, item: ActivityWorkItem) -> None:
        """An activity handed out too often without a result: its task fails as poison."""
        req = item.request
        _LOG.error(
            "activity %r of %r was handed to SDK workers %d times without completing; "
            "failing its task",
            req.name,
            req.instance_id,
            item.dequeue_count,
            extra={
                "event": "duratask.activity.poisoned",
                "instance_id": req.instance_id,
                "deliveries": item.dequeue_count,
            },
        )
        failed = h.TaskFailed(
            timestamp=self._clock(),
            task_scheduled_id=req.task_id,
            failure_details=poison_details(f"activity {req.name!r}", item.dequeue_count),
        )
        message = OrchestrationMessage(req.instance_id, failed, req.execution_id)
        with contextlib.suppress(LeaseLostError):
            await self._store.complete_activity_work_item(item, message)

    def _send_activity(self, stream: _Stream, item: ActivityWorkItem) -> None:
        """Hand a leased activity to the stream's worker (its slot already taken)."""
        self._send_activity_request(
            stream, _LeasedActivity(stream, item.request, item), item.request
        )

    def _send_activity_request(
        self, stream: _Stream, leased: _LeasedActivity, req: ActivityRequest
    ) -> str:
        token = self._hold(stream, leased)
        request = pb.ActivityRequest(
            name=req.name,
            version=text(req.version),
            input=text(req.input),
            orchestrationInstance=pb.OrchestrationInstance(
                instanceId=req.instance_id, executionId=text(req.execution_id)
            ),
            taskId=req.task_id,
        )
        stream.queue.put_nowait(pb.WorkItem(activityRequest=request, completionToken=token))
        return token

    async def _entities(self, stream: _Stream) -> None:
        delay = 0.01
        while not stream.closed:
            await stream.entity_slots.wait()
            item = await self._lease_call(
                stream,
                self._store.lock_next_entity_work_item(
                    stream.owner, self._lease, work_filter=stream.work_filter
                ),
            )
            if item is None:
                await self._idle("entity", delay)
                delay = min(delay * 2, self._max_poll)
                continue
            delay = 0.01
            batch = plan_entity_batch(item, self._clock())
            if not batch.request.operations:
                # Only lock requests and releases: nothing for the worker to run.
                with contextlib.suppress(LeaseLostError):
                    await self._store.complete_entity_work_item(item, batch.commit(None))
                continue
            token = self._hold(stream, _LeasedEntity(stream, item, batch))
            stream.entity_slots.take()
            request = pb.EntityBatchRequest(
                instanceId=item.entity_id,
                entityState=text(batch.request.state),
                operations=[
                    pb.OperationRequest(
                        operation=op.operation, requestId=op.request_id, input=text(op.input)
                    )
                    for op in batch.request.operations
                ],
            )
            stream.queue.put_nowait(pb.WorkItem(entityRequest=request, completionToken=token))

    def _hold(self, stream: _Stream, leased: _Leased) -> str:
        token = uuid.uuid4().hex
        self._leased[token] = leased
        stream.tokens.add(token)
        return token

    def _drop(self, token: str) -> _Leased:
        leased = self._leased.pop(token, None)
        if leased is None:
            raise UnknownTokenError(
                f"no work item is held under completion token {token!r}: it was completed "
                "or abandoned already, or its lease was lost (the item goes to a worker again)"
            )
        leased.stream.tokens.discard(token)
        if isinstance(leased, _LeasedEpisode):
            leased.stream.orchestration_slots.give()
        elif isinstance(leased, _LeasedEntity):
            leased.stream.entity_slots.give()
        else:
            leased.stream.activity_slots.give()
        return leased

    async def _keep_alive(self, stream: _Stream) -> None:
        """Renew the stream's leases, and report the worker (when it said what it runs)."""
        interval = self._lease.total_seconds() / 3
        started = self._clock()
        while not stream.closed:
            try:
                await self._renew(stream, started)
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOG.warning(
                    "renewing the leases of %s failed; retrying",
                    stream.owner,
                    exc_info=True,
                    extra={"event": "duratask.serve.lease_error", "kind": "renewal"},
                )
            await asyncio.sleep(interval)

    async def _renew(self, stream: _Stream, started: datetime) -> None:
        if stream.named:
            await self._report(stream, started)
        for token in list(stream.tokens):
            leased = self._leased.get(token)
            if leased is None:
                continue
            try:
                if isinstance(leased, _LeasedActivity):
                    if leased.item is not None:  # else its commit is running
                        await self._store.renew_activity_work_item(leased.item, self._lease)
                elif isinstance(leased, _LeasedEntity):
                    await self._store.renew_entity_work_item(leased.item, self._lease)
                elif leased.item is not None:
                    await self._store.renew_orchestration_work_item(leased.item, self._lease)
                elif leased.finished is not None:
                    await self._store.renew_activity_work_item(leased.finished, self._lease)
            except LeaseLostError:
                with contextlib.suppress(UnknownTokenError):
                    self._drop(token)

    async def _report(self, stream: _Stream, started: datetime) -> None:
        wanted = stream.work_filter
        in_flight = {"orchestrations": 0, "activities": 0, "entities": 0}
        for token in stream.tokens:
            leased = self._leased.get(token)
            kind = (
                "orchestrations"
                if isinstance(leased, _LeasedEpisode)
                else "entities"
                if isinstance(leased, _LeasedEntity)
                else "activities"
            )
            in_flight[kind] += 1
        await self._store.heartbeat_worker(
            WorkerInfo(
                worker_id=stream.owner,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=started,
                heartbeat_at=self._clock(),
                orchestrations=wanted.orchestrations or frozenset(),
                activities=wanted.activities or frozenset(),
                task_queues=_SDK_QUEUES,
                in_flight=in_flight,
            )
        )

    # -- completions -----------------------------------------------------------------------

    async def complete_orchestration(self, response: pb.OrchestratorResponse) -> None:
        """Commit the episode the worker ran; :class:`LeaseLostError` if its lease was
        taken over (or the commit it was sent ahead of failed), :class:`UnknownTokenError`
        if it is not held here."""
        leased = self._drop(response.completionToken)
        if not isinstance(leased, _LeasedEpisode):
            raise UnknownTokenError(f"{response.completionToken!r} names no orchestration")
        await leased.leased_item()  # an episode sent ahead: once its lease is durable
        planned = finish(leased.source, leased.now, WorkerReply.of(response))
        if isinstance(planned, Defer):
            await self._give_back(leased, planned.retry_at)
            return
        if leased.finished is not None:
            planned = replace(planned, finished_activity=leased.finished)
        stream = leased.stream
        eager = 0 if stream.closed else self._eager_count(stream, planned)
        commit = planned
        ahead: list[tuple[str, _LeasedActivity]] = []
        if eager:
            # The worker that ran the episode has room for its first activities: lease them
            # to it in the commit, sparing a fetch round trip each, and send them now, ahead
            # of the commit (their completions wait until it is durable).
            commit = replace(planned, eager_activities=EagerLease(stream.owner, self._lease, eager))
            ahead = [self._send_activity_ahead(stream, a) for a in planned.activities[:eager]]
        try:
            leased_now = await self._store.commit_episode(leased.fence(), commit)
        except BaseException as exc:
            self._known.forget(leased.source.instance_id)
            for token, activity in ahead:
                self._refuse_ahead(token, activity)
            if isinstance(exc, InstanceBusyError | LeaseLostError):
                if leased.item is not None:
                    raise  # the lease was taken over: the completion is refused
                # The instance moved on meanwhile: the result goes the usual way.
                await self._store_result(leased)
                return
            if isinstance(exc, Exception):
                # As duratask's workers do with an episode that failed: it goes back, to
                # run again after a pause (given up after max_deliveries if it keeps failing).
                with contextlib.suppress(Exception):
                    await self._give_back(leased, self._clock() + _ABANDON_BACKOFF)
            raise
        source = leased.source
        self._known.committed(source.state, source.history, source.history_length, commit)
        self._land_activities(stream, ahead, leased_now)

    def _send_activity_ahead(
        self, stream: _Stream, request: ActivityRequest
    ) -> tuple[str, _LeasedActivity]:
        """Send an activity the commit being made will lease to the stream (its slot taken
        now), ahead of that commit."""
        stream.activity_slots.take()
        leased = _LeasedActivity(stream, request, None, Ahead())
        return self._send_activity_request(stream, leased, request), leased

    def _land_activities(
        self,
        stream: _Stream,
        ahead: list[tuple[str, _LeasedActivity]],
        leased_now: list[ActivityWorkItem],
    ) -> None:
        """The commit is durable: each activity sent ahead gets the work item the commit
        leased for it (one it did not lease is refused); a stream that ended meanwhile
        hands them all back."""
        if stream.closed:
            for token, activity in ahead:
                self._refuse_ahead(token, activity)
            for item in leased_now:
                self._spawn(self._abandon_activity(item))
            return
        by_task = {item.request.task_id: item for item in leased_now}
        for token, activity in ahead:
            found = by_task.pop(activity.request.task_id, None)
            if found is None:
                self._refuse_ahead(token, activity)
                continue
            activity.item = found
            assert activity.ahead is not None
            activity.ahead.land(found)
        for item in by_task.values():  # leased but not sent ahead (never, as planned)
            stream.activity_slots.take()
            self._send_activity(stream, item)

    async def _abandon_activity(self, item: ActivityWorkItem) -> None:
        with contextlib.suppress(Exception):
            await self._store.abandon_activity_work_item(item)

    @staticmethod
    def _eager_count(stream: _Stream, commit: OrchestrationCommit) -> int:
        """How many of the commit's first activities the stream's worker can take now."""
        runs = stream.work_filter.activities
        count = 0
        for activity in commit.activities:
            if (
                count >= stream.activity_slots.free
                or (runs is not None and activity.name not in runs)
                or not stream.work_filter.serves_queue(activity.task_queue)
            ):
                break
            count += 1
        return count

    async def complete_activity(self, response: pb.ActivityResponse) -> None:
        """Record the activity's result; errors as for :meth:`complete_orchestration`."""
        leased = self._drop(response.completionToken)
        if not isinstance(leased, _LeasedActivity):
            raise UnknownTokenError(f"{response.completionToken!r} names no activity work item")
        item = await leased.leased_item()  # one sent ahead: once its lease is durable
        req = item.request
        event: h.HistoryEvent
        if response.HasField("failureDetails"):
            event = h.TaskFailed(
                timestamp=self._clock(),
                task_scheduled_id=req.task_id,
                failure_details=failure_from_pb(response.failureDetails),
            )
        else:
            event = h.TaskCompleted(
                timestamp=self._clock(),
                task_scheduled_id=req.task_id,
                result=optional_text(response, "result"),
            )
        message = OrchestrationMessage(req.instance_id, event, req.execution_id)
        try:
            straight = await self._straight_through(leased.stream, item, message)
        except Exception:
            _LOG.warning(
                "cannot run the next episode of %r on its activity's result at once; "
                "storing the result",
                req.instance_id,
                exc_info=True,
                extra={"event": "duratask.serve.lease_error", "kind": "episode"},
            )
            straight = False
        if not straight:
            await self._store.complete_activity_work_item(item, message)

    async def _straight_through(
        self, stream: _Stream, item: ActivityWorkItem, message: OrchestrationMessage
    ) -> bool:
        """Send the instance's next episode to the activity's worker at once, on the result
        it just gave (not stored: the episode's commit consumes it, fenced on the instance
        being unchanged), as duratask's workers do; one commit per step instead of two.
        False when that cannot be (the worker has no room or does not run the
        orchestration, the instance moved on)."""
        req = item.request
        if stream.closed or stream.orchestration_slots.free <= 0:
            return False
        known = self._known.get(req.instance_id)
        state: OrchestrationState | None
        history: list[h.HistoryEvent] | None = None
        if known is not None and known.state.execution_id == req.execution_id:
            state, history = known.state, known.history
        else:
            state = await self._store.get_instance(req.instance_id)
        if (
            state is None
            or state.execution_id != req.execution_id
            or state.runtime_status is not OrchestrationStatus.RUNNING
        ):
            return False
        if not stream.work_filter.runs_orchestration(state.name, state.version, state.task_queue):
            return False
        if history is None:  # read only once the instance can go on here
            history = await self._store.get_history(req.instance_id)
        now = self._clock()
        source = EpisodeInput(req.instance_id, state, history, len(history), (), message)
        planned = prepare(source, now)
        if not isinstance(planned, CodeRequest) or stream.closed:
            return False
        if stream.orchestration_slots.free <= 0:
            return False
        episode = _LeasedEpisode(stream, None, source, now, item, message)
        self._send_episode(stream, episode, planned)
        return True

    async def complete_entity(self, result: pb.EntityBatchResult) -> None:
        """Commit the batch the worker ran under the entity's lease: :class:`LeaseLostError`
        if it was taken over, :class:`ProtocolError` (the entity handed back) if the result
        does not fit the batch, :class:`UnknownTokenError` if it is not held here."""
        leased = self._drop(result.completionToken)
        if not isinstance(leased, _LeasedEntity):
            raise UnknownTokenError(f"{result.completionToken!r} names no entity work item")
        try:
            outcome = batch_result_from_pb(result, len(leased.batch.request.operations))
        except ProtocolError:
            await self._give_back(leased, self._clock() + _ABANDON_BACKOFF)
            raise
        await self._store.complete_entity_work_item(leased.item, leased.batch.commit(outcome))

    async def abandon(self, token: str) -> None:
        """Hand an item back unfinished (the worker could not run it now)."""
        await self._give_back(self._drop(token), retry_at=self._clock() + _ABANDON_BACKOFF)

    async def _give_back(self, leased: _Leased, retry_at: datetime | None = None) -> None:
        """Release an item unfinished; a straight-through episode's activity result is
        stored, so that it is not lost."""
        if isinstance(leased, _LeasedActivity):
            await self._store.abandon_activity_work_item(await leased.leased_item())
        elif isinstance(leased, _LeasedEntity):
            await self._store.abandon_entity_work_item(leased.item, retry_at)
        elif leased.finished is not None:
            await self._store_result(leased)
        else:
            item = await leased.leased_item()
            assert item is not None
            await self._store.abandon_orchestration_work_item(item, retry_at)

    async def _store_result(self, leased: _LeasedEpisode) -> None:
        assert leased.finished is not None and leased.result is not None
        with contextlib.suppress(LeaseLostError):  # it runs again elsewhere
            await self._store.complete_activity_work_item(leased.finished, leased.result)


__all__ = ["UnknownTokenError", "WorkItemStreams", "owner_prefix", "work_filter"]
