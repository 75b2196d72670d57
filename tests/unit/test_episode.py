"""run_episode: from a leased work item (history + messages) to the commit that records it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from duratask import history as h
from duratask._engine import OrchestrationExecutor
from duratask.backends.base import (
    ActivityRequest,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
)
from duratask.context import OrchestrationContext
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus
from duratask.task import when_all
from duratask.worker import _episode as episode_module
from duratask.worker._episode import Defer, EpisodeInput, plan_episode
from tests.unit.history_builder import T0, HistoryBuilder, payload, registry

NOW = T0 + timedelta(minutes=1)
S = OrchestrationStatus
PARENT = h.ParentInstanceInfo("boss", "boss-exec", "boss_orch", 4)


# -- orchestrations -----------------------------------------------------------------------------
async def workflow(ctx: OrchestrationContext, n: int) -> Any:
    ctx.send_event("peer", "hello", n)
    ctx.create_timer(timedelta(minutes=5))
    activity = ctx.call_activity("double", input=n)
    child = ctx.call_sub_orchestrator("child", input=n)
    return await when_all([activity, child])


async def echo(ctx: OrchestrationContext, value: Any) -> Any:
    return value


async def boom(ctx: OrchestrationContext, _: Any) -> Any:
    raise ValueError("kaput")


async def waits(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_activity("slow")


async def parent_of_two(ctx: OrchestrationContext, _: Any) -> Any:
    first = ctx.call_sub_orchestrator("child", instance_id="kid-a")
    second = ctx.call_sub_orchestrator("child", instance_id="kid-b")
    return await when_all([first, second])


async def restarting(ctx: OrchestrationContext, n: int) -> Any:
    item = await ctx.wait_for_external_event("item")
    ctx.continue_as_new(n + item, save_events=True)


EXECUTOR = OrchestrationExecutor(registry([workflow, echo, boom, waits, parent_of_two, restarting]))


# -- helpers ------------------------------------------------------------------------------------
def ids(prefix: str = "exec-new") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def row(status: OrchestrationStatus = S.RUNNING, name: str = "workflow") -> OrchestrationState:
    return OrchestrationState(
        instance_id="inst-1",
        name=name,
        version=None,
        runtime_status=status,
        created_at=T0,
        last_updated_at=T0,
        execution_id="exec-1",
    )


def start_event(
    name: str,
    input: Any = None,
    *,
    execution_id: str = "exec-1",
    parent: h.ParentInstanceInfo | None = None,
    scheduled_start_time: datetime | None = None,
) -> h.ExecutionStarted:
    return h.ExecutionStarted(
        timestamp=T0,
        name=name,
        input=payload(input),
        instance_id="inst-1",
        execution_id=execution_id,
        parent=parent,
        scheduled_start_time=scheduled_start_time,
    )


def work_item(
    history: list[h.HistoryEvent],
    *messages: h.HistoryEvent | tuple[h.HistoryEvent, str | None],
    state: OrchestrationState | None = None,
) -> OrchestrationWorkItem:
    """Messages are events (for the current execution) or (event, execution_id) pairs."""
    locked = []
    for number, m in enumerate(messages, start=100):
        event, execution_id = m if isinstance(m, tuple) else (m, None)
        locked.append(LockedMessage(number, OrchestrationMessage("inst-1", event, execution_id)))
    return OrchestrationWorkItem(
        instance_id="inst-1",
        lock_token="token",
        locked_until=NOW + timedelta(minutes=5),
        history=history,
        messages=locked,
        state=state if state is not None else row(),
    )


def run_episode(
    item: OrchestrationWorkItem,
    executor: OrchestrationExecutor,
    now: datetime,
    new_execution_id: Callable[[], str] | None = None,
) -> OrchestrationCommit | Defer:
    """What one episode on a leased work item decides."""
    ids_of = new_execution_id or ids()
    return plan_episode(EpisodeInput.of(item), executor, now, ids_of)[0]


def commit_of(item: OrchestrationWorkItem, **kwargs: Any) -> OrchestrationCommit:
    outcome = run_episode(item, EXECUTOR, NOW, kwargs.pop("new_execution_id", ids()))
    assert isinstance(outcome, OrchestrationCommit), outcome
    return outcome


def assert_unchanged(commit: OrchestrationCommit, state: OrchestrationState) -> None:
    """The messages are consumed and nothing else happens."""
    assert commit.state == state
    assert list(commit.consumed_message_ids) == [100]
    assert list(commit.new_events) == []
    assert list(commit.messages) == []
    assert list(commit.activities) == []
    assert commit.reset_history is False


# -- a new instance: actions become history events and messages ---------------------------------
def test_first_episode_turns_actions_into_events_activities_and_messages() -> None:
    start = start_event("workflow", 3)
    commit = commit_of(work_item([], start, state=row(S.PENDING)), new_execution_id=ids("kid"))

    fire_at = NOW + timedelta(minutes=5)
    assert list(commit.new_events) == [
        h.OrchestratorStarted(timestamp=NOW),
        start,
        h.EventSent(event_id=0, timestamp=NOW, instance_id="peer", name="hello", input="3"),
        h.TimerCreated(event_id=1, timestamp=NOW, fire_at=fire_at),
        h.TaskScheduled(event_id=2, timestamp=NOW, name="double", input="3"),
        h.SubOrchestrationInstanceCreated(
            event_id=3, timestamp=NOW, name="child", instance_id="inst-1:0003", input="3"
        ),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert list(commit.activities) == [ActivityRequest("inst-1", "exec-1", 2, "double", None, "3")]
    assert list(commit.messages) == [
        OrchestrationMessage("peer", h.EventRaised(timestamp=NOW, name="hello", input="3")),
        OrchestrationMessage(
            "inst-1",
            h.TimerFired(timestamp=fire_at, timer_id=1, fire_at=fire_at),
            "exec-1",
            fire_at,
        ),
        OrchestrationMessage(
            "inst-1:0003",
            h.ExecutionStarted(
                timestamp=NOW,
                name="child",
                input="3",
                instance_id="inst-1:0003",
                execution_id="kid-1",
                parent=h.ParentInstanceInfo("inst-1", "exec-1", "workflow", 3),
            ),
        ),
    ]
    assert list(commit.consumed_message_ids) == [100]
    assert commit.reset_history is False
    assert commit.state.runtime_status is S.RUNNING
    assert commit.state.serialized_input == "3"
    assert commit.state.execution_id == "exec-1"
    assert commit.state.last_updated_at == NOW


def test_completion_appends_execution_completed() -> None:
    commit = commit_of(work_item([], start_event("echo", {"a": 1}), state=row(S.PENDING)))

    assert commit.new_events[2:] == [
        h.ExecutionCompleted(timestamp=NOW, status=S.COMPLETED, result='{"a":1}'),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert list(commit.messages) == []  # no parent to tell
    assert commit.state.runtime_status is S.COMPLETED
    assert commit.state.serialized_output == '{"a":1}'
    assert commit.state.completed_at == NOW


def test_running_instance_applies_new_messages_after_its_history() -> None:
    history = HistoryBuilder().episode().started("waits").task_scheduled(0, "slow").done().build()
    result = h.TaskCompleted(timestamp=NOW, task_scheduled_id=0, result='"fast"')

    commit = commit_of(work_item(history, result))

    assert list(commit.new_events) == [
        h.OrchestratorStarted(timestamp=NOW),
        result,
        h.ExecutionCompleted(timestamp=NOW, status=S.COMPLETED, result='"fast"'),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert commit.reset_history is False
    assert list(commit.consumed_message_ids) == [100]
    assert commit.state.runtime_status is S.COMPLETED
    assert commit.state.created_at == T0


# -- sub-orchestration results go to the parent -------------------------------------------------
def test_completed_sub_orchestration_sends_its_result_to_the_parent() -> None:
    commit = commit_of(work_item([], start_event("echo", 5, parent=PARENT)))

    assert list(commit.messages) == [
        OrchestrationMessage(
            "boss",
            h.SubOrchestrationInstanceCompleted(timestamp=NOW, task_scheduled_id=4, result="5"),
            "boss-exec",
        )
    ]
    assert commit.state.parent_instance_id == "boss"


def test_failed_sub_orchestration_sends_its_failure_to_the_parent() -> None:
    commit = commit_of(work_item([], start_event("boom", parent=PARENT)))

    [message] = commit.messages
    assert (message.instance_id, message.execution_id) == ("boss", "boss-exec")
    assert isinstance(message.event, h.SubOrchestrationInstanceFailed)
    assert message.event.task_scheduled_id == 4
    assert message.event.failure_details.error_type == "ValueError"
    assert message.event.failure_details.message == "kaput"
    assert commit.state.runtime_status is S.FAILED
    assert commit.state.failure_details is not None
    assert commit.state.failure_details.message == "kaput"


def test_terminated_sub_orchestration_reports_a_failure_to_the_parent() -> None:
    history = HistoryBuilder().started("waits", parent=PARENT).task_scheduled(0, "slow").build()
    terminate = h.ExecutionTerminated(timestamp=NOW, input='"enough"')

    commit = commit_of(work_item(history, terminate))

    [message] = commit.messages
    assert message.instance_id == "boss" and message.execution_id == "boss-exec"
    assert isinstance(message.event, h.SubOrchestrationInstanceFailed)
    assert message.event.task_scheduled_id == 4
    assert message.event.failure_details.error_type == "OrchestrationTerminated"
    assert "enough" in message.event.failure_details.message
    assert commit.state.runtime_status is S.TERMINATED


# -- terminate recursion ------------------------------------------------------------------------
def open_children_history() -> list[h.HistoryEvent]:
    b = HistoryBuilder().episode().started("parent_of_two")
    b.sub_created(0, "child", "kid-a").sub_created(1, "child", "kid-b").done()
    return b.build()


@pytest.mark.parametrize("recurse", [True, False])
def test_terminate_sends_terminate_to_open_children_only_when_recursive(recurse: bool) -> None:
    terminate = h.ExecutionTerminated(timestamp=NOW, input='"stop"', recurse=recurse)
    done_a = h.SubOrchestrationInstanceCompleted(timestamp=NOW, task_scheduled_id=0)

    commit = commit_of(work_item(open_children_history(), done_a, terminate))

    expected = (
        [
            OrchestrationMessage(
                "kid-b", h.ExecutionTerminated(timestamp=NOW, input='"stop"', recurse=True)
            )
        ]
        if recurse
        else []
    )
    assert list(commit.messages) == expected  # kid-a already completed: nothing to terminate
    assert commit.new_events[-2:] == [
        h.ExecutionCompleted(timestamp=NOW, status=S.TERMINATED, result='"stop"'),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert commit.state.runtime_status is S.TERMINATED


# -- continue-as-new ----------------------------------------------------------------------------
@pytest.fixture
def one_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Episodes commit at each continue-as-new instead of running the next execution."""
    monkeypatch.setattr(episode_module, "GENERATIONS_PER_EPISODE", 1)


