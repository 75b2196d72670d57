"""The sidecar protocol's messages and duratask's own model, one to one.

History events, actions, failure details, statuses and instance states convert between the
generated protocol classes (``durabletask.internal.orchestrator_service_pb2``) and
duratask's dataclasses. Payloads are JSON text on both sides and pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import timestamp_pb2, wrappers_pb2

from duratask import _actions as act
from duratask import history as h
from duratask.entities._id import EntityInstanceId
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus

_STATUS_TO_PB = {
    OrchestrationStatus.RUNNING: pb.ORCHESTRATION_STATUS_RUNNING,
    OrchestrationStatus.COMPLETED: pb.ORCHESTRATION_STATUS_COMPLETED,
    OrchestrationStatus.CONTINUED_AS_NEW: pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
    OrchestrationStatus.FAILED: pb.ORCHESTRATION_STATUS_FAILED,
    OrchestrationStatus.TERMINATED: pb.ORCHESTRATION_STATUS_TERMINATED,
    OrchestrationStatus.PENDING: pb.ORCHESTRATION_STATUS_PENDING,
    OrchestrationStatus.SUSPENDED: pb.ORCHESTRATION_STATUS_SUSPENDED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}
# The protocol's CANCELED has no counterpart: an instance ended from outside is TERMINATED.
_STATUS_FROM_PB[pb.ORCHESTRATION_STATUS_CANCELED] = OrchestrationStatus.TERMINATED


class ProtocolError(ValueError):
    """A request or response that duratask cannot map (an unknown status, a missing field)."""


# -- scalars ----------------------------------------------------------------------------------


def status_to_pb(status: OrchestrationStatus) -> Any:
    """The protocol's status for a duratask status."""
    return _STATUS_TO_PB[status]


def status_from_pb(value: Any) -> OrchestrationStatus:
    """The duratask status for a protocol status; :class:`ProtocolError` if unknown."""
    try:
        return _STATUS_FROM_PB[value]
    except KeyError:
        raise ProtocolError(f"unknown orchestration status {value}") from None


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """A protocol timestamp for an aware datetime."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime for a protocol timestamp."""
    converted: datetime = ts.ToDatetime(tzinfo=UTC)
    return converted


def text(value: str | None) -> wrappers_pb2.StringValue | None:
    """A protocol string value, or None (the field left unset) for None."""
    return None if value is None else wrappers_pb2.StringValue(value=value)


def optional_text(message: Any, field: str) -> str | None:
    """A wrapped string field of ``message``: its value, or None when unset or empty (SDKs
    send an empty value for "no payload")."""
    if not message.HasField(field):
        return None
    value = str(getattr(message, field).value)
    return value or None


def optional_time(message: Any, field: str) -> datetime | None:
    """A timestamp field of ``message`` as an aware datetime, or None when unset."""
    return from_timestamp(getattr(message, field)) if message.HasField(field) else None


# -- failures ---------------------------------------------------------------------------------


def failure_to_pb(details: FailureDetails) -> pb.TaskFailureDetails:
    """The protocol's failure details (inner failures included)."""
    out = pb.TaskFailureDetails(
        errorType=details.error_type,
        errorMessage=details.message,
        stackTrace=text(details.stack_trace),
        isNonRetriable=details.is_non_retriable,
    )
    if details.inner_failure is not None:
        out.innerFailure.CopyFrom(failure_to_pb(details.inner_failure))
    return out


def failure_from_pb(details: pb.TaskFailureDetails) -> FailureDetails:
    """duratask's failure details for the protocol's."""
    inner = failure_from_pb(details.innerFailure) if details.HasField("innerFailure") else None
    return FailureDetails(
        error_type=details.errorType or "Exception",
        message=details.errorMessage,
        stack_trace=optional_text(details, "stackTrace"),
        inner_failure=inner,
        is_non_retriable=details.isNonRetriable,
    )


def _optional_failure(message: Any, field: str) -> FailureDetails | None:
    return failure_from_pb(getattr(message, field)) if message.HasField(field) else None


