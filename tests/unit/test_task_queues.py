"""Task queues without a store: where an episode sends its work, how the events keep the
queue, what bad names raise, and how ``why_waiting`` names a queue nobody serves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask._engine import OrchestrationExecutor
from duratask._waiting import why_waiting
from duratask.backends.base import OrchestrationCommit, WorkerInfo, WorkFilter
from duratask.context import OrchestrationContext
from duratask.state import OrchestrationState, OrchestrationStatus
from duratask.task import when_all
from duratask.worker._episode import EpisodeInput, plan_episode
from tests.unit.history_builder import T0, payload, registry
from tests.unit.test_episode import NOW, ids, row, work_item

S = OrchestrationStatus


async def routes(ctx: OrchestrationContext, _: Any) -> Any:
    own = ctx.call_activity("own")
    gpu = ctx.call_activity("draw", task_queue="gpu")
    child = ctx.call_sub_orchestrator("kid", instance_id="kid-1")
    moved = ctx.call_sub_orchestrator("kid", instance_id="kid-2", task_queue="batch")
    return await when_all([own, gpu, child, moved])


async def bad_queue(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_activity("own", task_queue="")


EXECUTOR = OrchestrationExecutor(registry([routes, bad_queue]))


def first_commit(name: str, task_queue: str) -> OrchestrationCommit:
    start = h.ExecutionStarted(
        timestamp=T0,
        name=name,
        input=payload(None),
        instance_id="inst-1",
        execution_id="exec-1",
        task_queue=task_queue,
    )
    item = work_item([], start, state=row(S.PENDING, name=name))
    outcome = plan_episode(EpisodeInput.of(item), EXECUTOR, NOW, ids())[0]
    assert isinstance(outcome, OrchestrationCommit), outcome
    return outcome


def test_work_goes_to_the_instance_queue_unless_the_call_names_another() -> None:
    commit = first_commit("routes", "payments")
    assert [(a.name, a.task_queue) for a in commit.activities] == [
        ("own", "payments"),
        ("draw", "gpu"),
    ]
    starts = [m.event for m in commit.messages if isinstance(m.event, h.ExecutionStarted)]
    assert [(s.instance_id, s.task_queue) for s in starts] == [
        ("kid-1", "payments"),
        ("kid-2", "batch"),
    ]
    recorded = [
        (type(e).__name__, e.task_queue)
        for e in commit.new_events
        if isinstance(e, h.TaskScheduled | h.SubOrchestrationInstanceCreated)
    ]
    assert recorded == [
        ("TaskScheduled", "payments"),
        ("TaskScheduled", "gpu"),
        ("SubOrchestrationInstanceCreated", "payments"),
        ("SubOrchestrationInstanceCreated", "batch"),
    ]
    assert commit.state.task_queue == "payments"


def test_an_invalid_queue_name_fails_the_orchestration_naming_it() -> None:
    commit = first_commit("bad_queue", "default")
    assert commit.state.runtime_status is S.FAILED
    assert commit.state.failure_details is not None
    assert "task queue" in commit.state.failure_details.message


def test_events_keep_the_queue_and_leave_the_default_out_of_their_json() -> None:
    default = h.TaskScheduled(event_id=1, timestamp=T0, name="a")
    routed = h.TaskScheduled(event_id=1, timestamp=T0, name="a", task_queue="gpu")
    assert "task_queue" not in default.to_dict()  # histories from before read the same
    assert routed.to_dict()["task_queue"] == "gpu"
    assert h.event_from_json(h.event_to_json(routed)) == routed
    read_back = h.event_from_json(h.event_to_json(default))
    assert isinstance(read_back, h.TaskScheduled) and read_back.task_queue == "default"


def test_bad_queue_names_raise_before_anything_is_stored() -> None:
    with pytest.raises(TypeError, match="task_queues"):
        dt.TaskHubWorker("memory://", task_queues="payments")
    with pytest.raises(ValueError, match="at least one"):
        dt.TaskHubWorker("memory://", task_queues=[])
    with pytest.raises(ValueError, match="task queue"):
        dt.TaskHubWorker("memory://", task_queues=["ok", "bad\n"])
    with dt.TaskHubClient("memory://") as client:
        with pytest.raises(ValueError, match="task queue"):
            client.schedule_new_orchestration("greet", task_queue="")
        assert client.query_orchestrations().states == []


def test_a_worker_filter_serves_its_queues() -> None:
    assert WorkFilter(task_queues=frozenset({"a"})).serves_queue("a")
    assert not WorkFilter(task_queues=frozenset({"a"})).serves_queue("b")
    assert WorkFilter().serves_queue("anything")


def worker(*queues: str, runs: tuple[str, ...] = ("greet",)) -> WorkerInfo:
    return WorkerInfo(
        worker_id="w",
        host="h",
        pid=1,
        started_at=T0,
        heartbeat_at=T0,
        orchestrations=frozenset((name, None) for name in runs),
        activities=frozenset({"ship"}),
        task_queues=frozenset(queues),
    )


def pending(task_queue: str, status: OrchestrationStatus = S.PENDING) -> OrchestrationState:
    return OrchestrationState(
        instance_id="i",
        name="greet",
        version=None,
        runtime_status=status,
        created_at=T0,
        last_updated_at=T0,
        task_queue=task_queue,
    )


def test_why_waiting_names_a_queue_no_connected_worker_serves() -> None:
    reason = why_waiting(pending("payments"), None, [worker("default")])
    assert reason is not None
    assert reason.startswith("no connected worker serves task queue 'payments'")
    assert why_waiting(pending("payments"), None, [worker("default", "payments")]) is None
    # With no worker at all, the default queue still says what is missing.
    reason = why_waiting(pending("default"), None, [])
    assert reason is not None and "has registered orchestration 'greet'" in reason
    # A worker serves the queue but did not register the orchestration.
    reason = why_waiting(pending("payments"), None, [worker("payments", runs=())])
    assert reason is not None
    assert "no connected worker on task queue 'payments' has registered" in reason


def test_why_waiting_names_the_queue_of_an_awaited_activity() -> None:
    running = pending("default", S.RUNNING)
    history: list[h.HistoryEvent] = [
        h.TaskScheduled(event_id=0, timestamp=T0, name="ship", task_queue="gpu"),
        h.TaskScheduled(event_id=1, timestamp=T0 + timedelta(seconds=1), name="ship"),
    ]
    reason = why_waiting(running, history, [worker("default")])
    assert reason is not None and reason.startswith(
        "no connected worker serves task queue 'gpu' (1 worker(s) connected)"
    )