@pytest.mark.usefixtures("one_generation")
def test_continue_as_new_resets_history_and_sends_the_new_start_with_what_it_carries() -> None:
    history = HistoryBuilder().episode().started("restarting", 10, parent=PARENT).done().build()
    first = h.EventRaised(timestamp=NOW, name="item", input="1")
    second = h.EventRaised(timestamp=NOW, name="item", input="2")

    commit = commit_of(work_item(history, first, second), new_execution_id=ids("round"))

    assert commit.reset_history is True
    assert list(commit.new_events) == []
    # The second event came after the one that ended the execution: the new start carries
    # it, so it reaches the new execution ahead of anything sent meanwhile.
    assert list(commit.consumed_message_ids) == [100, 101]
    assert list(commit.messages) == [
        OrchestrationMessage(
            "inst-1",
            h.ExecutionStarted(
                timestamp=NOW,
                name="restarting",
                input="11",
                instance_id="inst-1",
                execution_id="round-1",
                parent=PARENT,
                carried_events=(second,),
            ),
        ),
    ]
    assert commit.state.runtime_status is S.CONTINUED_AS_NEW
    assert commit.state.serialized_input == "11"
    assert commit.state.serialized_output is None


def test_continue_as_new_runs_the_next_executions_in_the_same_episode() -> None:
    history = HistoryBuilder().episode().started("restarting", 10, parent=PARENT).done().build()
    first = h.EventRaised(timestamp=NOW, name="item", input="1")
    second = h.EventRaised(timestamp=NOW, name="item", input="2")

    commit = commit_of(work_item(history, first, second), new_execution_id=ids("round"))

    # 10 + 1, then 11 + 2: the third execution waits for its item.
    assert commit.reset_history is True
    assert list(commit.consumed_message_ids) == [100, 101]
    assert list(commit.messages) == []
    assert list(commit.new_events) == [
        h.OrchestratorStarted(timestamp=NOW),
        h.ExecutionStarted(
            timestamp=NOW,
            name="restarting",
            input="13",
            instance_id="inst-1",
            execution_id="round-2",
            parent=PARENT,
        ),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert commit.state.runtime_status is S.RUNNING
    assert commit.state.execution_id == "round-2"
    assert commit.state.serialized_input == "13"


async def keeps_some(ctx: OrchestrationContext, n: int) -> Any:
    """Receives events while it waits for an activity, then continues as new."""
    await ctx.call_activity("step")
    item = await ctx.wait_for_external_event("item")
    ctx.continue_as_new(n + item, save_events=True)


@pytest.mark.usefixtures("one_generation")
def test_the_new_start_carries_received_events_ahead_of_those_not_yet_applied() -> None:
    executor = OrchestrationExecutor(registry([keeps_some]))
    history = (
        HistoryBuilder().episode().started("keeps_some", 0).task_scheduled(0, "step").done().build()
    )
    one, two, three = (h.EventRaised(timestamp=NOW, name="item", input=str(i)) for i in (1, 2, 3))
    done = h.TaskCompleted(timestamp=NOW, task_scheduled_id=0, result=None)
    stale = (h.TaskCompleted(timestamp=NOW, task_scheduled_id=0, result=None), "exec-1")
    item = work_item(history, one, two, done, three, stale)

    outcome = run_episode(item, executor, NOW, ids("round"))

    assert isinstance(outcome, OrchestrationCommit)
    # 1 is consumed; 2 was received before the end and 3 came after it: both go on, in
    # their order; the result for the old execution does not.
    assert list(outcome.consumed_message_ids) == [100, 101, 102, 103, 104]
    [start_message] = outcome.messages
    start = start_message.event
    assert isinstance(start, h.ExecutionStarted)
    assert start.input == "1"
    assert start.carried_events == (two, three)


def test_a_start_delivers_its_carried_events_first_and_records_them_as_history() -> None:
    carried = tuple(h.EventRaised(timestamp=NOW, name="go", input=str(i)) for i in (1, 2))
    later = h.EventRaised(timestamp=NOW, name="go", input="3")
    start = replace(start_event("waits", execution_id="exec-2"), carried_events=carried)
    item = work_item([], start, later, state=row(S.CONTINUED_AS_NEW, name="waits"))

    commit = commit_of(item)

    recorded = list(commit.new_events)
    assert recorded[1] == replace(start, carried_events=None)
    assert recorded[2:5] == [*carried, later]
    assert list(commit.consumed_message_ids) == [100, 101]


async def restarts_at_once(ctx: OrchestrationContext, rounds: int) -> Any:
    """Continues as new before it reads any event, until ``rounds`` is 0."""
    if rounds > 0:
        ctx.continue_as_new(rounds - 1)
        return None
    return await ctx.wait_for_external_event("go")


@pytest.mark.usefixtures("one_generation")
def test_events_an_execution_never_applied_are_passed_on_whatever_save_events() -> None:
    executor = OrchestrationExecutor(registry([restarts_at_once]))
    carried = tuple(h.EventRaised(timestamp=NOW, name="go", input=str(i)) for i in (1, 2))
    later = h.EventRaised(timestamp=NOW, name="go", input="3")
    start = start_event("restarts_at_once", 1, execution_id="exec-2")
    start = replace(start, carried_events=carried)
    item = work_item([], start, later, state=row(S.CONTINUED_AS_NEW, name="restarts_at_once"))

    outcome = run_episode(item, executor, NOW, ids("round"))

    assert isinstance(outcome, OrchestrationCommit)
    assert list(outcome.consumed_message_ids) == [100, 101]
    [message] = outcome.messages
    assert isinstance(message.event, h.ExecutionStarted)
    assert message.event.carried_events == (*carried, later)


def test_generations_that_continue_at_once_are_bounded_per_episode() -> None:
    executor = OrchestrationExecutor(registry([restarts_at_once]))
    start = start_event("restarts_at_once", 1000, execution_id="exec-2")
    item = work_item([], start, state=row(S.PENDING, name="restarts_at_once"))

    outcome = run_episode(item, executor, NOW, ids("round"))

    assert isinstance(outcome, OrchestrationCommit)
    [message] = outcome.messages
    assert isinstance(message.event, h.ExecutionStarted)
    assert message.event.input == str(1000 - episode_module.GENERATIONS_PER_EPISODE)
    assert outcome.state.runtime_status is S.CONTINUED_AS_NEW


# -- message reconciliation ---------------------------------------------------------------------
def test_duplicate_start_of_a_running_instance_is_ignored_and_the_parent_told() -> None:
    history = HistoryBuilder().episode().started("waits").task_scheduled(0, "slow").done().build()
    again = start_event("waits", execution_id="exec-2", parent=PARENT)

    commit = commit_of(work_item(history, again))

    assert list(commit.new_events) == [
        h.OrchestratorStarted(timestamp=NOW),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert list(commit.consumed_message_ids) == [100]
    [message] = commit.messages
    assert (message.instance_id, message.execution_id) == ("boss", "boss-exec")
    assert isinstance(message.event, h.SubOrchestrationInstanceFailed)
    assert message.event.task_scheduled_id == 4
    assert message.event.failure_details.error_type == "OrchestrationAlreadyExistsError"
    assert commit.state.execution_id == "exec-1"


def test_two_starts_for_a_new_instance_first_one_wins() -> None:
    first = start_event("echo", "first")
    second = start_event("echo", "second", execution_id="exec-2")

    commit = commit_of(work_item([], first, second, state=row(S.PENDING)))

    assert commit.new_events[1] == first
    assert commit.state.serialized_output == '"first"'
    assert list(commit.consumed_message_ids) == [100, 101]


def test_messages_for_a_completed_instance_are_dropped() -> None:
    b = HistoryBuilder().episode().started("echo", 1)
    b.add(h.ExecutionCompleted(timestamp=T0, status=S.COMPLETED, result="1")).done()
    state = row(S.COMPLETED, "echo")
    late = h.EventRaised(timestamp=NOW, name="late")

    commit = commit_of(work_item(b.build(), late, state=state))

    assert_unchanged(commit, state)


def test_messages_for_an_instance_that_never_started_are_dropped() -> None:
    state = row(S.PENDING)
    late = h.TaskCompleted(timestamp=NOW, task_scheduled_id=0)

    commit = commit_of(work_item([], late, state=state))

    assert_unchanged(commit, state)


def test_completed_instance_started_again_gets_a_fresh_history() -> None:
    b = HistoryBuilder().episode().started("echo", 1)
    b.add(h.ExecutionCompleted(timestamp=T0, status=S.COMPLETED, result="1")).done()
    restart = start_event("echo", 2, execution_id="exec-2")

    commit = commit_of(work_item(b.build(), restart, state=row(S.COMPLETED, "echo")))

    assert commit.reset_history is True
    assert commit.new_events[:2] == [h.OrchestratorStarted(timestamp=NOW), restart]
    assert commit.state.serialized_output == "2"
    assert commit.state.execution_id == "exec-2"


def test_stale_execution_messages_are_dropped() -> None:
    history = HistoryBuilder(execution_id="exec-2").episode().started("waits")
    history.task_scheduled(0, "slow").done()
    stale = h.TaskCompleted(timestamp=NOW, task_scheduled_id=0, result='"old"')
    current = h.TaskCompleted(timestamp=NOW, task_scheduled_id=0, result='"new"')

    commit = commit_of(work_item(history.build(), (stale, "exec-1"), (current, "exec-2")))

    assert current in commit.new_events
    assert stale not in commit.new_events
    assert list(commit.consumed_message_ids) == [100, 101]
    assert commit.state.serialized_output == '"new"'


# -- scheduled starts ---------------------------------------------------------------------------
def test_scheduled_start_in_the_future_is_deferred() -> None:
    later = NOW + timedelta(hours=1)
    item = work_item([], start_event("echo", 1, scheduled_start_time=later), state=row(S.PENDING))

    assert run_episode(item, EXECUTOR, NOW) == Defer(later)


def test_scheduled_start_that_is_due_runs() -> None:
    item = work_item([], start_event("echo", 1, scheduled_start_time=NOW), state=row(S.PENDING))

    commit = commit_of(item)
    assert commit.state.runtime_status is S.COMPLETED


def test_scheduled_start_with_a_pending_terminate_is_terminated_now() -> None:
    later = NOW + timedelta(hours=1)
    start = start_event("waits", scheduled_start_time=later)
    terminate = h.ExecutionTerminated(timestamp=NOW, input='"cancelled"')

    commit = commit_of(work_item([], start, terminate, state=row(S.PENDING)))

    assert list(commit.activities) == []
    assert list(commit.new_events) == [
        h.OrchestratorStarted(timestamp=NOW),
        start,
        terminate,
        h.ExecutionCompleted(timestamp=NOW, status=S.TERMINATED, result='"cancelled"'),
        h.OrchestratorCompleted(timestamp=NOW),
    ]
    assert commit.state.runtime_status is S.TERMINATED
    assert list(commit.consumed_message_ids) == [100, 101]


def test_failure_details_reach_the_state() -> None:
    commit = commit_of(work_item([], start_event("boom"), state=row(S.PENDING)))

    completed = commit.new_events[-2]
    assert isinstance(completed, h.ExecutionCompleted)
    assert completed.status is S.FAILED
    assert isinstance(completed.failure_details, FailureDetails)
    assert completed.failure_details.error_type == "ValueError"
    assert commit.state.failure_details == completed.failure_details


# -- a scheduled start held back while other messages arrive -------------------------------------
def _scheduled_row(start_at: datetime) -> OrchestrationState:
    from dataclasses import replace

    return replace(row(S.PENDING), scheduled_start_at=start_at)


def test_event_for_an_instance_waiting_for_its_scheduled_start_is_held_too() -> None:
    later = NOW + timedelta(hours=1)
    event = h.EventRaised(timestamp=NOW, name="early")

    outcome = run_episode(work_item([], event, state=_scheduled_row(later)), EXECUTOR, NOW)

    assert outcome == Defer(later)


def test_terminate_while_the_scheduled_start_is_held_back_terminates_now() -> None:
    later = NOW + timedelta(hours=1)
    terminate = h.ExecutionTerminated(timestamp=NOW, input=payload("stop"))

    commit = commit_of(work_item([], terminate, state=_scheduled_row(later)))

    assert commit.state.runtime_status is S.TERMINATED
    assert commit.state.serialized_output == payload("stop")
    assert [type(e) for e in commit.new_events] == [
        h.OrchestratorStarted,
        h.ExecutionStarted,
        h.ExecutionTerminated,
        h.ExecutionCompleted,
        h.OrchestratorCompleted,
    ]
    # The start is rebuilt from the row, so the history begins like any other.
    start = commit.new_events[1]
    assert isinstance(start, h.ExecutionStarted)
    row_state = _scheduled_row(later)
    assert (start.name, start.execution_id, start.input, start.scheduled_start_time) == (
        row_state.name,
        row_state.execution_id,
        row_state.serialized_input,
        later,
    )


def test_held_back_start_of_a_terminated_execution_is_dropped_when_it_arrives() -> None:
    terminated = [
        h.OrchestratorStarted(timestamp=T0),
        h.ExecutionTerminated(timestamp=T0, input=None),
        h.ExecutionCompleted(timestamp=T0, status=S.TERMINATED),
        h.OrchestratorCompleted(timestamp=T0),
    ]
    state = row(S.TERMINATED)
    start = start_event("workflow", 1, execution_id="exec-1", scheduled_start_time=NOW)

    commit = commit_of(work_item(terminated, start, state=state))

    assert_unchanged(commit, state)


def test_events_for_an_instance_between_executions_wait_for_its_new_start() -> None:
    event = h.EventRaised(timestamp=NOW, name="add")

    outcome = run_episode(work_item([], event, state=row(S.CONTINUED_AS_NEW)), EXECUTOR, NOW)

    assert isinstance(outcome, Defer) and outcome.retry_at > NOW
