"""Clients of a task hub: start, query, signal, wait for and purge orchestration instances.

:class:`AsyncTaskHubClient` does the work; :class:`TaskHubClient` offers the same methods to
synchronous code by running the async client on a private event loop thread.

Clients talk to the store only; they need no running worker. Messages they send (events,
terminate, suspend, resume) are acted on when a worker next processes the instance.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from duratask import _local_workers as local_workers
from duratask._engine import failed_children, locks_released_by_failure
from duratask._portal import Portal
from duratask._registry import CONTROL_CHARACTER, check_name, function_name
from duratask._rewind import rewind_message
from duratask._schedule_client import UNSET, ScheduleOperations
from duratask._waiting import connected, why_waiting
from duratask.backends import open_store
from duratask.backends._paging import resume_after
from duratask.backends.base import (
    ENTITY_SIGNAL,
    TERMINAL_STATUSES,
    BacklogEntry,
    CleanEntityStorageResult,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    ExecutionRecord,
    InstanceQuery,
    InstanceSort,
    LeaseTakeover,
    OrchestrationMessage,
    OrchestrationServiceClient,
    PurgeFilter,
    QueryPage,
    SupportsWakeUps,
    WorkerInfo,
)
from duratask.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter, PayloadCodec, check_text
from duratask.entities._id import EntityInstanceId
from duratask.errors import (
    InvalidInstanceIdError,
    InvalidOperationError,
    OrchestrationFinishedError,
    OrchestrationNotFoundError,
    OrchestrationWaitTimeoutError,
)
from duratask.history import (
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
)
from duratask.schedules import (
    CatchUp,
    Overlap,
    ScheduleDescription,
    ScheduleInfo,
    ScheduleSpec,
)
from duratask.state import DEFAULT_TASK_QUEUE, OrchestrationState, OrchestrationStatus
from duratask.tracing._client import traced_start

__all__ = ["AsyncTaskHubClient", "ReuseIdPolicy", "TaskHubClient"]

MAX_INSTANCE_ID_LENGTH = 256
MAX_QUERY_PAGE_SIZE = 1000
_POLL_INITIAL = 0.005
# How many instances of a failed tree a rewind reads, at most, before it is sent.
_REWIND_TREE_LIMIT = 1000
_POLL_FACTOR = 1.5
_POLL_MAX = 0.2


@dataclass(frozen=True, slots=True)
class ReuseIdPolicy:
    """Which statuses of an existing instance let a new one with the same id replace it.

    Replacing deletes the old instance's history, pending messages and activities. The default
    replaces finished instances (COMPLETED, FAILED, TERMINATED); any other existing instance
    makes scheduling fail with :class:`~duratask.errors.OrchestrationAlreadyExistsError`.

    Attributes:
        replaceable_statuses: The statuses in which an existing instance is replaced.
    """

    replaceable_statuses: frozenset[OrchestrationStatus] = TERMINAL_STATUSES

    @classmethod
    def replace_terminal(cls) -> ReuseIdPolicy:
        """The default: replace a finished instance, refuse a live one."""
        return cls(TERMINAL_STATUSES)

    @classmethod
    def error_if_exists(cls) -> ReuseIdPolicy:
        """Never replace: any existing instance with the id is an error."""
        return cls(frozenset())


_DEFAULT_REUSE_POLICY = ReuseIdPolicy()


# -- request building (pure; shared by both clients) ---------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def validate_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if usable, else raise :class:`InvalidInstanceIdError`."""
    if not isinstance(instance_id, str):
        raise InvalidInstanceIdError(
            f"instance id must be a str, not {type(instance_id).__qualname__}"
        )
    if not instance_id:
        raise InvalidInstanceIdError("instance id must not be empty")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise InvalidInstanceIdError(
            f"instance id is {len(instance_id)} characters long, over the limit of "
            f"{MAX_INSTANCE_ID_LENGTH}: {instance_id[:40]!r}..."
        )
    if (control := CONTROL_CHARACTER.search(instance_id)) is not None:
        raise InvalidInstanceIdError(
            f"instance id {instance_id!r} contains the control character {control.group()!r} "
            f"at position {control.start()}"
        )
    try:
        instance_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInstanceIdError(
            f"instance id {instance_id!r} is not valid Unicode text (a lone surrogate at "
            f"position {exc.start})"
        ) from None
    return instance_id


def _matchable(text: str | None, what: str) -> bool:
    """Whether a filter value could match a stored name or id (False: it matches nothing)."""
    if text is None:
        return True
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__qualname__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _to_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value!r}")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00, past the last UTC datetime
        raise ValueError(
            f"{what} {value.isoformat()} is out of range: in UTC it falls outside years 1-9999"
        ) from None


def _checked_token(token: str | None) -> str | None:
    if token is not None and not isinstance(token, str):
        raise TypeError(f"continuation_token must be a str, not {type(token).__qualname__}")
    return token


def _aware_utc(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _to_utc(value, what)


def _timeout_seconds(timeout: float | timedelta) -> float:
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds >= 0:  # also refuses NaN, which would make a wait never end
        raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
    return seconds


def _statuses(statuses: Iterable[OrchestrationStatus] | None) -> frozenset[OrchestrationStatus]:
    if statuses is None:
        return frozenset()
    result = frozenset(statuses)
    for status in result:
        if not isinstance(status, OrchestrationStatus):
            raise TypeError(f"expected OrchestrationStatus values, got {status!r}")
    return result


def build_start_message(
    codec: PayloadCodec,
    now: datetime,
    orchestration: Callable[..., Any] | str,
    *,
    input: Any = None,
    instance_id: str | None = None,
    start_at: datetime | None = None,
    version: str | None = None,
    tags: dict[str, str] | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
) -> OrchestrationMessage:
    """Validate a start request and build its :class:`ExecutionStarted` message."""
    name = check_name(function_name(orchestration), "orchestration")
    check_name(task_queue, "task queue")
    instance_id = validate_instance_id(uuid.uuid4().hex if instance_id is None else instance_id)
    encoded = codec.encode(input, f"input of orchestration {name!r}")
    scheduled = _aware_utc(start_at, "start_at")
    check_text(version, f"version of orchestration {name!r}")
    if tags is not None:
        for key, value in tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"tags must map str to str, got {key!r}: {value!r}")
            check_text(key, "a tag name")
            check_text(value, f"tag {key!r}")
        tags = dict(tags)
    event = ExecutionStarted(
        timestamp=now,
        name=name,
        version=version,
        input=encoded,
        instance_id=instance_id,
        execution_id=uuid.uuid4().hex,
        scheduled_start_time=scheduled,
        tags=tags,
        task_queue=task_queue,
    )
    return OrchestrationMessage(instance_id, event)