def _trace_to_pb(context: dict[str, str] | None) -> pb.TraceContext | None:
    if not context or "traceparent" not in context:
        return None
    parent = context["traceparent"]
    parts = parent.split("-")
    span_id = parts[2] if len(parts) == 4 else ""
    return pb.TraceContext(
        traceParent=parent, spanID=span_id, traceState=text(context.get("tracestate"))
    )


def trace_from_pb(message: Any, field: str) -> dict[str, str] | None:
    """A W3C trace context dict from a protocol ``TraceContext`` field, or None."""
    if not message.HasField(field):
        return None
    context = getattr(message, field)
    if not context.traceParent:
        return None
    out = {"traceparent": str(context.traceParent)}
    state = optional_text(context, "traceState")
    if state:
        out["tracestate"] = state
    return out


# -- history events: duratask -> protocol -------------------------------------------------


def _instance(instance_id: str, execution_id: str | None) -> pb.OrchestrationInstance:
    return pb.OrchestrationInstance(instanceId=instance_id, executionId=text(execution_id))


def _started_to_pb(event: h.ExecutionStarted) -> pb.ExecutionStartedEvent:
    out = pb.ExecutionStartedEvent(
        name=event.name,
        version=text(event.version),
        input=text(event.input),
        orchestrationInstance=_instance(event.instance_id, event.execution_id),
        tags=event.tags or {},
    )
    if event.parent is not None:
        out.parentInstance.CopyFrom(
            pb.ParentInstanceInfo(
                taskScheduledId=event.parent.task_scheduled_id,
                name=text(event.parent.name),
                orchestrationInstance=_instance(
                    event.parent.instance_id, event.parent.execution_id
                ),
            )
        )
    if event.scheduled_start_time is not None:
        out.scheduledStartTimestamp.CopyFrom(timestamp(event.scheduled_start_time))
    trace = _trace_to_pb(event.trace_context)
    if trace is not None:
        out.parentTraceContext.CopyFrom(trace)
    return out


def event_to_pb(event: h.HistoryEvent) -> pb.HistoryEvent:
    """The protocol's history event for a duratask event (same kind, same fields)."""
    out = pb.HistoryEvent(eventId=event.event_id, timestamp=timestamp(event.timestamp))
    if isinstance(event, h.ExecutionStarted):
        out.executionStarted.CopyFrom(_started_to_pb(event))
    elif isinstance(event, h.ExecutionCompleted):
        completed = out.executionCompleted
        completed.orchestrationStatus = status_to_pb(event.status)
        if event.result is not None:
            completed.result.value = event.result
        if event.failure_details is not None:
            completed.failureDetails.CopyFrom(failure_to_pb(event.failure_details))
    elif isinstance(event, h.ExecutionTerminated):
        out.executionTerminated.CopyFrom(
            pb.ExecutionTerminatedEvent(input=text(event.input), recurse=event.recurse)
        )
    elif isinstance(event, h.TaskScheduled):
        out.taskScheduled.CopyFrom(
            pb.TaskScheduledEvent(
                name=event.name, version=text(event.version), input=text(event.input)
            )
        )
    elif isinstance(event, h.TaskCompleted):
        out.taskCompleted.CopyFrom(
            pb.TaskCompletedEvent(
                taskScheduledId=event.task_scheduled_id, result=text(event.result)
            )
        )
    elif isinstance(event, h.TaskFailed):
        out.taskFailed.CopyFrom(
            pb.TaskFailedEvent(
                taskScheduledId=event.task_scheduled_id,
                failureDetails=failure_to_pb(event.failure_details),
            )
        )
    elif isinstance(event, h.SubOrchestrationInstanceCreated):
        out.subOrchestrationInstanceCreated.CopyFrom(
            pb.SubOrchestrationInstanceCreatedEvent(
                instanceId=event.instance_id,
                name=event.name,
                version=text(event.version),
                input=text(event.input),
            )
        )
    elif isinstance(event, h.SubOrchestrationInstanceCompleted):
        out.subOrchestrationInstanceCompleted.CopyFrom(
            pb.SubOrchestrationInstanceCompletedEvent(
                taskScheduledId=event.task_scheduled_id, result=text(event.result)
            )
        )
    elif isinstance(event, h.SubOrchestrationInstanceFailed):
        out.subOrchestrationInstanceFailed.CopyFrom(
            pb.SubOrchestrationInstanceFailedEvent(
                taskScheduledId=event.task_scheduled_id,
                failureDetails=failure_to_pb(event.failure_details),
            )
        )
    elif isinstance(event, h.TimerCreated):
        out.timerCreated.CopyFrom(pb.TimerCreatedEvent(fireAt=timestamp(event.fire_at)))
    elif isinstance(event, h.TimerFired):
        out.timerFired.CopyFrom(
            pb.TimerFiredEvent(fireAt=timestamp(event.fire_at), timerId=event.timer_id)
        )
    elif isinstance(event, h.OrchestratorStarted):
        out.orchestratorStarted.SetInParent()
    elif isinstance(event, h.OrchestratorCompleted):
        out.orchestratorCompleted.SetInParent()
    elif isinstance(event, h.EventSent):
        out.eventSent.CopyFrom(
            pb.EventSentEvent(
                instanceId=event.instance_id, name=event.name, input=text(event.input)
            )
        )
    elif isinstance(event, h.EventRaised):
        out.eventRaised.CopyFrom(pb.EventRaisedEvent(name=event.name, input=text(event.input)))
    elif isinstance(event, h.ContinueAsNew):
        out.continueAsNew.CopyFrom(pb.ContinueAsNewEvent(input=text(event.result)))
    elif isinstance(event, h.GenericEvent):
        out.genericEvent.CopyFrom(pb.GenericEvent(data=text(event.data)))
    elif isinstance(event, h.ExecutionSuspended):
        out.executionSuspended.CopyFrom(pb.ExecutionSuspendedEvent(input=text(event.reason)))
    elif isinstance(event, h.ExecutionResumed):
        out.executionResumed.CopyFrom(pb.ExecutionResumedEvent(input=text(event.reason)))
    elif isinstance(event, h.ExecutionRewound):
        out.executionRewound.CopyFrom(pb.ExecutionRewoundEvent(reason=text(event.reason)))
    elif not _entity_event_to_pb(event, out):  # pragma: no cover - every class is listed
        raise ProtocolError(f"no protocol form for {type(event).__name__}")
    return out


