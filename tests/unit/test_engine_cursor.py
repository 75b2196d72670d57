"""A live cursor fed only new events decides exactly what a full replay decides."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from duratask import _actions as act
from duratask import history as h
from duratask._engine import ExecutionResult, OrchestrationExecutor
from duratask.context import OrchestrationContext
from duratask.task import when_all, when_any
from tests.unit.history_builder import EXECUTION_ID, INSTANCE_ID, SEC, T0, registry


async def busy(ctx: OrchestrationContext, n: int) -> Any:
    ctx.set_custom_status("started")
    first = await ctx.call_activity("inc", input=n)
    fanned = await when_all([ctx.call_activity("inc", input=i) for i in range(first)])
    await ctx.create_timer(timedelta(seconds=5))
    ctx.set_custom_status({"fanned": len(fanned)})
    approval = ctx.wait_for_external_event("approve")
    winner = await when_any([approval, ctx.create_timer(timedelta(hours=1))])
    got = winner.get_result() if winner is approval else None
    ctx.send_event("observer", "done", data=got)
    return [first, sum(fanned), got, str(ctx.new_uuid())]


def _to_history(action: act.OrchestratorAction, now: Any) -> list[h.HistoryEvent]:
    if isinstance(action, act.ScheduleTaskAction):
        return [
            h.TaskScheduled(event_id=action.id, timestamp=now, name=action.name, input=action.input)
        ]
    if isinstance(action, act.CreateTimerAction):
        return [h.TimerCreated(event_id=action.id, timestamp=now, fire_at=action.fire_at)]
    if isinstance(action, act.SendEventAction):
        return [
            h.EventSent(
                event_id=action.id, timestamp=now, instance_id=action.instance_id, name=action.name
            )
        ]
    assert isinstance(action, act.CompleteOrchestrationAction)
    return [h.ExecutionCompleted(timestamp=now, status=action.status, result=action.result)]


def _responses(result: ExecutionResult, now: Any) -> list[h.HistoryEvent]:
    """What the outside world sends back for an episode's actions (one event per episode)."""
    out: list[h.HistoryEvent] = []
    for action in result.actions:
        if isinstance(action, act.ScheduleTaskAction):
            value = json.loads(action.input or "0") + 1
            out.append(
                h.TaskCompleted(timestamp=now, task_scheduled_id=action.id, result=str(value))
            )
        elif isinstance(action, act.CreateTimerAction) and action.fire_at - now < timedelta(
            minutes=1
        ):
            out.append(h.TimerFired(timestamp=now, timer_id=action.id, fire_at=action.fire_at))
    if not out and not any(isinstance(a, act.CompleteOrchestrationAction) for a in result.actions):
        out.append(h.EventRaised(timestamp=now, name="approve", input='"yes"'))
    return out


def test_cursor_matches_full_replay_episode_by_episode() -> None:
    executor = OrchestrationExecutor(registry([busy]))
    start = h.ExecutionStarted(
        timestamp=T0, name="busy", input="2", instance_id=INSTANCE_ID, execution_id=EXECUTION_ID
    )
    history: list[h.HistoryEvent] = []
    new: list[h.HistoryEvent] = [h.OrchestratorStarted(timestamp=T0), start]
    cursor = executor.cursor(INSTANCE_ID, [])
    for episode in range(1, 50):
        now = T0 + episode * SEC
        live = cursor.run(new)
        fresh = executor.execute(INSTANCE_ID, history, new)
        assert live == fresh, f"episode {episode}"
        cursor.committed()
        history += new
        for action in live.actions:
            history += _to_history(action, now)
        history.append(h.OrchestratorCompleted(timestamp=now))
        if live.completion is not None:
            assert live.completion.result is not None
            assert json.loads(live.completion.result)[:3] == [3, 6, "yes"]
            return
        new = [h.OrchestratorStarted(timestamp=now), *_responses(live, now)]
    raise AssertionError("the orchestration never completed")


def test_awaits_only_tells_a_single_wait_from_a_fan_in() -> None:
    from duratask._engine.replay_context import ReplayContext
    from duratask._registry import Registry
    from duratask.converter import PayloadCodec

    ctx = ReplayContext("i", Registry(), PayloadCodec())
    ctx.call_activity("a")
    assert ctx.awaits_only(0)
    ctx.call_activity("b")
    assert not ctx.awaits_only(0), "two results outstanding: a fan-in"
    assert ctx.awaits(1) and not ctx.awaits(2)