def build_query(
    *,
    statuses: Iterable[OrchestrationStatus] | None,
    created_from: datetime | None,
    created_to: datetime | None,
    name: str | None,
    instance_id_prefix: str | None,
    page_size: int,
    continuation_token: str | None,
    parent_instance_id: str | None = None,
    sort: InstanceSort | str = InstanceSort.CREATED,
    descending: bool = False,
    top_level_only: bool = False,
    custom_status_contains: str | None = None,
) -> InstanceQuery:
    """Validate query arguments and build the store query."""
    if not isinstance(page_size, int) or isinstance(page_size, bool):
        raise TypeError(f"page_size must be an int, not {type(page_size).__qualname__}")
    if not 1 <= page_size <= MAX_QUERY_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_QUERY_PAGE_SIZE}, got {page_size}")
    query = InstanceQuery(
        statuses=_statuses(statuses) if statuses is not None else None,
        created_from=_aware_utc(created_from, "created_from"),
        created_to=_aware_utc(created_to, "created_to"),
        name=name,
        instance_id_prefix=instance_id_prefix,
        parent_instance_id=parent_instance_id,
        page_size=page_size,
        continuation_token=_checked_token(continuation_token),
        sort=_sort(sort),
        descending=bool(descending),
        top_level_only=bool(top_level_only),
        custom_status_contains=custom_status_contains or None,
    )
    resume_after(query)  # a malformed token, or one of another order, is refused here
    return query


def _sort(sort: InstanceSort | str) -> InstanceSort:
    try:
        return InstanceSort(sort)
    except ValueError:
        known = ", ".join(s.value for s in InstanceSort)
        raise ValueError(f"unknown sort {sort!r}: use one of {known}") from None


def build_purge_filter(
    *,
    created_before: datetime | None,
    created_from: datetime | None,
    statuses: Iterable[OrchestrationStatus] | None,
    completed_before: datetime | None = None,
) -> PurgeFilter:
    """Validate bulk purge arguments (terminal statuses only) and build the store filter."""
    wanted = _statuses(statuses) if statuses is not None else None
    if wanted is not None:
        live = sorted(s.value for s in wanted - TERMINAL_STATUSES)
        if live:
            raise ValueError(
                f"only finished instances can be purged; statuses {', '.join(live)} "
                "are not terminal (use COMPLETED, FAILED or TERMINATED)"
            )
    return PurgeFilter(
        created_before=_aware_utc(created_before, "created_before"),
        created_from=_aware_utc(created_from, "created_from"),
        statuses=wanted,
        completed_before=_aware_utc(completed_before, "completed_before"),
    )


def _is_started(status: OrchestrationStatus) -> bool:
    return status is not OrchestrationStatus.PENDING


def _is_terminal(status: OrchestrationStatus) -> bool:
    return status.is_terminal


# -- the async client --------------------------------------------------------------------