def _entity_event_to_pb(event: h.HistoryEvent, out: pb.HistoryEvent) -> bool:
    """Fill ``out`` with an entity event's protocol form; False if ``event`` is no entity event.

    The protocol matches an operation's result by request id and a lock grant by critical
    section id, so duratask's task ids of those results have no field of their own there.
    """
    if isinstance(event, h.EntityOperationSignaled):
        signaled = pb.EntityOperationSignaledEvent(
            requestId=event.request_id,
            operation=event.operation,
            input=text(event.input),
            targetInstanceId=text(event.target_instance_id),
        )
        if event.scheduled_time is not None:
            signaled.scheduledTime.CopyFrom(timestamp(event.scheduled_time))
        out.entityOperationSignaled.CopyFrom(signaled)
    elif isinstance(event, h.EntityOperationCalled):
        out.entityOperationCalled.CopyFrom(
            pb.EntityOperationCalledEvent(
                requestId=event.request_id,
                operation=event.operation,
                input=text(event.input),
                targetInstanceId=text(event.target_instance_id),
            )
        )
    elif isinstance(event, h.EntityOperationCompleted):
        out.entityOperationCompleted.CopyFrom(
            pb.EntityOperationCompletedEvent(requestId=event.request_id, output=text(event.result))
        )
    elif isinstance(event, h.EntityOperationFailed):
        out.entityOperationFailed.CopyFrom(
            pb.EntityOperationFailedEvent(
                requestId=event.request_id, failureDetails=failure_to_pb(event.failure_details)
            )
        )
    elif isinstance(event, h.EntityLockRequested):
        out.entityLockRequested.CopyFrom(
            pb.EntityLockRequestedEvent(
                criticalSectionId=event.critical_section_id, lockSet=list(event.lock_set)
            )
        )
    elif isinstance(event, h.EntityLockGranted):
        out.entityLockGranted.CopyFrom(
            pb.EntityLockGrantedEvent(criticalSectionId=event.critical_section_id)
        )
    elif isinstance(event, h.EntityUnlockSent):
        out.entityUnlockSent.CopyFrom(
            pb.EntityUnlockSentEvent(
                criticalSectionId=event.critical_section_id,
                targetInstanceId=text(event.target_instance_id),
            )
        )
    else:
        return False
    return True


