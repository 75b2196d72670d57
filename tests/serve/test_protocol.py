"""The protocol mapping, the work filter, episode planning for a remote worker and health
pings, without a network."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from durabletask.internal import orchestrator_service_pb2 as pb
from google.protobuf import wrappers_pb2

from duratask import _actions as act
from duratask import history as h
from duratask.backends.base import (
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    WorkFilter,
)
from duratask.backends.memory import MemoryOrchestrationService
from duratask.serve.episodes import CodeRequest, WorkerReply, finish, prepare
from duratask.serve.protocol import (
    ProtocolError,
    action_from_pb,
    event_to_pb,
    failure_from_pb,
    failure_to_pb,
)
from duratask.serve.work_items import WorkItemStreams, work_filter
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus
from duratask.worker._episode import EpisodeInput

T = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
FAILURE = FailureDetails(
    "ValueError", "bad", "trace", FailureDetails("KeyError", "inner"), is_non_retriable=True
)
START = h.ExecutionStarted(
    timestamp=T,
    name="flow",
    version="2",
    input="[1]",
    instance_id="i",
    execution_id="e",
    parent=h.ParentInstanceInfo("p", "pe", "parent_flow", 7),
    scheduled_start_time=T,
    tags={"team": "ops"},
    trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
)

EVENTS: list[tuple[h.HistoryEvent, str]] = [
    (START, "executionStarted"),
    (
        h.ExecutionCompleted(
            timestamp=T, status=OrchestrationStatus.FAILED, failure_details=FAILURE
        ),
        "executionCompleted",
    ),
    (h.ExecutionTerminated(timestamp=T, input='"x"', recurse=False), "executionTerminated"),
    (h.TaskScheduled(event_id=3, timestamp=T, name="a", input="1"), "taskScheduled"),
    (h.TaskCompleted(timestamp=T, task_scheduled_id=3, result="2"), "taskCompleted"),
    (h.TaskFailed(timestamp=T, task_scheduled_id=3, failure_details=FAILURE), "taskFailed"),
    (
        h.SubOrchestrationInstanceCreated(event_id=4, timestamp=T, name="c", instance_id="k"),
        "subOrchestrationInstanceCreated",
    ),
    (
        h.SubOrchestrationInstanceCompleted(timestamp=T, task_scheduled_id=4, result="1"),
        "subOrchestrationInstanceCompleted",
    ),
    (
        h.SubOrchestrationInstanceFailed(timestamp=T, task_scheduled_id=4, failure_details=FAILURE),
        "subOrchestrationInstanceFailed",
    ),
    (h.TimerCreated(event_id=5, timestamp=T, fire_at=T), "timerCreated"),
    (h.TimerFired(timestamp=T, timer_id=5, fire_at=T), "timerFired"),
    (h.OrchestratorStarted(timestamp=T), "orchestratorStarted"),
    (h.OrchestratorCompleted(timestamp=T), "orchestratorCompleted"),
    (h.EventSent(event_id=6, timestamp=T, instance_id="o", name="n", input="1"), "eventSent"),
    (h.EventRaised(timestamp=T, name="n", input="1"), "eventRaised"),
    (h.ContinueAsNew(timestamp=T, result="3"), "continueAsNew"),
    (h.GenericEvent(timestamp=T, data="d"), "genericEvent"),
    (h.ExecutionSuspended(timestamp=T, reason="r"), "executionSuspended"),
    (h.ExecutionResumed(timestamp=T, reason="r"), "executionResumed"),
    (h.ExecutionRewound(timestamp=T, reason="r"), "executionRewound"),
    (
        h.EntityOperationSignaled(
            event_id=7,
            timestamp=T,
            request_id="r1",
            operation="add",
            target_instance_id="@counter@a",
            input="1",
            scheduled_time=T,
        ),
        "entityOperationSignaled",
    ),
    (
        h.EntityOperationCalled(
            event_id=8,
            timestamp=T,
            request_id="r2",
            operation="get",
            target_instance_id="@counter@a",
        ),
        "entityOperationCalled",
    ),
    (
        h.EntityOperationCompleted(timestamp=T, task_scheduled_id=8, request_id="r2", result="1"),
        "entityOperationCompleted",
    ),
    (
        h.EntityOperationFailed(
            timestamp=T, task_scheduled_id=8, request_id="r2", failure_details=FAILURE
        ),
        "entityOperationFailed",
    ),
    (
        h.EntityLockRequested(
            event_id=9, timestamp=T, critical_section_id="cs", lock_set=("@a@1", "@b@2")
        ),
        "entityLockRequested",
    ),
    (
        h.EntityLockGranted(timestamp=T, task_scheduled_id=9, critical_section_id="cs"),
        "entityLockGranted",
    ),
    (
        h.EntityUnlockSent(
            event_id=10, timestamp=T, critical_section_id="cs", target_instance_id="@a@1"
        ),
        "entityUnlockSent",
    ),
]


def test_every_history_event_has_its_protocol_kind() -> None:
    assert {type(e) for e, _ in EVENTS} == set(h._EVENT_CLASSES.values())
    for event, kind in EVENTS:
        converted = event_to_pb(event)
        assert converted.WhichOneof("eventType") == kind
        assert converted.eventId == event.event_id
        assert converted.timestamp.ToDatetime(tzinfo=UTC) == T


def test_fields_carry_over() -> None:
    started = event_to_pb(START).executionStarted
    assert (started.name, started.version.value, started.input.value) == ("flow", "2", "[1]")
    assert started.orchestrationInstance.instanceId == "i"
    assert started.orchestrationInstance.executionId.value == "e"
    assert started.parentInstance.taskScheduledId == 7
    assert started.parentInstance.orchestrationInstance.instanceId == "p"
    assert dict(started.tags) == {"team": "ops"}
    assert started.parentTraceContext.spanID == "b7ad6b7169203331"
    assert failure_from_pb(failure_to_pb(FAILURE)) == FAILURE
    unset = event_to_pb(h.TaskCompleted(timestamp=T, task_scheduled_id=1)).taskCompleted
    assert not unset.HasField("result")  # None stays None, not ""


def _action(**kind: object) -> pb.OrchestratorAction:
    return pb.OrchestratorAction(id=9, **kind)  # type: ignore[arg-type]


def test_actions_map_to_duratask_actions() -> None:
    ts = event_to_pb(h.OrchestratorStarted(timestamp=T)).timestamp
    text = wrappers_pb2.StringValue
    assert action_from_pb(
        _action(scheduleTask=pb.ScheduleTaskAction(name="a", input=text(value="1")))
    ) == act.ScheduleTaskAction(9, "a", input="1")
    assert action_from_pb(_action(createTimer=pb.CreateTimerAction(fireAt=ts))) == (
        act.CreateTimerAction(9, T)
    )
    assert action_from_pb(
        _action(createSubOrchestration=pb.CreateSubOrchestrationAction(instanceId="k", name="c"))
    ) == act.CreateSubOrchestrationAction(9, "c", "k")
    assert action_from_pb(
        _action(
            sendEvent=pb.SendEventAction(
                instance=pb.OrchestrationInstance(instanceId="o"), name="n"
            )
        )
    ) == act.SendEventAction(9, "o", "n")
    assert action_from_pb(
        _action(
            terminateOrchestration=pb.TerminateOrchestrationAction(instanceId="o", recurse=True)
        )
    ) == act.TerminateOrchestrationAction("o", None, True)
    carried = event_to_pb(h.EventRaised(timestamp=T, name="n", input="1"))
    complete = action_from_pb(
        _action(
            completeOrchestration=pb.CompleteOrchestrationAction(
                orchestrationStatus=pb.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
                result=text(value="5"),
                newVersion=text(value="3"),
                carryoverEvents=[carried],
            )
        )
    )
    assert complete == act.CompleteOrchestrationAction(
        OrchestrationStatus.CONTINUED_AS_NEW,
        "5",
        new_version="3",
        carryover_events=(h.EventRaised(timestamp=T, name="n", input="1"),),
    )


def test_entity_events_carry_their_fields() -> None:
    by_kind = {kind: event_to_pb(event) for event, kind in EVENTS}
    signaled = by_kind["entityOperationSignaled"].entityOperationSignaled
    assert (signaled.requestId, signaled.operation, signaled.input.value) == ("r1", "add", "1")
    assert signaled.targetInstanceId.value == "@counter@a"
    assert signaled.scheduledTime.ToDatetime(tzinfo=UTC) == T
    assert by_kind["entityOperationCalled"].eventId == 8
    completed = by_kind["entityOperationCompleted"].entityOperationCompleted
    assert (completed.requestId, completed.output.value) == ("r2", "1")
    failed = by_kind["entityOperationFailed"].entityOperationFailed
    assert failure_from_pb(failed.failureDetails) == FAILURE
    assert list(by_kind["entityLockRequested"].entityLockRequested.lockSet) == ["@a@1", "@b@2"]
    assert by_kind["entityLockGranted"].entityLockGranted.criticalSectionId == "cs"
    unlock = by_kind["entityUnlockSent"].entityUnlockSent
    assert (unlock.criticalSectionId, unlock.targetInstanceId.value) == ("cs", "@a@1")


def _entity(**kind: object) -> pb.OrchestratorAction:
    return _action(sendEntityMessage=pb.SendEntityMessageAction(**kind))  # type: ignore[arg-type]


def test_entity_messages_map_to_entity_actions() -> None:
    text = wrappers_pb2.StringValue
    ts = event_to_pb(h.OrchestratorStarted(timestamp=T)).timestamp
    assert action_from_pb(
        _entity(
            entityOperationSignaled=pb.EntityOperationSignaledEvent(
                requestId="r",
                operation="add",
                input=text(value="1"),
                targetInstanceId=text(value="@counter@a"),
                scheduledTime=ts,
            )
        )
    ) == act.SignalEntityAction(9, "@counter@a", "add", "r", "1", T)
    assert action_from_pb(
        _entity(
            entityOperationCalled=pb.EntityOperationCalledEvent(
                requestId="r", operation="get", targetInstanceId=text(value="@counter@a")
            )
        )
    ) == act.CallEntityAction(9, "@counter@a", "get", "r")
    # Locks are taken in duratask's global order whatever order the worker sent.
    assert action_from_pb(
        _entity(
            entityLockRequested=pb.EntityLockRequestedEvent(
                criticalSectionId="cs", lockSet=["@b@2", "@a@1", "@b@2"]
            )
        )
    ) == act.LockEntitiesAction(9, "cs", ("@a@1", "@b@2"))
    assert action_from_pb(
        _entity(
            entityUnlockSent=pb.EntityUnlockSentEvent(
                criticalSectionId="cs", targetInstanceId=text(value="@a@1")
            )
        )
    ) == act.UnlockEntityAction(9, "cs", "@a@1")


def test_a_malformed_entity_message_fails_the_orchestration_saying_why() -> None:
    bad_target = _entity(
        entityOperationSignaled=pb.EntityOperationSignaledEvent(
            requestId="r", operation="add", targetInstanceId=wrappers_pb2.StringValue(value="x")
        )
    )
    with pytest.raises(ProtocolError, match="@name@key"):
        action_from_pb(bad_target)
    with pytest.raises(ProtocolError, match="carries nothing"):
        action_from_pb(_entity())
    reply = WorkerReply.of(pb.OrchestratorResponse(actions=[bad_target]))
    (failed,) = reply.actions
    assert isinstance(failed, act.CompleteOrchestrationAction)
    assert failed.status is OrchestrationStatus.FAILED
    assert failed.failure_details is not None
    assert failed.failure_details.error_type == "UnsupportedActionError"


def test_work_item_filters_become_the_seams_filter() -> None:
    default_queue = frozenset({"default"})
    assert work_filter(pb.GetWorkItemsRequest()) == WorkFilter(task_queues=default_queue)
    request = pb.GetWorkItemsRequest(
        workItemFilters=pb.WorkItemFilters(
            orchestrations=[
                pb.OrchestrationFilter(name="a"),
                pb.OrchestrationFilter(name="b", versions=["1", "2"]),
            ],
            activities=[pb.ActivityFilter(name="x")],
            entities=[pb.EntityFilter(name="Counter")],
        )
    )
    assert work_filter(request) == WorkFilter(
        orchestrations=frozenset({("a", None), ("b", "1"), ("b", "2")}),
        activities=frozenset({"x"}),
        entities=frozenset({"counter"}),  # entity names are case-insensitive, kept lower-case
        task_queues=default_queue,  # SDK workers serve the default task queue
    )


def _fresh_start() -> EpisodeInput:
    start = h.ExecutionStarted(
        timestamp=T, name="flow", input="1", instance_id="i", execution_id="e"
    )
    state = OrchestrationState(
        instance_id="i",
        name="flow",
        version=None,
        runtime_status=OrchestrationStatus.PENDING,
        created_at=T,
        last_updated_at=T,
    )
    return EpisodeInput("i", state, [], 0, [LockedMessage(1, OrchestrationMessage("i", start))])


def test_an_episode_is_planned_around_the_workers_reply() -> None:
    source, now = _fresh_start(), T + timedelta(seconds=1)
    request = prepare(source, now)
    assert isinstance(request, CodeRequest)
    assert request.past_events == [] and request.execution_id == "e"
    assert [type(e) for e in request.new_events] == [h.OrchestratorStarted, h.ExecutionStarted]
    reply = WorkerReply([act.ScheduleTaskAction(0, "a", input="1")], custom_status='"busy"')
    commit = finish(source, now, reply)
    assert isinstance(commit, OrchestrationCommit)
    assert [type(e) for e in commit.new_events] == [
        h.OrchestratorStarted,
        h.ExecutionStarted,
        h.TaskScheduled,
        h.OrchestratorCompleted,
    ]
    assert [a.name for a in commit.activities] == ["a"]
    assert commit.state.serialized_custom_status == '"busy"'
    assert list(commit.consumed_message_ids) == [1]


async def test_an_idle_stream_sends_health_pings() -> None:
    store = MemoryOrchestrationService()
    await store.open()
    streams = WorkItemStreams(store, owner_prefix="test/", ping_interval=0.05)
    stream = streams.serve(pb.GetWorkItemsRequest())
    first = await asyncio.wait_for(anext(stream), 5)
    assert first.HasField("healthPing")
    await stream.aclose()
    await streams.close()
    await store.close()


async def test_a_stream_whose_pump_fails_ends_with_its_error() -> None:
    store = MemoryOrchestrationService()
    await store.open()
    streams = WorkItemStreams(store, owner_prefix="test/", ping_interval=30)

    async def broken(stream: object) -> None:
        raise RuntimeError("renewals broke")

    streams._keep_alive = broken  # type: ignore[method-assign]
    stream = streams.serve(pb.GetWorkItemsRequest())
    with pytest.raises(RuntimeError, match="renewals broke"):
        await asyncio.wait_for(anext(stream), 5)
    await streams.close()
    await store.close()
