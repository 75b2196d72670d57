"""The contexts user code receives: :class:`OrchestrationContext` and :class:`ActivityContext`."""

from __future__ import annotations

import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from duratask.entities._id import EntityInstanceId
from duratask.retry import RetryPolicy
from duratask.task import Task

Orchestrator = Callable[..., Any]
Activity = Callable[..., Any]
TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")


class OrchestrationContext(ABC):
    """What an orchestration may do. Everything here is deterministic and replay-safe.

    Orchestration code must only coordinate: no I/O, no clocks, no random numbers, no threads.
    Use activities for real work, ``current_utc_datetime`` for time and ``new_uuid`` for ids.
    """

    @property
    @abstractmethod
    def instance_id(self) -> str:
        """The id of this orchestration instance."""

    @property
    @abstractmethod
    def execution_id(self) -> str:
        """The id of the current execution (changes at each continue-as-new)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The registered name of this orchestration."""

    @property
    @abstractmethod
    def version(self) -> str | None:
        """The version this instance is pinned to."""

    @property
    @abstractmethod
    def parent_instance_id(self) -> str | None:
        """The instance that started this one as a sub-orchestration, if any."""

    @property
    @abstractmethod
    def current_utc_datetime(self) -> datetime:
        """The deterministic current time: when the current episode started (aware UTC).

        Use it instead of ``datetime.now()``: it replays as the same value.
        """

    @property
    @abstractmethod
    def is_replaying(self) -> bool:
        """True while the code re-runs steps already recorded in history."""

    @property
    @abstractmethod
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        """A logger that stays silent while replaying, so each line is logged once."""

    @abstractmethod
    def new_uuid(self) -> uuid.UUID:
        """A UUID that is the same on every replay of this step."""

    @overload
    def call_activity(
        self,
        activity: Activity | str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
        return_type: type[TOutput],
    ) -> Task[TOutput]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[ActivityContext, TInput], Coroutine[Any, Any, TOutput]],
        *,
        input: TInput = ...,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[ActivityContext], Coroutine[Any, Any, TOutput]],
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[ActivityContext, TInput], TOutput],
        *,
        input: TInput = ...,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_activity(
        self,
        activity: Callable[[ActivityContext], TOutput],
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_activity(
        self,
        activity: str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
        return_type: None = None,
    ) -> Task[Any]: ...

    @abstractmethod
    def call_activity(
        self,
        activity: Activity | str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
        return_type: Any = None,
    ) -> Task[Any]:
        """Schedule an activity (by function or registered name); await the task for its result.

        ``input`` is serialised with the worker's data converter and decoded to the type the
        activity annotates. If the activity raises, awaiting the task raises
        :class:`~duratask.errors.TaskFailedError`, whose ``details`` name the original error
        type. With a ``retry_policy`` a failed attempt is retried after a durable timer, and
        the task fails only once the policy gives up.

        ``timeout`` bounds one delivery of the activity, start to close, and
        ``heartbeat_timeout`` the time it may go without calling
        :meth:`ActivityContext.heartbeat`; past either, the task fails with
        :class:`~duratask.errors.ActivityTimeoutError`, which a ``retry_policy`` retries like
        any failure (the worker's ``activity_timeout`` applies when ``timeout`` is None).

        ``task_queue`` sends the activity to the workers serving that task queue (default:
        the queue this instance runs on).

        The task's type is the activity's return type (for an ``async def``, what it
        returns when awaited), or ``return_type`` when given, which is also the type the
        result is decoded to (an activity named by a string has no annotation to read).
        """

    @overload
    def call_sub_orchestrator(
        self,
        orchestrator: Orchestrator | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        task_queue: str | None = None,
        return_type: type[TOutput],
    ) -> Task[TOutput]: ...

    @overload
    def call_sub_orchestrator(
        self,
        orchestrator: Callable[[OrchestrationContext, TInput], Coroutine[Any, Any, TOutput]],
        *,
        input: TInput = ...,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_sub_orchestrator(
        self,
        orchestrator: Callable[[OrchestrationContext, TInput], Generator[Any, Any, TOutput]],
        *,
        input: TInput = ...,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        task_queue: str | None = None,
    ) -> Task[TOutput]: ...

    @overload
    def call_sub_orchestrator(
        self,
        orchestrator: str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        task_queue: str | None = None,
        return_type: None = None,
    ) -> Task[Any]: ...

    @abstractmethod
    def call_sub_orchestrator(
        self,
        orchestrator: Orchestrator | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        task_queue: str | None = None,
        return_type: Any = None,
    ) -> Task[Any]:
        """Start a sub-orchestration; await the task for its output.

        ``instance_id`` defaults to this instance's id followed by ``:`` and the call's
        sequence number, so it is the same on every replay. A failed sub-orchestration
        raises :class:`~duratask.errors.TaskFailedError` where the task is awaited; with a
        ``retry_policy`` it is started again under the same instance id. ``version`` picks
        the registered version of the sub-orchestration to run. ``task_queue`` starts it on
        that task queue (default: the queue this instance runs on).

        The task's type is the orchestration's return type (an ``async def`` or a generator
        orchestration), or ``return_type`` when given, which is also the type the output is
        decoded to.
        """

    @abstractmethod
    def create_timer(self, fire_at: datetime | timedelta) -> Task[None]:
        """A durable timer firing at an aware datetime, or after a delay from now.

        "Now" is :attr:`current_utc_datetime`. The timer is recorded in the history, so it
        fires at the same time however often the worker restarts meanwhile.
        """

    @overload
    def wait_for_external_event(
        self, name: str, *, timeout: timedelta | None = None, data_type: type[TOutput]
    ) -> Task[TOutput]: ...

    @overload
    def wait_for_external_event(
        self, name: str, *, timeout: timedelta | None = None, data_type: None = None
    ) -> Task[Any]: ...

    @abstractmethod
    def wait_for_external_event(
        self, name: str, *, timeout: timedelta | None = None, data_type: Any = None
    ) -> Task[Any]:
        """Wait for an event raised to this instance (names are case-insensitive).

        Events that arrived before the wait are buffered and delivered in order. With a
        ``timeout``, the task fails with :class:`~duratask.errors.EventTimeoutError` if no
        event came in time. ``data_type`` is the type the event's data is decoded to (plain
        JSON values by default), and the task's type.
        """

    @abstractmethod
    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Raise an event on another orchestration instance (fire and forget)."""

    @abstractmethod
    def continue_as_new(self, new_input: Any, *, save_events: bool = False) -> None:
        """End this execution and start a fresh one with ``new_input`` and an empty history.

        With ``save_events``, external events this execution received and did not consume
        are carried into the new one. Events that arrive after this call belong to the new
        execution either way. The new execution sees the carried events first, then the
        ones that arrived since, each in the order it was sent.
        """

    @abstractmethod
    def set_custom_status(self, status: Any) -> None:
        """Publish a JSON-serialisable status that clients can read while the instance runs."""

    @abstractmethod
    def signal_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        signal_time: datetime | None = None,
    ) -> None:
        """Send ``operation`` to an entity, one-way; with ``signal_time`` (aware), it is
        delivered no earlier than then."""

    @abstractmethod
    def call_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        return_type: Any = None,
    ) -> Task[Any]:
        """Run ``operation`` on an entity; the task's result is the operation's (decoded as
        ``return_type`` if given), or it fails with
        :class:`~duratask.errors.EntityOperationFailedError` if the operation raised.

        Inside a critical section, only entities it locked may be called."""

    @abstractmethod
    def lock_entities(self, *entity_ids: EntityInstanceId | str) -> CriticalSection:
        """A critical section over these entities: ``async with ctx.lock_entities(a, b):``.

        Entering waits until every entity is locked for this orchestration (locks are taken
        in one global order, so two sections never deadlock); meanwhile, and until the
        section ends, each entity runs only this orchestration's operations. The locks are
        released when the block ends, also if it raises or the orchestration ends. Sections
        do not nest.
        """

    @property
    @abstractmethod
    def is_in_critical_section(self) -> bool:
        """Whether the orchestration holds the locks of a critical section now."""


class CriticalSection(ABC):
    """The locks of a critical section (see :meth:`OrchestrationContext.lock_entities`),
    held inside ``async with ctx.lock_entities(...):`` in an ``async def`` orchestration, or
    inside ``with (yield ctx.lock_entities(...)):`` in a generator orchestration.

    Attributes:
        entity_ids: The locked entities, in lock order.
    """

    def __init__(self, entity_ids: tuple[EntityInstanceId, ...]) -> None:
        self.entity_ids = entity_ids
        self._yielded = False  # entered by a generator's yield: ``with`` may hold it

    def _entered_by_yield(self) -> Task[None]:
        """For the engine, when a generator orchestration yields the section: ask for the
        locks; the generator resumes with the section once all are held."""
        self._yielded = True
        return self._enter()

    @abstractmethod
    def _enter(self) -> Task[None]:
        """Ask for the locks; the task completes once all are held."""

    @abstractmethod
    def _exit(self) -> None:
        """Let the locks go."""

    async def __aenter__(self) -> CriticalSection:
        await self._enter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._exit()

    def __enter__(self) -> CriticalSection:
        if not self._yielded:
            raise TypeError(
                "a critical section is entered with `async with ctx.lock_entities(...):` in "
                "an async def orchestration, or `with (yield ctx.lock_entities(...)):` in a "
                "generator orchestration (the yield waits for the locks)"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit()


@dataclass(frozen=True, slots=True)
class ActivityContext:
    """What an activity knows about the call it serves: the first argument of every activity.

    Attributes:
        orchestration_id: The id of the orchestration instance that scheduled the activity.
        execution_id: The execution of that instance (it changes at each continue-as-new).
        task_id: The activity's sequence number in the orchestration's history; with
            ``orchestration_id`` and ``execution_id`` it identifies this call, for example
            as an idempotency key towards another system.
        name: The name the activity is registered under.
        attempt: Which try of the call this is under a :class:`RetryPolicy`: 1, 2, 3...
            (always 1 without one).
        delivery_count: How many times this try has been handed to a worker: 1, or more
            after a worker crashed or lost its lease while running it. Not a retry.
        heartbeat_details: What the activity last reported with :meth:`heartbeat`, on an
            earlier delivery of this try or on the try before it (decoded JSON), so that it
            can resume where it got to; None at first.
    """

    orchestration_id: str
    execution_id: str
    task_id: int
    name: str
    attempt: int = 1
    delivery_count: int = 1
    heartbeat_details: Any = None
    _beat: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    def heartbeat(self, details: Any = None) -> None:
        """Report that the activity is alive, with optional progress ``details`` (JSON
        values, kept in the store so a later delivery or try can resume from them).

        Safe to call often, from a sync activity's thread too: the worker writes the last
        details at most every few seconds. Under a ``heartbeat_timeout``, an activity that
        stops calling it fails with :class:`~duratask.errors.ActivityTimeoutError`.
        """
        if self._beat is not None:
            self._beat(details)