def events_to_pb(events: Iterable[h.HistoryEvent]) -> list[pb.HistoryEvent]:
    """:func:`event_to_pb` over a sequence."""
    return [event_to_pb(e) for e in events]


# -- history events: protocol -> duratask (what workers send back) ------------------------


def event_from_pb(event: pb.HistoryEvent) -> h.HistoryEvent:
    """duratask's event for a protocol event a worker sent (carried-over events of a
    continue-as-new: external events, and the other kinds for completeness)."""
    kind = event.WhichOneof("eventType")
    ts = from_timestamp(event.timestamp) if event.HasField("timestamp") else datetime.now(UTC)
    if kind == "eventRaised":
        raised = event.eventRaised
        return h.EventRaised(timestamp=ts, name=raised.name, input=optional_text(raised, "input"))
    if kind == "executionSuspended":
        return h.ExecutionSuspended(
            timestamp=ts, reason=optional_text(event.executionSuspended, "input")
        )
    if kind == "executionResumed":
        return h.ExecutionResumed(
            timestamp=ts, reason=optional_text(event.executionResumed, "input")
        )
    if kind == "executionTerminated":
        terminated = event.executionTerminated
        return h.ExecutionTerminated(
            timestamp=ts, input=optional_text(terminated, "input"), recurse=terminated.recurse
        )
    if kind == "genericEvent":
        return h.GenericEvent(timestamp=ts, data=optional_text(event.genericEvent, "data"))
    raise ProtocolError(f"a worker sent a {kind} event where duratask expects an external event")


# -- actions: protocol -> duratask ----------------------------------------------------------


def action_from_pb(action: pb.OrchestratorAction) -> act.OrchestratorAction:
    """duratask's action for a protocol action; :class:`ProtocolError` for a kind duratask
    cannot carry out (entity messages, a worker-side history rewrite)."""
    kind = action.WhichOneof("orchestratorActionType")
    if kind == "scheduleTask":
        task = action.scheduleTask
        return act.ScheduleTaskAction(
            id=action.id,
            name=task.name,
            version=optional_text(task, "version"),
            input=optional_text(task, "input"),
        )
    if kind == "createTimer":
        return act.CreateTimerAction(
            id=action.id, fire_at=from_timestamp(action.createTimer.fireAt)
        )
    if kind == "createSubOrchestration":
        sub = action.createSubOrchestration
        if not sub.instanceId:
            raise ProtocolError(f"sub-orchestration {sub.name!r} (action {action.id}) has no id")
        return act.CreateSubOrchestrationAction(
            id=action.id,
            name=sub.name,
            instance_id=sub.instanceId,
            version=optional_text(sub, "version"),
            input=optional_text(sub, "input"),
        )
    if kind == "sendEvent":
        send = action.sendEvent
        return act.SendEventAction(
            id=action.id,
            instance_id=send.instance.instanceId,
            name=send.name,
            data=optional_text(send, "data"),
        )
    if kind == "terminateOrchestration":
        terminate = action.terminateOrchestration
        return act.TerminateOrchestrationAction(
            instance_id=terminate.instanceId,
            reason=optional_text(terminate, "reason"),
            recurse=terminate.recurse,
        )
    if kind == "completeOrchestration":
        complete = action.completeOrchestration
        status = status_from_pb(complete.orchestrationStatus)
        return act.CompleteOrchestrationAction(
            status=status,
            result=optional_text(complete, "result"),
            failure_details=_optional_failure(complete, "failureDetails"),
            new_version=optional_text(complete, "newVersion"),
            carryover_events=tuple(event_from_pb(e) for e in complete.carryoverEvents),
        )
    if kind == "sendEntityMessage":
        return _entity_action_from_pb(action.id, action.sendEntityMessage)
    raise ProtocolError(f"unsupported orchestrator action {kind!r} (action {action.id})")


