"""The orchestration context used during replay: tasks, pending actions and event handlers.

It records every scheduling call as an action keyed by a sequence number, matches replayed
scheduling events against those actions, and completes tasks as completion events arrive.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections import deque
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask import _actions as act
from duratask import history as h
from duratask._registry import Registry, check_name
from duratask.context import Activity, CriticalSection, OrchestrationContext, Orchestrator
from duratask.converter import PayloadCodec
from duratask.entities._id import EntityInstanceId
from duratask.errors import (
    EntityLockError,
    EntityOperationFailedError,
    EventTimeoutError,
    NonDeterminismError,
    TaskFailedError,
)
from duratask.retry import RetryPolicy
from duratask.state import FailureDetails, OrchestrationStatus
from duratask.task import CompletableTask, Task

_UUID_NAMESPACE = uuid.UUID("9e952958-5e33-4daf-827f-2fa12937b875")
_LOG = logging.getLogger("duratask.orchestration")

# The two ways an orchestration stops matching its history, and what to do about each.
NON_DETERMINISM_CAUSES = (
    "Either the orchestration's code changed while this instance was running (deploy such "
    "a change as a new version), or the code is not deterministic: it used something that "
    "gives a different answer when the code is replayed, such as random numbers, the clock "
    "(datetime.now(), time.time()), uuid4(), I/O (files, network, environment variables) "
    "or the iteration order of a set. Use ctx.current_utc_datetime for the time, "
    "ctx.new_uuid() for ids, and activities for random numbers and I/O."
)
_SHOWN_VALUE = 80  # characters of a differing input shown in the message


class ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """Drops records while the orchestration is replaying."""

    def __init__(self, logger: logging.Logger, ctx: ReplayContext) -> None:
        super().__init__(logger, {})
        self._ctx = ctx

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        ctx = self._ctx
        kwargs["extra"] = {
            "instance_id": ctx.instance_id,
            "execution_id": ctx.execution_id,
            "orchestration_name": ctx.name,
            **(kwargs.get("extra") or {}),
        }
        return msg, kwargs

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)


class _RetryState:
    """A task with a retry policy: attempts so far and when the first one was scheduled."""

    def __init__(
        self, policy: RetryPolicy, first_attempt_at: datetime, reschedule: Callable[[], int]
    ):
        self.policy = policy
        self.first_attempt_at = first_attempt_at
        self.attempts = 1
        self.reschedule = reschedule
        # What the last try reported with a heartbeat, for the next one to resume from.
        self.heartbeat_details: str | None = None


class _PendingTask:
    """A task waiting for a completion event, and how to decode its result."""

    __slots__ = ("kind", "name", "operation", "result_type", "retry", "task")

    def __init__(
        self,
        task: CompletableTask[Any],
        kind: str,
        name: str,
        result_type: Any = None,
        retry: _RetryState | None = None,
    ) -> None:
        self.task = task
        self.kind = kind
        self.name = name
        self.result_type = result_type
        self.retry = retry
        self.operation = ""  # for entity calls


# Completion events that wait while the instance is suspended.
_HELD_WHILE_SUSPENDED = (
    h.TaskCompleted,
    h.TaskFailed,
    h.SubOrchestrationInstanceCompleted,
    h.SubOrchestrationInstanceFailed,
    h.TimerFired,
    h.EventRaised,
    h.EntityOperationCompleted,
    h.EntityOperationFailed,
    h.EntityLockGranted,
)


class ReplayContext(OrchestrationContext):
    """The engine's :class:`OrchestrationContext` implementation."""

    def __init__(
        self, instance_id: str, registry: Registry, codec: PayloadCodec, *, strict: bool = False
    ) -> None:
        self._instance_id = instance_id
        # Strict replay also compares what each step was given (inputs, ids, timer times),
        # not only what it was, to find non-deterministic code early (verify_replay).
        self._strict = strict
        self._registry = registry
        self._codec = codec
        self._execution_id = ""
        self._name = ""
        self._version: str | None = None
        self._parent_instance_id: str | None = None
        # Aware, like every OrchestratorStarted timestamp, so comparisons never mix the two.
        self._now = datetime.min.replace(tzinfo=UTC)
        self._is_replaying = False
        self._sequence = 0
        self._end_sequence = sys.maxsize
        self._uuid_counter = 0
        self._actions: dict[int, act.SchedulingAction] = {}
        self._pending: dict[int, _PendingTask] = {}
        self._timer_callbacks: dict[int, Callable[[], None]] = {}
        self._waiters: dict[str, deque[tuple[CompletableTask[Any], Any]]] = {}
        self._received: deque[h.EventRaised] = deque()
        self._held: list[h.HistoryEvent] = []
        self._suspended = False
        self._open_sub_orchestrations: dict[int, str] = {}
        self._section: _Section | None = None  # the critical section asked for or held
        self.started: h.ExecutionStarted | None = None
        self.custom_status: str | None = None
        self.completion: act.CompleteOrchestrationAction | None = None
        self.extra_actions: list[act.OrchestratorAction] = []
        self._save_events = False
        self._logger = ReplaySafeLogger(_LOG, self)

    # -- public context API ---------------------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def execution_id(self) -> str:
        return self._execution_id

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def parent_instance_id(self) -> str | None:
        return self._parent_instance_id

    @property
    def current_utc_datetime(self) -> datetime:
        return self._now

    @property
    def is_replaying(self) -> bool:
        return self._is_replaying

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._logger

    def new_uuid(self) -> uuid.UUID:
        self._uuid_counter += 1
        seed = (
            f"{self._instance_id}|{self._execution_id}|{self._now.isoformat()}|{self._uuid_counter}"
        )
        return uuid.uuid5(_UUID_NAMESPACE, seed)

    def call_activity(
        self,
        activity: Activity | str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        return_type: Any = None,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        task_queue: str | None = None,
    ) -> Task[Any]:
        name = self._registry.name_of(activity)
        if task_queue is not None:
            check_name(task_queue, "task queue")
        encoded = self._codec.encode(input, f"input of activity {name!r}")
        result_type = return_type or self._registry.result_type_of(activity, activity=True)
        for what, limit in (("timeout", timeout), ("heartbeat_timeout", heartbeat_timeout)):
            if limit is not None and limit <= timedelta(0):
                raise ValueError(f"{what} of activity {name!r} must be positive, not {limit}")
        task: CompletableTask[Any] = CompletableTask()

        def schedule() -> int:
            seq = self._next_sequence()
            retry = pending.retry
            self._actions[seq] = act.ScheduleTaskAction(
                seq,
                name,
                None,
                encoded,
                attempt=retry.attempts if retry is not None else 1,
                timeout=timeout,
                heartbeat_timeout=heartbeat_timeout,
                heartbeat_details=retry.heartbeat_details if retry is not None else None,
                task_queue=task_queue,
            )
            self._pending[seq] = pending
            return seq

        pending = _PendingTask(task, "activity", name, result_type)
        if retry_policy is not None:
            pending.retry = _RetryState(retry_policy, self._now, schedule)
        schedule()
        return task

    def call_sub_orchestrator(
        self,
        orchestrator: Orchestrator | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        version: str | None = None,
        return_type: Any = None,
        task_queue: str | None = None,
    ) -> Task[Any]:
        name = self._registry.name_of(orchestrator)
        if task_queue is not None:
            check_name(task_queue, "task queue")
        encoded = self._codec.encode(input, f"input of sub-orchestration {name!r}")
        result_type = return_type or self._registry.result_type_of(orchestrator, activity=False)
        task: CompletableTask[Any] = CompletableTask()
        child_id = instance_id

        def schedule() -> int:
            nonlocal child_id
            seq = self._next_sequence()
            if child_id is None:
                child_id = f"{self._instance_id}:{seq:04d}"
            self._actions[seq] = act.CreateSubOrchestrationAction(
                seq, name, child_id, version, encoded, task_queue
            )
            self._pending[seq] = pending
            self._open_sub_orchestrations[seq] = child_id
            return seq

        pending = _PendingTask(task, "sub-orchestration", name, result_type)
        if retry_policy is not None:
            pending.retry = _RetryState(retry_policy, self._now, schedule)
        schedule()
        return task

    def create_timer(self, fire_at: datetime | timedelta) -> Task[None]:
        if isinstance(fire_at, timedelta):
            fire_at = self._now + fire_at
        elif fire_at.tzinfo is None:
            raise ValueError("create_timer needs a timezone-aware datetime (or a timedelta)")
        task: CompletableTask[None] = CompletableTask()
        self._schedule_timer(fire_at, task)
        return task

    def wait_for_external_event(
        self, name: str, *, timeout: timedelta | None = None, data_type: Any = None
    ) -> Task[Any]:
        key = name.lower()
        task: CompletableTask[Any] = CompletableTask()
        for event in self._received:
            if event.name.lower() == key:
                self._received.remove(event)
                task._set_result(self._decode(event.input, data_type))
                return task
        waiter = (task, data_type)
        self._waiters.setdefault(key, deque()).append(waiter)
        if timeout is not None:
            timer: CompletableTask[None] = CompletableTask()

            def on_timeout() -> None:
                if not task.is_complete:
                    self._waiters[key].remove(waiter)
                    task._set_exception(EventTimeoutError(name))

            seq = self._schedule_timer(self._now + timeout, timer)
            self._timer_callbacks[seq] = on_timeout
        return task

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        encoded = self._codec.encode(data, f"data of event {name!r}")
        seq = self._next_sequence()
        self._actions[seq] = act.SendEventAction(seq, instance_id, name, encoded)

    def continue_as_new(self, new_input: Any, *, save_events: bool = False) -> None:
        encoded = self._codec.encode(new_input, "input of continue_as_new")
        self._save_events = save_events
        self._complete(
            act.CompleteOrchestrationAction(OrchestrationStatus.CONTINUED_AS_NEW, encoded)
        )

    def set_custom_status(self, status: Any) -> None:
        self.custom_status = self._codec.encode(status, "custom status")

    # -- entities -----------------------------------------------------------------------------
    def signal_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        signal_time: datetime | None = None,
    ) -> None:
        target = str(EntityInstanceId.of(entity_id))
        if signal_time is not None and signal_time.tzinfo is None:
            raise ValueError("signal_time must be a timezone-aware datetime")
        encoded = self._codec.encode(input, f"input of entity operation {operation!r}")
        seq = self._next_sequence()
        self._actions[seq] = act.SignalEntityAction(
            seq, target, operation, self._request_id(seq), encoded, signal_time
        )

    def call_entity(
        self,
        entity_id: EntityInstanceId | str,
        operation: str,
        input: Any = None,
        *,
        return_type: Any = None,
    ) -> Task[Any]:
        target = str(EntityInstanceId.of(entity_id))
        section = self._section
        if section is not None and section.held and target not in section.lock_set:
            raise EntityLockError(
                f"call to entity {target!r} inside a critical section over "
                f"{list(section.lock_set)}: inside a section, call only the entities it locked"
            )
        encoded = self._codec.encode(input, f"input of entity operation {operation!r}")
        seq = self._next_sequence()
        self._actions[seq] = act.CallEntityAction(
            seq, target, operation, self._request_id(seq), encoded
        )
        task: CompletableTask[Any] = CompletableTask()
        pending = _PendingTask(task, "entity", target, return_type)
        pending.operation = operation
        self._pending[seq] = pending
        return task

    def lock_entities(self, *entity_ids: EntityInstanceId | str) -> CriticalSection:
        if not entity_ids:
            raise EntityLockError("lock_entities needs at least one entity id")
        if self._section is not None:
            raise EntityLockError("critical sections do not nest: this one is inside another")
        ids = sorted({EntityInstanceId.of(e) for e in entity_ids}, key=str)
        return _Section(self, tuple(ids))

    @property
    def is_in_critical_section(self) -> bool:
        return self._section is not None and self._section.held

    def _request_id(self, seq: int) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"{self._instance_id}|{self._execution_id}|{seq}"))

    def _lock(self, section: _Section) -> Task[None]:
        if self._section is not None:
            raise EntityLockError("critical sections do not nest: this one is inside another")
        seq = self._next_sequence()
        section.critical_section_id = self._request_id(seq)
        self._actions[seq] = act.LockEntitiesAction(
            seq, section.critical_section_id, section.lock_set
        )
        task: CompletableTask[None] = CompletableTask()
        self._pending[seq] = _PendingTask(task, "lock", ", ".join(section.lock_set))
        self._section = section
        return task

    def _unlock(self, section: _Section) -> None:
        if self._section is not section:
            return
        self._section = None
        if self.completion is not None:
            return  # released by the completion (see releases_at_end)
        for entity_id in section.lock_set:
            seq = self._next_sequence()
            self._actions[seq] = act.UnlockEntityAction(seq, section.critical_section_id, entity_id)

    def releases_at_end(self) -> list[act.UnlockEntityAction]:
        """The locks to let go of because the execution ended inside a critical section (or
        while asking for one)."""
        section = self._section
        if section is None or self.completion is None:
            return []
        return [
            act.UnlockEntityAction(-1, section.critical_section_id, entity_id)
            for entity_id in section.lock_set
        ]

    # -- engine-side API ------------------------------------------------------------------
    def set_replaying(self, replaying: bool) -> None:
        self._is_replaying = replaying

    @property
    def is_complete(self) -> bool:
        return self.completion is not None

    def actions_committed(self) -> None:
        """The pending actions were recorded in history; a live cursor forgets them."""
        for seq in [seq for seq in self._actions if seq < self._end_sequence]:
            del self._actions[seq]
        self.extra_actions.clear()

    def awaits(self, task_id: int) -> bool:
        """Whether the task with this id was scheduled and has no result yet."""
        return task_id in self._pending

    def awaits_only(self, task_id: int) -> bool:
        """Whether that task is the only one without a result."""
        return len(self._pending) == 1 and task_id in self._pending

    def pending_actions(self) -> list[act.SchedulingAction]:
        """Unmatched scheduling actions; none made after the execution ended."""
        return [a for seq, a in self._actions.items() if seq < self._end_sequence]

    def complete_with_result(self, result: Any, result_type: Any = None) -> None:
        try:
            encoded = self._codec.encode(result, f"output of orchestration {self._name!r}")
        except Exception as exc:
            self.fail(exc)
            return
        self._complete(act.CompleteOrchestrationAction(OrchestrationStatus.COMPLETED, encoded))

    def fail(self, exc: BaseException) -> None:
        self._drop_actions()
        self._complete(
            act.CompleteOrchestrationAction(
                OrchestrationStatus.FAILED, failure_details=FailureDetails.from_exception(exc)
            )
        )

    def on_started(self, event: h.ExecutionStarted) -> None:
        self.started = event
        self._execution_id = event.execution_id
        self._name = event.name
        self._version = event.version
        self._parent_instance_id = event.parent.instance_id if event.parent else None

    def apply(self, event: h.HistoryEvent) -> None:
        """Apply one event that is not ExecutionStarted (the executor handles that one)."""
        if self.completion is not None:
            return
        if self._suspended and isinstance(event, _HELD_WHILE_SUSPENDED):
            self._held.append(event)
            return
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)

    def carried_events(self) -> tuple[h.EventRaised, ...]:
        """External events received but never consumed, in the order they arrived, when
        continue-as-new saves events."""
        if not self._save_events:
            return ()
        held = [e for e in self._held if isinstance(e, h.EventRaised)]
        return (*self._received, *held)

    # -- helpers -----------------------------------------------------------------------------
    def _drop_actions(self) -> None:
        """Forget the scheduled actions, as the execution ends; releases of entities stay (a
        critical section left on the way to the end must still let go of its locks)."""
        self._actions = {
            seq: a for seq, a in self._actions.items() if isinstance(a, act.UnlockEntityAction)
        }

    def _next_sequence(self) -> int:
        seq = self._sequence
        self._sequence += 1
        return seq

    def _schedule_timer(self, fire_at: datetime, task: CompletableTask[Any]) -> int:
        seq = self._next_sequence()
        self._actions[seq] = act.CreateTimerAction(seq, fire_at)
        self._pending[seq] = _PendingTask(task, "timer", "timer")
        return seq

    def _decode(self, text: str | None, type_hint: Any) -> Any:
        return self._codec.decode(text, type_hint)

    def _complete(self, completion: act.CompleteOrchestrationAction) -> None:
        if self.completion is None:
            self.completion = completion
            self._end_sequence = self._sequence

    def _mismatch(self, event: h.HistoryEvent, what: str) -> NonDeterminismError:
        return NonDeterminismError(
            f"non-deterministic orchestration {self._name!r}: at sequence #{event.event_id} "
            f"{what}. {NON_DETERMINISM_CAUSES}"
        )

    def _match(self, event: h.HistoryEvent, expected: type, describe: str) -> act.SchedulingAction:
        action = self._actions.pop(event.event_id, None)
        if action is None:
            raise self._mismatch(
                event,
                f"history has {describe}, but the code scheduled nothing there (a step removed, "
                "or taken only under a condition that came out differently)",
            )
        if not isinstance(action, expected):
            raise self._mismatch(
                event,
                f"history has {describe}, but the code now does {_describe_action(action)} "
                "(the order of steps differs)",
            )
        return action

    def _check_same(
        self, event: h.HistoryEvent, describe: str, field: str, was: Any, now: Any
    ) -> None:
        if self._strict and was != now:
            raise self._mismatch(
                event,
                f"history has {describe} with {field} {_shown(was)}, but replaying the code "
                f"gave {_shown(now)}",
            )

    def _on_task_scheduled(self, event: h.TaskScheduled) -> None:
        describe = f"activity {event.name!r}"
        action = self._match(event, act.ScheduleTaskAction, describe)
        assert isinstance(action, act.ScheduleTaskAction)
        if action.name.lower() != event.name.lower():
            raise self._mismatch(
                event,
                f"history has activity {event.name!r}, but the code now calls activity "
                f"{action.name!r}",
            )
        self._check_same(event, describe, "input", event.input, action.input)

    def _on_sub_created(self, event: h.SubOrchestrationInstanceCreated) -> None:
        describe = f"sub-orchestration {event.name!r}"
        action = self._match(event, act.CreateSubOrchestrationAction, describe)
        assert isinstance(action, act.CreateSubOrchestrationAction)
        if action.name.lower() != event.name.lower():
            raise self._mismatch(
                event,
                f"history has sub-orchestration {event.name!r}, but the code now starts "
                f"{action.name!r}",
            )
        self._check_same(event, describe, "instance id", event.instance_id, action.instance_id)
        self._check_same(event, describe, "input", event.input, action.input)

    def _on_timer_created(self, event: h.TimerCreated) -> None:
        action = self._match(event, act.CreateTimerAction, "a timer")
        assert isinstance(action, act.CreateTimerAction)
        self._check_same(event, "a timer", "fire time", event.fire_at, action.fire_at)

    def _on_event_sent(self, event: h.EventSent) -> None:
        action = self._match(event, act.SendEventAction, f"event {event.name!r} sent")
        assert isinstance(action, act.SendEventAction)
        if action.name.lower() != event.name.lower() or action.instance_id != event.instance_id:
            raise self._mismatch(
                event,
                f"history sent event {event.name!r} to {event.instance_id!r}, but the code now "
                f"sends {action.name!r} to {action.instance_id!r}",
            )
        self._check_same(event, f"event {event.name!r} sent", "data", event.input, action.data)

    def _on_entity_signaled(self, event: h.EntityOperationSignaled) -> None:
        action = self._match(
            event, act.SignalEntityAction, f"a signal of {event.target_instance_id!r}"
        )
        assert isinstance(action, act.SignalEntityAction)
        self._same_entity_operation(event, action.entity_id, action.operation, "signals")

    def _on_entity_called(self, event: h.EntityOperationCalled) -> None:
        action = self._match(event, act.CallEntityAction, f"a call of {event.target_instance_id!r}")
        assert isinstance(action, act.CallEntityAction)
        self._same_entity_operation(event, action.entity_id, action.operation, "calls")

    def _same_entity_operation(
        self,
        event: h.EntityOperationSignaled | h.EntityOperationCalled,
        entity_id: str,
        operation: str,
        verb: str,
    ) -> None:
        if entity_id != event.target_instance_id or operation.lower() != event.operation.lower():
            raise NonDeterminismError(
                f"non-deterministic orchestration {self._name!r}: at sequence #{event.event_id} "
                f"history {verb} {event.operation!r} of entity {event.target_instance_id!r}, "
                f"but the code now {verb} {operation!r} of {entity_id!r}."
            )

    def _on_lock_requested(self, event: h.EntityLockRequested) -> None:
        action = self._match(event, act.LockEntitiesAction, "a critical section")
        assert isinstance(action, act.LockEntitiesAction)
        if action.lock_set != tuple(event.lock_set):
            raise NonDeterminismError(
                f"non-deterministic orchestration {self._name!r}: at sequence #{event.event_id} "
                f"history locks {list(event.lock_set)}, but the code now locks "
                f"{list(action.lock_set)}."
            )

    def _on_unlock_sent(self, event: h.EntityUnlockSent) -> None:
        if event.event_id >= 0:
            self._match(event, act.UnlockEntityAction, "an entity released")

    def _on_entity_completed(self, event: h.EntityOperationCompleted) -> None:
        pending = self._pending.pop(event.task_scheduled_id, None)
        if pending is None:
            return
        try:
            value = self._decode(event.result, pending.result_type)
        except Exception as exc:
            pending.task._set_exception(exc)
            return
        pending.task._set_result(value)

    def _on_entity_failed(self, event: h.EntityOperationFailed) -> None:
        pending = self._pending.pop(event.task_scheduled_id, None)
        if pending is None:
            return
        details = event.failure_details
        pending.task._set_exception(
            EntityOperationFailedError(
                f"operation {pending.operation!r} of entity {pending.name!r} failed: "
                f"{details.error_type}: {details.message}",
                details,
                entity_id=pending.name,
                operation=pending.operation,
                task_id=event.task_scheduled_id,
            )
        )

    def _on_lock_granted(self, event: h.EntityLockGranted) -> None:
        pending = self._pending.pop(event.task_scheduled_id, None)
        if pending is None:
            return
        if self._section is not None:
            self._section.held = True
        pending.task._set_result(None)

    def _on_orchestrator_started(self, event: h.OrchestratorStarted) -> None:
        self._now = event.timestamp

    def _on_task_result(self, event: h.TaskCompleted | h.SubOrchestrationInstanceCompleted) -> None:
        pending = self._pending.pop(event.task_scheduled_id, None)
        if pending is None:
            _LOG.debug(
                "ignoring duplicate or unknown completion for #%s",
                event.task_scheduled_id,
                extra={"event": "duratask.orchestration.duplicate_completion"},
            )
            return
        self._open_sub_orchestrations.pop(event.task_scheduled_id, None)
        try:
            value = self._decode(event.result, pending.result_type)
        except Exception as exc:
            pending.task._set_exception(exc)
            return
        pending.task._set_result(value)

    def _on_task_failure(self, event: h.TaskFailed | h.SubOrchestrationInstanceFailed) -> None:
        pending = self._pending.pop(event.task_scheduled_id, None)
        if pending is None:
            _LOG.debug(
                "ignoring duplicate or unknown failure for #%s",
                event.task_scheduled_id,
                extra={"event": "duratask.orchestration.duplicate_completion"},
            )
            return
        self._open_sub_orchestrations.pop(event.task_scheduled_id, None)
        details = event.failure_details
        error = TaskFailedError(
            f"{pending.kind} {pending.name!r} failed: {details.error_type}: {details.message}",
            details,
            task_id=event.task_scheduled_id,
        )
        retry = pending.retry
        if retry is not None:
            try:
                delay = retry.policy.next_delay(
                    retry.attempts, retry.first_attempt_at, self._now, error
                )
            except Exception as exc:  # a user ``handle`` predicate raised: the task fails with it
                pending.task._set_exception(exc)
                return
            if delay is not None:
                retry.heartbeat_details = getattr(event, "heartbeat_details", None)
                self._retry_after(retry, delay)
                return
        pending.task._set_exception(error)

    def _retry_after(self, retry: _RetryState, delay: timedelta) -> None:
        timer: CompletableTask[None] = CompletableTask()
        seq = self._schedule_timer(self._now + delay, timer)

        def next_attempt() -> None:
            retry.attempts += 1
            retry.reschedule()

        # reschedule() registers the same pending task again under a new sequence number.
        self._timer_callbacks[seq] = next_attempt

    def _on_timer_fired(self, event: h.TimerFired) -> None:
        pending = self._pending.pop(event.timer_id, None)
        callback = self._timer_callbacks.pop(event.timer_id, None)
        if callback is not None:
            callback()
        if pending is not None:
            pending.task._set_result(None)

    def _on_event_raised(self, event: h.EventRaised) -> None:
        waiters = self._waiters.get(event.name.lower())
        if waiters:
            task, data_type = waiters.popleft()
            try:
                task._set_result(self._decode(event.input, data_type))
            except Exception as exc:
                task._set_exception(exc)
        else:
            self._received.append(event)

    def _on_terminated(self, event: h.ExecutionTerminated) -> None:
        if event.recurse:
            for child in self._open_sub_orchestrations.values():
                self.extra_actions.append(
                    act.TerminateOrchestrationAction(child, event.input, recurse=True)
                )
        self._drop_actions()
        self._complete(act.CompleteOrchestrationAction(OrchestrationStatus.TERMINATED, event.input))

    def _on_suspended(self, event: h.ExecutionSuspended) -> None:
        self._suspended = True

    def _on_resumed(self, event: h.ExecutionResumed) -> None:
        self._suspended = False
        held, self._held = self._held, []
        for e in held:
            self.apply(e)

    _handlers: dict[type, Callable[[ReplayContext, Any], None]] = {
        h.OrchestratorStarted: _on_orchestrator_started,
        h.TaskScheduled: _on_task_scheduled,
        h.TaskCompleted: _on_task_result,
        h.TaskFailed: _on_task_failure,
        h.SubOrchestrationInstanceCreated: _on_sub_created,
        h.SubOrchestrationInstanceCompleted: _on_task_result,
        h.SubOrchestrationInstanceFailed: _on_task_failure,
        h.TimerCreated: _on_timer_created,
        h.TimerFired: _on_timer_fired,
        h.EventSent: _on_event_sent,
        h.EventRaised: _on_event_raised,
        h.ExecutionTerminated: _on_terminated,
        h.ExecutionSuspended: _on_suspended,
        h.ExecutionResumed: _on_resumed,
        h.EntityOperationSignaled: _on_entity_signaled,
        h.EntityOperationCalled: _on_entity_called,
        h.EntityOperationCompleted: _on_entity_completed,
        h.EntityOperationFailed: _on_entity_failed,
        h.EntityLockRequested: _on_lock_requested,
        h.EntityLockGranted: _on_lock_granted,
        h.EntityUnlockSent: _on_unlock_sent,
    }