class AsyncTaskHubClient:
    """Manage orchestration instances in a task hub from asyncio code.

    ``store`` is a store URL (see :func:`duratask.backends.open_store`) or a store object. The
    store is opened on first use. :meth:`close` closes a store the client built from a URL; a
    store object passed in stays open for its owner to close.

    Returned :class:`OrchestrationState` objects decode ``input``, ``output`` and
    ``custom_status`` with ``data_converter``. All datetimes are timezone-aware UTC.
    """

    def __init__(
        self,
        store: str | OrchestrationServiceClient,
        *,
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = open_store(store)
        self._owns_store = isinstance(store, str)
        self._codec = PayloadCodec(data_converter, max_payload_bytes)
        self._clock = clock or _utc_now
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._closed = False
        self._schedules = ScheduleOperations(self._ready, self._codec, self._now)
        self._hub_key: tuple[str, ...] | None = None  # the store's hub, once asked

    @property
    def store(self) -> OrchestrationServiceClient:
        """The store this client talks to."""
        return self._store

    @property
    def data_converter(self) -> DataConverter:
        """The converter used for payloads."""
        return self._codec.converter

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the client (and the store, if the client built it). Idempotent."""
        async with self._open_lock:
            if self._closed:
                return
            self._closed = True
            if self._opened and self._owns_store:
                await self._store.close()

    async def _ready(self) -> OrchestrationServiceClient:
        if self._closed:
            raise RuntimeError("the task hub client is closed")
        if not self._opened:
            async with self._open_lock:
                if self._closed:
                    raise RuntimeError("the task hub client is closed")
                if not self._opened:
                    await self._store.open()
                    self._opened = True
        return self._store

    def _now(self) -> datetime:
        return _to_utc(self._clock(), "the client clock's time")

    def _attach(self, state: OrchestrationState) -> OrchestrationState:
        return dataclasses.replace(state, converter=self._codec.converter)

    async def _require(
        self, store: OrchestrationServiceClient, instance_id: str
    ) -> OrchestrationState:
        validate_instance_id(instance_id)
        state = await store.get_instance(instance_id)
        if state is None:
            raise OrchestrationNotFoundError(instance_id)
        return state

    async def _send(
        self, store: OrchestrationServiceClient, instance_id: str, event: HistoryEvent
    ) -> None:
        validate_instance_id(instance_id)
        if not await store.send_message(OrchestrationMessage(instance_id, event)):
            raise OrchestrationNotFoundError(instance_id)

    async def _signal(self, instance_id: str, event: HistoryEvent, action: str) -> None:
        """Send a signal to a live instance; refuse it for one that has finished."""
        store = await self._ready()
        state = await self._require(store, instance_id)
        if state.runtime_status.is_terminal:
            raise OrchestrationFinishedError(instance_id, state.runtime_status, action)
        await self._send(store, instance_id, event)

    # -- starting ----------------------------------------------------------------------

    async def schedule_new_orchestration(
        self,
        orchestration: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        version: str | None = None,
        reuse_id_policy: ReuseIdPolicy | None = None,
        tags: dict[str, str] | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> str:
        """Create an instance (PENDING until a worker picks it up) and return its id.

        ``instance_id`` defaults to a random hex id. ``start_at`` (timezone-aware) delays the
        first run. The input is serialised before anything is stored, so an invalid or
        oversized input stores nothing. An existing instance with the id is replaced only if
        ``reuse_id_policy`` allows it; otherwise
        :class:`~duratask.errors.OrchestrationAlreadyExistsError` is raised.

        The instance runs on ``task_queue``: only workers serving that queue (see
        ``TaskHubWorker(task_queues=...)``) lease it, and its activities and
        sub-orchestrations go to it unless their call names another queue.
        """
        message = build_start_message(
            self._codec,
            self._now(),
            orchestration,
            input=input,
            instance_id=instance_id,
            start_at=start_at,
            version=version,
            tags=tags,
            task_queue=task_queue,
        )
        policy = reuse_id_policy or _DEFAULT_REUSE_POLICY
        store = await self._ready()
        with traced_start(message) as message:
            await self._create(store, message, policy.replaceable_statuses)
        return message.instance_id

    async def _create(
        self,
        store: OrchestrationServiceClient,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
    ) -> None:
        """Create an instance: through a worker of this process on the same hub when it can
        run it at once (eager start: leased to it as it is created), else through the store."""
        if local_workers.any_running():
            if self._hub_key is None:
                self._hub_key = store.describe().hub
            if await local_workers.start_locally(self._hub_key, message, replaceable):
                return
        await store.create_instance(message, replaceable=replaceable)

    # -- reading -----------------------------------------------------------------------

    async def get_orchestration_state(self, instance_id: str) -> OrchestrationState | None:
        """The instance's current state, or None if there is no such instance."""
        validate_instance_id(instance_id)
        store = await self._ready()
        state = await store.get_instance(instance_id)
        return None if state is None else self._attach(state)

    async def get_orchestration_history(self, instance_id: str) -> list[HistoryEvent]:
        """The history events of the instance's current execution."""
        store = await self._ready()
        await self._require(store, instance_id)
        return await store.get_history(instance_id)

    async def get_orchestration_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The instance's earlier executions, oldest first: one compact record (ids, times,
        how it ended, its input and output cut short) per execution whose history was
        dropped when the instance continued as new or, finished, was started again. The
        current execution is not among them: its history is
        :meth:`get_orchestration_history`, its round ``len(records) + 1``. Raises
        :class:`~duratask.errors.OrchestrationNotFoundError` for an unknown instance."""
        store = await self._ready()
        await self._require(store, instance_id)
        return await store.list_executions(instance_id)

    async def get_lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """When the instance lost its worker: each lease that ran out without being released
        (the worker crashed, hung or lost the store) or was broken because its worker was
        known gone, oldest first, with when it ran out and when another worker took over.
        Raises :class:`~duratask.errors.OrchestrationNotFoundError` for an unknown instance."""
        store = await self._ready()
        await self._require(store, instance_id)
        return await store.lease_takeovers(instance_id)

    async def query_orchestrations(
        self,
        *,
        statuses: Iterable[OrchestrationStatus] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        name: str | None = None,
        instance_id_prefix: str | None = None,
        page_size: int = 100,
        continuation_token: str | None = None,
        parent_instance_id: str | None = None,
        sort: InstanceSort | str = InstanceSort.CREATED,
        descending: bool = False,
        top_level_only: bool = False,
        custom_status_contains: str | None = None,
    ) -> QueryPage:
        """One page of instances matching every given filter, oldest first by default.

        Pass the returned ``continuation_token`` back (with the same sort and direction) to
        get the next page; it is None on the last page. ``page_size`` is 1 to 1000.
        ``parent_instance_id`` selects the sub-orchestrations an instance started;
        ``top_level_only`` leaves sub-orchestrations out. ``sort`` orders by ``created``,
        ``last_updated``, ``status`` or ``name`` (ties by instance id), ``descending`` largest
        or newest first. ``custom_status_contains`` matches text in the custom status's JSON.
        """
        matchable = _matchable(name, "name") and _matchable(instance_id_prefix, "prefix")
        query = build_query(
            statuses=statuses,
            created_from=created_from,
            created_to=created_to,
            name=name,
            instance_id_prefix=instance_id_prefix,
            page_size=page_size,
            continuation_token=continuation_token,
            parent_instance_id=parent_instance_id,
            sort=sort,
            descending=descending,
            top_level_only=top_level_only,
            custom_status_contains=custom_status_contains,
        )
        matchable = matchable and _matchable(custom_status_contains, "custom status text")
        if not matchable:  # e.g. a NUL byte: no stored instance can match it
            return QueryPage()
        store = await self._ready()
        page = await store.query_instances(query)
        return QueryPage(
            states=[self._attach(s) for s in page.states],
            continuation_token=page.continuation_token,
        )

    async def count_orchestrations(
        self,
        *,
        name: str | None = None,
        instance_id_prefix: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        top_level_only: bool = False,
        custom_status_contains: str | None = None,
    ) -> dict[OrchestrationStatus, int]:
        """How many instances matching the filters are in each status (every status a key)."""
        matchable = (
            _matchable(name, "name")
            and _matchable(instance_id_prefix, "prefix")
            and _matchable(custom_status_contains, "custom status text")
        )
        query = build_query(
            statuses=None,
            created_from=created_from,
            created_to=created_to,
            name=name,
            instance_id_prefix=instance_id_prefix,
            page_size=1,
            continuation_token=None,
            top_level_only=top_level_only,
            custom_status_contains=custom_status_contains,
        )
        if not matchable:
            return dict.fromkeys(OrchestrationStatus, 0)
        store = await self._ready()
        counts = await store.count_instances(query)
        return {status: counts.get(status, 0) for status in OrchestrationStatus}

    async def list_workers(self, *, connected_only: bool = False) -> list[WorkerInfo]:
        """The workers that reported themselves to the hub, most recently heard from first;
        with ``connected_only``, only those heard from in the last 30 seconds (a running
        worker reports every 5)."""
        store = await self._ready()
        workers = await store.list_workers()
        return connected(workers, self._now()) if connected_only else workers

    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting in the hub, by orchestration and activity name: ready now,
        due later (timers, retries, rests), and held by a worker."""
        store = await self._ready()
        return await store.backlog()

    async def why_waiting(self, state: OrchestrationState) -> str | None:
        """Why the instance cannot move on, if no connected worker serves the task queue of
        what it waits for, or has registered it: its orchestration (name and version) or an
        activity it awaits. None when some worker can run it (or it has finished)."""
        if state.runtime_status not in (OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING):
            return None
        store = await self._ready()
        workers = connected(await store.list_workers(), self._now())
        history = None
        if state.runtime_status is OrchestrationStatus.RUNNING:
            history = await store.get_history(state.instance_id)
        return why_waiting(state, history, workers)

    # -- waiting -----------------------------------------------------------------------

    async def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """Wait until the instance has left PENDING and return its state.

        Raises :class:`~duratask.errors.OrchestrationWaitTimeoutError` after ``timeout``
        seconds and :class:`~duratask.errors.OrchestrationNotFoundError` if the instance does
        not exist (or is purged meanwhile).
        """
        return await self._wait(instance_id, timeout, _is_started, "start")

    async def wait_for_orchestration_completion(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """Wait until the instance is COMPLETED, FAILED or TERMINATED and return its state.

        CONTINUED_AS_NEW is not an end: the wait goes on through the new execution. Raises as
        :meth:`wait_for_orchestration_start` does.
        """
        return await self._wait(instance_id, timeout, _is_terminal, "complete")

    async def _wait(
        self,
        instance_id: str,
        timeout: float | timedelta,
        done: Callable[[OrchestrationStatus], bool],
        condition: str,
    ) -> OrchestrationState:
        validate_instance_id(instance_id)
        seconds = _timeout_seconds(timeout)
        store = await self._ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        delay = _POLL_INITIAL
        # A store that pushes changes wakes the wait at once; polling remains the fallback
        # (for changes made by other processes on a store that cannot push them).
        watch = store.watch_instance(instance_id) if isinstance(store, SupportsWakeUps) else None
        async with watch or contextlib.nullcontext():
            while True:
                state = await self._require(store, instance_id)
                if done(state.runtime_status):
                    return self._attach(state)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise OrchestrationWaitTimeoutError(
                        f"timed out after {seconds:g}s waiting for orchestration "
                        f"{instance_id!r} to {condition} "
                        f"(last status {state.runtime_status.value})"
                    )
                if watch is not None:
                    await watch.changed(min(delay, remaining))
                else:
                    await asyncio.sleep(min(delay, remaining))
                delay = min(delay * _POLL_FACTOR, _POLL_MAX)

    # -- entities -----------------------------------------------------------------------
    async def signal_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        signal_time: datetime | None = None,
        request_id: str | None = None,
    ) -> None:
        """Send ``operation`` with ``input`` to an entity, one-way; with ``signal_time``
        (aware), it runs no earlier than then. The entity need not exist yet.

        ``request_id`` (up to 200 characters) makes a retried send safe: a signal sent again
        with the same id is applied once, as long as the entity has not applied 256 other
        messages in between (it remembers the ids of its most recent ones). Without one,
        each send is a new signal."""
        target = str(EntityInstanceId.of(entity_id))
        if not isinstance(operation, str) or not operation:
            raise ValueError("operation must be a non-empty string")
        check_text(operation, "operation name")
        if request_id is not None:
            if not isinstance(request_id, str) or not 0 < len(request_id) <= 200:
                raise ValueError("request_id must be a string of 1 to 200 characters")
            check_text(request_id, "request id")
        if signal_time is not None:
            signal_time = _to_utc(signal_time, "signal_time")
        encoded = self._codec.encode(input, f"input of operation {operation!r} of {target!r}")
        store = await self._ready()
        await store.send_entity_message(
            EntityMessage(
                entity_id=target,
                kind=ENTITY_SIGNAL,
                request_id=request_id or uuid.uuid4().hex,
                operation=operation,
                input=encoded,
                visible_at=signal_time,
            )
        )

    async def get_entity(
        self, entity_id: EntityInstanceId | str, *, include_state: bool = True
    ) -> EntityMetadata | None:
        """An entity's state and metadata, or None if it has no state (and no lock holder)."""
        target = str(EntityInstanceId.of(entity_id))
        store = await self._ready()
        found = await store.get_entity(target, include_state)
        return None if found is None else self._attach_entity(found)

    async def query_entities(
        self,
        *,
        name: str | None = None,
        entity_id_prefix: str | None = None,
        last_modified_from: datetime | None = None,
        last_modified_to: datetime | None = None,
        include_state: bool = True,
        page_size: int = 100,
        continuation_token: str | None = None,
    ) -> EntityQueryPage:
        """One page of entities with a state (or a lock holder), by id. ``name`` matches
        the entity name (any case); ``last_modified_to`` is exclusive."""
        query = EntityQuery(
            name=name.lower() if name is not None else None,
            entity_id_prefix=entity_id_prefix,
            last_modified_from=_to_utc_or_none(last_modified_from, "last_modified_from"),
            last_modified_to=_to_utc_or_none(last_modified_to, "last_modified_to"),
            include_state=include_state,
            page_size=page_size,
            continuation_token=continuation_token,
        )
        store = await self._ready()
        page = await store.query_entities(query)
        return EntityQueryPage(
            [self._attach_entity(e) for e in page.entities], page.continuation_token
        )

    async def clean_entity_storage(
        self, *, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Release locks held by orchestrations that no longer exist or have ended, and
        delete entities left with no state, no lock and no messages."""
        store = await self._ready()
        return await store.clean_entity_storage(remove_empty_entities, release_orphaned_locks)

    def _attach_entity(self, entity: EntityMetadata) -> EntityMetadata:
        return dataclasses.replace(entity, converter=self._codec.converter)

    # -- signalling --------------------------------------------------------------------

    async def raise_orchestration_event(
        self, instance_id: str, name: str, data: Any = None
    ) -> None:
        """Send the external event ``name`` with ``data`` to the instance.

        Raises :class:`~duratask.errors.OrchestrationFinishedError` (nothing is sent) if the
        instance has already finished, and
        :class:`~duratask.errors.OrchestrationNotFoundError` if there is no such instance.
        An event that reaches the instance as it finishes is dropped with the rest of its
        unprocessed messages.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("event name must be a non-empty string")
        check_text(name, "event name")
        encoded = self._codec.encode(data, f"data of event {name!r} for {instance_id!r}")
        event = EventRaised(timestamp=self._now(), name=name, input=encoded)
        await self._signal(instance_id, event, f"raise event {name!r} on")

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, recursive: bool = True
    ) -> None:
        """Ask the instance to end as TERMINATED with ``output``.

        With ``recursive`` its running sub-orchestrations are terminated too. Raises
        :class:`~duratask.errors.OrchestrationFinishedError` if the instance has already
        finished (its status and output stay as they are).
        """
        encoded = self._codec.encode(output, f"output of terminated orchestration {instance_id!r}")
        event = ExecutionTerminated(timestamp=self._now(), input=encoded, recurse=recursive)
        await self._signal(instance_id, event, "terminate")

    async def suspend_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """Ask the instance to pause: it stays SUSPENDED, buffering what arrives, until resumed.

        Raises :class:`~duratask.errors.OrchestrationFinishedError` if the instance has
        already finished.
        """
        check_text(reason, "reason of the suspension")
        event = ExecutionSuspended(timestamp=self._now(), reason=reason)
        await self._signal(instance_id, event, "suspend")

    async def resume_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """Resume a suspended instance. Raises
        :class:`~duratask.errors.OrchestrationFinishedError` if the instance has already
        finished."""
        check_text(reason, "reason of the resumption")
        event = ExecutionResumed(timestamp=self._now(), reason=reason)
        await self._signal(instance_id, event, "resume")

    # -- recovering --------------------------------------------------------------------

    async def rewind_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """Run a FAILED instance again from the step that failed, keeping completed work.

        The failure that ended it is forgotten: the activities it still waits for are run
        again and failed sub-orchestrations are rewound too. Raises
        :class:`~duratask.errors.InvalidOperationError` unless the instance is FAILED, and
        when it (or a failed sub-orchestration it would rewind) failed inside a critical
        section: the failure let the section's locks go, so restart it instead.
        """
        check_text(reason, "reason of the rewind")
        store = await self._ready()
        status = (await self._require(store, instance_id)).runtime_status
        if status is not OrchestrationStatus.FAILED:
            raise InvalidOperationError(
                f"cannot rewind orchestration {instance_id!r}: it is {status.value}, and only "
                "FAILED instances can be rewound"
            )
        await self._refuse_rewind_inside_sections(store, instance_id)
        if not await store.send_message(rewind_message(instance_id, reason, self._now())):
            raise OrchestrationNotFoundError(instance_id)

    async def _refuse_rewind_inside_sections(
        self, store: OrchestrationServiceClient, instance_id: str
    ) -> None:
        """A rewind runs the code on from inside the critical section it failed in, but the
        failure let the section's locks go: refuse it (and so for the failed
        sub-orchestrations a rewind would rewind too)."""
        seen: set[str] = set()
        todo = [instance_id]
        while todo and len(seen) < _REWIND_TREE_LIMIT:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            history = await store.get_history(current)
            released = locks_released_by_failure(history)
            if released:
                which = "it" if current == instance_id else f"its sub-orchestration {current!r}"
                raise InvalidOperationError(
                    f"cannot rewind orchestration {instance_id!r}: {which} failed inside a "
                    f"critical section, and its locks on {', '.join(released)} were released "
                    "when it failed, so its code cannot run on inside that section; restart "
                    "the instance instead (restart_orchestration)"
                )
            todo.extend(failed_children(history))

    async def restart_orchestration(
        self, instance_id: str, *, new_instance_id: bool = False
    ) -> str:
        """Start the instance again from its original input; return the id started.

        With ``new_instance_id`` a new instance (random id) is started and the old one is
        left as it is; otherwise the finished instance is replaced, and restarting one that
        is still running raises :class:`~duratask.errors.InvalidOperationError`.
        """
        store = await self._ready()
        state = await self._require(store, instance_id)
        if not new_instance_id and not state.runtime_status.is_terminal:
            raise InvalidOperationError(
                f"cannot restart orchestration {instance_id!r} under the same id: it is "
                f"{state.runtime_status.value} (terminate it first, or restart it with a new id)"
            )
        history = await store.get_history(instance_id)
        original = next((e for e in history if isinstance(e, ExecutionStarted)), None)
        target = uuid.uuid4().hex if new_instance_id else instance_id
        start = ExecutionStarted(
            timestamp=self._now(),
            name=state.name,
            version=state.version,
            input=state.serialized_input,
            instance_id=target,
            execution_id=uuid.uuid4().hex,
            tags=original.tags if original is not None else None,
            task_queue=state.task_queue,
        )
        replaceable = TERMINAL_STATUSES if not new_instance_id else frozenset()
        with traced_start(OrchestrationMessage(target, start)) as message:
            await self._create(store, message, replaceable)
        return target

    # -- purging -----------------------------------------------------------------------

    async def purge_orchestration(self, instance_id: str, *, recursive: bool = True) -> int:
        """Delete a finished instance with its history; return how many instances went.

        Raises :class:`~duratask.errors.InvalidOperationError` if the instance has not finished.
        With ``recursive``, its finished sub-orchestrations (and theirs) are purged first;
        sub-orchestrations still running are left alone with their own children.
        """
        store = await self._ready()
        state = await self._require(store, instance_id)
        if not state.runtime_status.is_terminal:
            raise InvalidOperationError(
                f"cannot purge orchestration {instance_id!r}: it is "
                f"{state.runtime_status.value}, and only finished instances can be purged "
                "(terminate it first)"
            )
        return await self._purge_tree(store, instance_id, recursive, {instance_id})

    async def _purge_tree(
        self, store: OrchestrationServiceClient, instance_id: str, recursive: bool, seen: set[str]
    ) -> int:
        purged = 0
        if recursive:
            for child in await self._children(store, instance_id):
                if child.instance_id in seen or not child.runtime_status.is_terminal:
                    continue
                seen.add(child.instance_id)
                purged += await self._purge_tree(store, child.instance_id, True, seen)
        if await store.purge_instance(instance_id):
            purged += 1
        return purged

    async def _children(
        self, store: OrchestrationServiceClient, instance_id: str
    ) -> list[OrchestrationState]:
        children: list[OrchestrationState] = []
        token: str | None = None
        while True:
            page = await store.query_instances(
                InstanceQuery(
                    parent_instance_id=instance_id,
                    page_size=MAX_QUERY_PAGE_SIZE,
                    continuation_token=token,
                )
            )
            children.extend(page.states)
            token = page.continuation_token
            if token is None:
                return children

    async def purge_orchestrations(
        self,
        *,
        created_before: datetime | None = None,
        created_from: datetime | None = None,
        statuses: Iterable[OrchestrationStatus] | None = None,
        completed_before: datetime | None = None,
    ) -> int:
        """Delete every finished instance matching the filters; return how many went.

        Only COMPLETED, FAILED and TERMINATED instances are ever purged; asking for another
        status raises ValueError. ``completed_before`` matches instances that finished before
        that time. Sub-orchestrations are matched on their own, not through their parents.
        """
        purge_filter = build_purge_filter(
            created_before=created_before,
            created_from=created_from,
            statuses=statuses,
            completed_before=completed_before,
        )
        store = await self._ready()
        return await store.purge_instances(purge_filter)

    # -- the sync client ---------------------------------------------------------------------

    # -- schedules -----------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        orchestration: Callable[..., Any] | str,
        spec: ScheduleSpec,
        *,
        input: Any = None,
        version: str | None = None,
        overlap: Overlap = Overlap.SKIP,
        catch_up: CatchUp = CatchUp.WINDOW,
        catch_up_window: timedelta = timedelta(days=1),
        run_limit: int | None = None,
        paused: bool = False,
        note: str | None = None,
    ) -> ScheduleInfo:
        """Store a schedule that starts ``orchestration`` with ``input`` at every slot of
        ``spec`` from now on (see :class:`~duratask.ScheduleSpec`), and return it.

        ``overlap`` says what a slot does while the previous run still runs, ``catch_up``
        what happens to slots missed while no worker fired (``catch_up_window``: how old a
        missed slot may be and still run), ``run_limit`` how many scheduled runs it starts
        at most. A bad definition raises :class:`~duratask.errors.InvalidScheduleError` and
        an id in use :class:`~duratask.errors.ScheduleAlreadyExistsError`; either way
        nothing is stored.
        """
        return await self._schedules.create(
            schedule_id,
            orchestration,
            spec,
            input=input,
            version=version,
            overlap=overlap,
            catch_up=catch_up,
            catch_up_window=catch_up_window,
            run_limit=run_limit,
            paused=paused,
            note=note,
        )

    async def describe_schedule(
        self, schedule_id: str, *, runs: int = 10, next_fire_times: int = 5
    ) -> ScheduleDescription:
        """The schedule, its ``runs`` most recent runs (and skipped slots) with their status
        now, and its next ``next_fire_times`` fire times;
        :class:`~duratask.errors.ScheduleNotFoundError` if there is none."""
        return await self._schedules.describe(schedule_id, runs, next_fire_times)

    async def list_schedules(self, *, prefix: str | None = None) -> list[ScheduleInfo]:
        """The schedules (whose id starts with ``prefix``), by id."""
        return await self._schedules.list_all(prefix)

    async def update_schedule(
        self,
        schedule_id: str,
        *,
        orchestration: Callable[..., Any] | str = UNSET,
        spec: ScheduleSpec = UNSET,
        input: Any = UNSET,
        version: str | None = UNSET,
        overlap: Overlap = UNSET,
        catch_up: CatchUp = UNSET,
        catch_up_window: timedelta = UNSET,
        run_limit: int | None = UNSET,
    ) -> ScheduleInfo:
        """Change what the schedule starts or when; fields not given stay. Slots from now
        on follow the new definition; runs already started are left alone. A bad change
        raises :class:`~duratask.errors.InvalidScheduleError` and changes nothing."""
        changes = {
            "orchestration": orchestration,
            "spec": spec,
            "input": input,
            "version": version,
            "overlap": overlap,
            "catch_up": catch_up,
            "catch_up_window": catch_up_window,
            "run_limit": run_limit,
        }
        return await self._schedules.update(schedule_id, changes)

    async def pause_schedule(self, schedule_id: str, note: str | None = None) -> ScheduleInfo:
        """Pause the schedule, noting why: slots reached while it is paused are skipped."""
        return await self._schedules.pause(schedule_id, True, note)

    async def resume_schedule(self, schedule_id: str, note: str | None = None) -> ScheduleInfo:
        """Resume a paused schedule from now on (slots missed while paused do not run)."""
        return await self._schedules.pause(schedule_id, False, note)

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Start a run of the schedule now, outside its calendar (not counted in its run
        limit); return the run's instance id (``<schedule id>@<now>-manual``)."""
        return await self._schedules.trigger(schedule_id)

    async def backfill_schedule(
        self, schedule_id: str, start: datetime, end: datetime
    ) -> list[str]:
        """Start the runs of the schedule's slots from ``start`` to ``end`` (both included,
        timezone-aware) that have not run; return their instance ids. A slot that already
        ran is not run again."""
        return await self._schedules.backfill(schedule_id, start, end)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; its runs stay. :class:`~duratask.errors.ScheduleNotFoundError`
        if there is none."""
        await self._schedules.delete(schedule_id)


class TaskHubClient:
    """The synchronous face of :class:`AsyncTaskHubClient`: same arguments, same methods.

    Calls run on a private event loop in a daemon thread, started on first use and stopped
    by :meth:`close` (or leaving a ``with`` block). A client the program never closes is
    closed when the interpreter exits, so its connections end cleanly and nothing is left
    running to warn about. Do not call it from the coroutines of an event loop: it blocks;
    use :class:`AsyncTaskHubClient` there.
    """

    def __init__(
        self,
        store: str | OrchestrationServiceClient,
        *,
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client = AsyncTaskHubClient(
            store, data_converter=data_converter, max_payload_bytes=max_payload_bytes, clock=clock
        )
        self._portal = Portal("duratask-client")
        # Holds the portal and the async client, not this object: a client dropped without
        # close() is still closed at exit (its loop thread keeps running until then).
        self._close_at_exit = functools.partial(_close_at_exit, self._portal, self._client)
        atexit.register(self._close_at_exit)

    @property
    def store(self) -> OrchestrationServiceClient:
        """The store this client talks to."""
        return self._client.store

    @property
    def data_converter(self) -> DataConverter:
        """The converter used for payloads."""
        return self._client.data_converter

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the async client and stop the loop thread. Idempotent."""
        atexit.unregister(self._close_at_exit)
        try:
            if self._portal.started:
                self._portal.call(self._client.close)
        finally:
            self._portal.close()

    def schedule_new_orchestration(
        self,
        orchestration: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        version: str | None = None,
        reuse_id_policy: ReuseIdPolicy | None = None,
        tags: dict[str, str] | None = None,
        task_queue: str = DEFAULT_TASK_QUEUE,
    ) -> str:
        """See :meth:`AsyncTaskHubClient.schedule_new_orchestration`."""
        return self._portal.call(
            self._client.schedule_new_orchestration,
            orchestration,
            input=input,
            instance_id=instance_id,
            start_at=start_at,
            version=version,
            reuse_id_policy=reuse_id_policy,
            tags=tags,
            task_queue=task_queue,
        )

    def get_orchestration_state(self, instance_id: str) -> OrchestrationState | None:
        """See :meth:`AsyncTaskHubClient.get_orchestration_state`."""
        return self._portal.call(self._client.get_orchestration_state, instance_id)

    def get_orchestration_history(self, instance_id: str) -> list[HistoryEvent]:
        """See :meth:`AsyncTaskHubClient.get_orchestration_history`."""
        return self._portal.call(self._client.get_orchestration_history, instance_id)

    def get_orchestration_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """See :meth:`AsyncTaskHubClient.get_orchestration_executions`."""
        return self._portal.call(self._client.get_orchestration_executions, instance_id)

    def get_lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """See :meth:`AsyncTaskHubClient.get_lease_takeovers`."""
        return self._portal.call(self._client.get_lease_takeovers, instance_id)

    def query_orchestrations(
        self,
        *,
        statuses: Iterable[OrchestrationStatus] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        name: str | None = None,
        instance_id_prefix: str | None = None,
        page_size: int = 100,
        continuation_token: str | None = None,
        parent_instance_id: str | None = None,
        sort: InstanceSort | str = InstanceSort.CREATED,
        descending: bool = False,
        top_level_only: bool = False,
        custom_status_contains: str | None = None,
    ) -> QueryPage:
        """See :meth:`AsyncTaskHubClient.query_orchestrations`."""
        return self._portal.call(
            self._client.query_orchestrations,
            statuses=statuses,
            created_from=created_from,
            created_to=created_to,
            name=name,
            instance_id_prefix=instance_id_prefix,
            page_size=page_size,
            continuation_token=continuation_token,
            parent_instance_id=parent_instance_id,
            sort=sort,
            descending=descending,
            top_level_only=top_level_only,
            custom_status_contains=custom_status_contains,
        )

    def count_orchestrations(
        self,
        *,
        name: str | None = None,
        instance_id_prefix: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        top_level_only: bool = False,
        custom_status_contains: str | None = None,
    ) -> dict[OrchestrationStatus, int]:
        """See :meth:`AsyncTaskHubClient.count_orchestrations`."""
        return self._portal.call(
            self._client.count_orchestrations,
            name=name,
            instance_id_prefix=instance_id_prefix,
            created_from=created_from,
            created_to=created_to,
            top_level_only=top_level_only,
            custom_status_contains=custom_status_contains,
        )

    def list_workers(self, *, connected_only: bool = False) -> list[WorkerInfo]:
        """See :meth:`AsyncTaskHubClient.list_workers`."""
        return self._portal.call(self._client.list_workers, connected_only=connected_only)

    def backlog(self) -> list[BacklogEntry]:
        """See :meth:`AsyncTaskHubClient.backlog`."""
        return self._portal.call(self._client.backlog)

    def why_waiting(self, state: OrchestrationState) -> str | None:
        """See :meth:`AsyncTaskHubClient.why_waiting`."""
        return self._portal.call(self._client.why_waiting, state)

    def wait_for_orchestration_start(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_start`."""
        return self._portal.call(self._client.wait_for_orchestration_start, instance_id, timeout)

    def wait_for_orchestration_completion(
        self, instance_id: str, timeout: float | timedelta = 60
    ) -> OrchestrationState:
        """See :meth:`AsyncTaskHubClient.wait_for_orchestration_completion`."""
        return self._portal.call(
            self._client.wait_for_orchestration_completion, instance_id, timeout
        )

    def raise_orchestration_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """See :meth:`AsyncTaskHubClient.raise_orchestration_event`."""
        self._portal.call(self._client.raise_orchestration_event, instance_id, name, data)

    def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, recursive: bool = True
    ) -> None:
        """See :meth:`AsyncTaskHubClient.terminate_orchestration`."""
        self._portal.call(
            self._client.terminate_orchestration, instance_id, output=output, recursive=recursive
        )

    def suspend_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """See :meth:`AsyncTaskHubClient.suspend_orchestration`."""
        self._portal.call(self._client.suspend_orchestration, instance_id, reason)

    def resume_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """See :meth:`AsyncTaskHubClient.resume_orchestration`."""
        self._portal.call(self._client.resume_orchestration, instance_id, reason)

    def rewind_orchestration(self, instance_id: str, reason: str | None = None) -> None:
        """See :meth:`AsyncTaskHubClient.rewind_orchestration`."""
        self._portal.call(self._client.rewind_orchestration, instance_id, reason)

    def restart_orchestration(self, instance_id: str, *, new_instance_id: bool = False) -> str:
        """See :meth:`AsyncTaskHubClient.restart_orchestration`."""
        return self._portal.call(
            self._client.restart_orchestration, instance_id, new_instance_id=new_instance_id
        )

    def signal_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        signal_time: datetime | None = None,
        request_id: str | None = None,
    ) -> None:
        """See :meth:`AsyncTaskHubClient.signal_entity`."""
        self._portal.call(
            self._client.signal_entity,
            entity_id,
            operation,
            input,
            signal_time=signal_time,
            request_id=request_id,
        )

    def get_entity(
        self, entity_id: EntityInstanceId | str, *, include_state: bool = True
    ) -> EntityMetadata | None:
        """See :meth:`AsyncTaskHubClient.get_entity`."""
        return self._portal.call(self._client.get_entity, entity_id, include_state=include_state)

    def query_entities(
        self,
        *,
        name: str | None = None,
        entity_id_prefix: str | None = None,
        last_modified_from: datetime | None = None,
        last_modified_to: datetime | None = None,
        include_state: bool = True,
        page_size: int = 100,
        continuation_token: str | None = None,
    ) -> EntityQueryPage:
        """See :meth:`AsyncTaskHubClient.query_entities`."""
        return self._portal.call(
            self._client.query_entities,
            name=name,
            entity_id_prefix=entity_id_prefix,
            last_modified_from=last_modified_from,
            last_modified_to=last_modified_to,
            include_state=include_state,
            page_size=page_size,
            continuation_token=continuation_token,
        )

    def clean_entity_storage(
        self, *, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """See :meth:`AsyncTaskHubClient.clean_entity_storage`."""
        return self._portal.call(
            self._client.clean_entity_storage,
            remove_empty_entities=remove_empty_entities,
            release_orphaned_locks=release_orphaned_locks,
        )

    def purge_orchestration(self, instance_id: str, *, recursive: bool = True) -> int:
        """See :meth:`AsyncTaskHubClient.purge_orchestration`."""
        return self._portal.call(self._client.purge_orchestration, instance_id, recursive=recursive)

    def purge_orchestrations(
        self,
        *,
        created_before: datetime | None = None,
        created_from: datetime | None = None,
        statuses: Iterable[OrchestrationStatus] | None = None,
        completed_before: datetime | None = None,
    ) -> int:
        """See :meth:`AsyncTaskHubClient.purge_orchestrations`."""
        return self._portal.call(
            self._client.purge_orchestrations,
            created_before=created_before,
            created_from=created_from,
            statuses=statuses,
            completed_before=completed_before,
        )

    def create_schedule(
        self,
        schedule_id: str,
        orchestration: Callable[..., Any] | str,
        spec: ScheduleSpec,
        *,
        input: Any = None,
        version: str | None = None,
        overlap: Overlap = Overlap.SKIP,
        catch_up: CatchUp = CatchUp.WINDOW,
        catch_up_window: timedelta = timedelta(days=1),
        run_limit: int | None = None,
        paused: bool = False,
        note: str | None = None,
    ) -> ScheduleInfo:
        """See :meth:`AsyncTaskHubClient.create_schedule`."""
        return self._portal.call(
            self._client.create_schedule,
            schedule_id,
            orchestration,
            spec,
            input=input,
            version=version,
            overlap=overlap,
            catch_up=catch_up,
            catch_up_window=catch_up_window,
            run_limit=run_limit,
            paused=paused,
            note=note,
        )

    def describe_schedule(
        self, schedule_id: str, *, runs: int = 10, next_fire_times: int = 5
    ) -> ScheduleDescription:
        """See :meth:`AsyncTaskHubClient.describe_schedule`."""
        return self._portal.call(
            self._client.describe_schedule, schedule_id, runs=runs, next_fire_times=next_fire_times
        )

    def list_schedules(self, *, prefix: str | None = None) -> list[ScheduleInfo]:
        """See :meth:`AsyncTaskHubClient.list_schedules`."""
        return self._portal.call(self._client.list_schedules, prefix=prefix)

    def update_schedule(
        self,
        schedule_id: str,
        *,
        orchestration: Callable[..., Any] | str = UNSET,
        spec: ScheduleSpec = UNSET,
        input: Any = UNSET,
        version: str | None = UNSET,
        overlap: Overlap = UNSET,
        catch_up: CatchUp = UNSET,
        catch_up_window: timedelta = UNSET,
        run_limit: int | None = UNSET,
    ) -> ScheduleInfo:
        """See :meth:`AsyncTaskHubClient.update_schedule`."""
        return self._portal.call(
            self._client.update_schedule,
            schedule_id,
            orchestration=orchestration,
            spec=spec,
            input=input,
            version=version,
            overlap=overlap,
            catch_up=catch_up,
            catch_up_window=catch_up_window,
            run_limit=run_limit,
        )

    def pause_schedule(self, schedule_id: str, note: str | None = None) -> ScheduleInfo:
        """See :meth:`AsyncTaskHubClient.pause_schedule`."""
        return self._portal.call(self._client.pause_schedule, schedule_id, note)

    def resume_schedule(self, schedule_id: str, note: str | None = None) -> ScheduleInfo:
        """See :meth:`AsyncTaskHubClient.resume_schedule`."""
        return self._portal.call(self._client.resume_schedule, schedule_id, note)

    def trigger_schedule(self, schedule_id: str) -> str:
        """See :meth:`AsyncTaskHubClient.trigger_schedule`."""
        return self._portal.call(self._client.trigger_schedule, schedule_id)

    def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> list[str]:
        """See :meth:`AsyncTaskHubClient.backfill_schedule`."""
        return self._portal.call(self._client.backfill_schedule, schedule_id, start, end)

    def delete_schedule(self, schedule_id: str) -> None:
        """See :meth:`AsyncTaskHubClient.delete_schedule`."""
        self._portal.call(self._client.delete_schedule, schedule_id)


_EXIT_CLOSE_SECONDS = 5.0  # at exit, how long an unclosed client may take to close


def _close_at_exit(portal: Portal, client: AsyncTaskHubClient) -> None:
    """Close a sync client's async client and loop that the program left open. Without
    this, the loop thread dies with the interpreter and its pending tasks (a connection
    pool's workers) are reported destroyed while pending."""
    try:
        if portal.started:
            portal.call_within(_EXIT_CLOSE_SECONDS, client.close)
    except Exception:
        pass  # exiting anyway: an unreachable store must not hold the process up
    finally:
        portal.close()


def _to_utc_or_none(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _to_utc(value, what)