def _entity_id(message: Any, field: str, action_id: int) -> str:
    """The ``@name@key`` entity id in a wrapped string field; ProtocolError if malformed."""
    value = optional_text(message, field) or ""
    try:
        return str(EntityInstanceId.parse(value))
    except ValueError as exc:
        raise ProtocolError(f"entity message (action {action_id}): {exc}") from None


def _entity_action_from_pb(
    action_id: int, message: pb.SendEntityMessageAction
) -> (
    act.SignalEntityAction | act.CallEntityAction | act.LockEntitiesAction | act.UnlockEntityAction
):
    """duratask's action for an orchestration's entity message: signal, call, lock, unlock."""
    kind = message.WhichOneof("EntityMessageType")
    if kind == "entityOperationSignaled":
        signaled = message.entityOperationSignaled
        return act.SignalEntityAction(
            id=action_id,
            entity_id=_entity_id(signaled, "targetInstanceId", action_id),
            operation=signaled.operation,
            request_id=signaled.requestId,
            input=optional_text(signaled, "input"),
            signal_time=optional_time(signaled, "scheduledTime"),
        )
    if kind == "entityOperationCalled":
        called = message.entityOperationCalled
        return act.CallEntityAction(
            id=action_id,
            entity_id=_entity_id(called, "targetInstanceId", action_id),
            operation=called.operation,
            request_id=called.requestId,
            input=optional_text(called, "input"),
        )
    if kind == "entityLockRequested":
        lock = message.entityLockRequested
        lock_set: list[str] = []
        for value in lock.lockSet:
            try:
                lock_set.append(str(EntityInstanceId.parse(value)))
            except ValueError as exc:
                raise ProtocolError(f"lock request (action {action_id}): {exc}") from None
        if not lock_set:
            raise ProtocolError(f"lock request (action {action_id}) names no entity")
        # Locks are taken in one global order, whatever order the worker listed them in.
        return act.LockEntitiesAction(
            id=action_id,
            critical_section_id=lock.criticalSectionId,
            lock_set=tuple(sorted(set(lock_set))),
        )
    if kind == "entityUnlockSent":
        unlock = message.entityUnlockSent
        return act.UnlockEntityAction(
            id=action_id,
            critical_section_id=unlock.criticalSectionId,
            entity_id=_entity_id(unlock, "targetInstanceId", action_id),
        )
    raise ProtocolError(f"entity message (action {action_id}) carries nothing")


# -- instance states ----------------------------------------------------------------------


def state_to_pb(
    state: OrchestrationState, *, payloads: bool = True, tags: dict[str, str] | None = None
) -> pb.OrchestrationState:
    """The protocol's instance state (inputs and outputs left out unless ``payloads``)."""
    out = pb.OrchestrationState(
        instanceId=state.instance_id,
        name=state.name,
        version=text(state.version),
        orchestrationStatus=status_to_pb(state.runtime_status),
        createdTimestamp=timestamp(state.created_at),
        lastUpdatedTimestamp=timestamp(state.last_updated_at),
        executionId=text(state.execution_id),
        parentInstanceId=text(state.parent_instance_id),
        tags=tags or {},
    )
    if state.scheduled_start_at is not None:
        out.scheduledStartTimestamp.CopyFrom(timestamp(state.scheduled_start_at))
    if state.completed_at is not None:
        out.completedTimestamp.CopyFrom(timestamp(state.completed_at))
    if payloads:
        for field, value in (
            ("input", state.serialized_input),
            ("output", state.serialized_output),
            ("customStatus", state.serialized_custom_status),
        ):
            if value is not None:
                getattr(out, field).value = value
    if state.failure_details is not None:
        out.failureDetails.CopyFrom(failure_to_pb(state.failure_details))
    return out


__all__ = [
    "ProtocolError",
    "action_from_pb",
    "event_from_pb",
    "event_to_pb",
    "events_to_pb",
    "failure_from_pb",
    "failure_to_pb",
    "from_timestamp",
    "optional_text",
    "optional_time",
    "state_to_pb",
    "status_from_pb",
    "status_to_pb",
    "text",
    "timestamp",
    "trace_from_pb",
]