def _shown(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else value
    shown = repr(text)
    return shown if len(shown) <= _SHOWN_VALUE else shown[: _SHOWN_VALUE - 1] + "…"


class _Section(CriticalSection):
    """The engine's critical section: locks asked for on entering, released on leaving."""

    def __init__(self, ctx: ReplayContext, ids: tuple[EntityInstanceId, ...]) -> None:
        super().__init__(ids)
        self._ctx = ctx
        self.lock_set = tuple(str(i) for i in ids)
        self.critical_section_id = ""
        self.held = False

    def _enter(self) -> Task[None]:
        return self._ctx._lock(self)

    def _exit(self) -> None:
        self._ctx._unlock(self)


def _describe_action(action: act.SchedulingAction) -> str:
    if isinstance(action, act.SignalEntityAction):
        return f"a signal of entity {action.entity_id!r}"
    if isinstance(action, act.CallEntityAction):
        return f"a call of entity {action.entity_id!r}"
    if isinstance(action, act.LockEntitiesAction):
        return "a critical section"
    if isinstance(action, act.UnlockEntityAction):
        return f"a release of entity {action.entity_id!r}"
    if isinstance(action, act.ScheduleTaskAction):
        return f"activity {action.name!r}"
    if isinstance(action, act.CreateSubOrchestrationAction):
        return f"sub-orchestration {action.name!r}"
    if isinstance(action, act.CreateTimerAction):
        return "a timer"
    return f"send event {action.name!r} to {action.instance_id!r}"
