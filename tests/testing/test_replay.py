"""Replaying recorded histories with new code: non-determinism is caught before a deploy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask import _actions as act
from duratask import history as h
from duratask.testing import (
    HistoryMismatchError,
    ReplayFailedError,
    TimeSkippingHub,
    replay,
    replay_many,
)

T0 = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
ORDER = {"id": 7, "amount": 12.5, "items": ["a", "b"]}


def charge(ctx: dt.ActivityContext, order: dict[str, Any]) -> dict[str, Any]:
    return {"order": order["id"], "charged": order["amount"]}


def charge_card(ctx: dt.ActivityContext, order: dict[str, Any]) -> dict[str, Any]:
    return {"order": order["id"], "charged": order["amount"]}


def ship(ctx: dt.ActivityContext, item: str) -> str:
    return f"shipped {item}"


def notify(ctx: dt.ActivityContext, order_id: int) -> None:
    return None


async def process_order(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    receipt = await ctx.call_activity(charge, input=order)
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    shipped = await dt.when_all([ctx.call_activity(ship, input=i) for i in order["items"]])
    await ctx.create_timer(timedelta(hours=1))
    return {"receipt": receipt, "approved": approved, "shipped": shipped}


# -- changed versions of process_order --------------------------------------------------------


async def activity_renamed(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    receipt = await ctx.call_activity(charge_card, input=order)
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    shipped = await dt.when_all([ctx.call_activity(ship, input=i) for i in order["items"]])
    await ctx.create_timer(timedelta(hours=1))
    return {"receipt": receipt, "approved": approved, "shipped": shipped}


async def steps_reordered(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    receipt = await ctx.call_activity(charge, input=order)
    shipped = await dt.when_all([ctx.call_activity(ship, input=i) for i in order["items"]])
    await ctx.create_timer(timedelta(hours=1))
    return {"receipt": receipt, "approved": approved, "shipped": shipped}


async def middle_step_removed(
    ctx: dt.OrchestrationContext, order: dict[str, Any]
) -> dict[str, Any]:
    receipt = await ctx.call_activity(charge, input=order)
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    await ctx.create_timer(timedelta(hours=1))
    return {"receipt": receipt, "approved": approved, "shipped": []}


async def last_step_removed(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    receipt = await ctx.call_activity(charge, input=order)
    approved = await ctx.wait_for_external_event("approval", timeout=timedelta(days=3))
    shipped = await dt.when_all([ctx.call_activity(ship, input=i) for i in order["items"]])
    return {"receipt": receipt, "approved": approved, "shipped": shipped}


async def step_added_at_end(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> dict[str, Any]:
    result = await process_order(ctx, order)
    await ctx.call_activity(notify, input=order["id"])
    return result


# -- recording ---------------------------------------------------------------------------------


async def record(orchestration: Any = process_order) -> tuple[str, str, dict[str, Any]]:
    """Run an order on a memory hub; return its history JSON while it waits for approval,
    its history JSON once completed, and its output."""
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(orchestration, activities=(charge, ship))
        iid = await hub.client.schedule_new_orchestration(
            orchestration, input=ORDER, instance_id="order-7"
        )
        await hub.wait_until_idle()
        waiting = h.history_to_json(await hub.client.get_orchestration_history(iid))
        await hub.client.raise_orchestration_event(iid, "approval", data="alice")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
        done = h.history_to_json(await hub.client.get_orchestration_history(iid))
    return waiting, done, state.output


@pytest.fixture
async def recorded() -> tuple[str, str, dict[str, Any]]:
    return await record()


def position_of(history_json: str, predicate: Any) -> int:
    events = h.history_from_json(history_json)
    return next(i for i, e in enumerate(events) if predicate(e))


# -- same code -----------------------------------------------------------------------------------


async def test_the_same_code_replays_a_completed_history(recorded: Any) -> None:
    _, done, output = recorded
    result = replay(process_order, done)

    assert result.status is dt.OrchestrationStatus.COMPLETED
    assert result.output == output
    assert result.output["approved"] == "alice"
    assert result.next_actions == ()
    assert result.instance_id == "order-7"
    assert result.name == "process_order"
    assert result.events_replayed == len(json.loads(done))


async def test_a_list_of_events_and_a_file_are_accepted(recorded: Any, tmp_path: Path) -> None:
    _, done, output = recorded
    assert replay(process_order, h.history_from_json(done)).output == output
    path = tmp_path / "order-7.json"
    path.write_text(done)
    assert replay(process_order, path).output == output


async def test_an_incomplete_history_reports_what_the_code_does_next(recorded: Any) -> None:
    waiting, done, _ = recorded
    result = replay(process_order, waiting)
    assert result.status is dt.OrchestrationStatus.RUNNING
    assert result.output is None
    assert result.next_actions == ()  # it waits for the approval (or its timeout)

    # The approval delivered but not yet acted on: the code would ship both items next.
    events = h.history_from_json(done)
    raised = next(i for i, e in enumerate(events) if isinstance(e, h.EventRaised))
    result = replay(process_order, events[: raised + 1])
    assert result.status is dt.OrchestrationStatus.RUNNING
    assert result.next_steps == ["call activity 'ship'", "call activity 'ship'"]
    assert all(isinstance(a, act.ScheduleTaskAction) for a in result.next_actions)
    inputs = [a.input for a in result.next_actions if isinstance(a, act.ScheduleTaskAction)]
    assert inputs == ['"a"', '"b"']


async def test_new_steps_after_the_end_of_an_incomplete_history_are_next_actions(
    recorded: Any,
) -> None:
    events = h.history_from_json(recorded[1])
    fired = max(i for i, e in enumerate(events) if isinstance(e, h.TimerFired))
    result = replay(step_added_at_end, events[: fired + 1])
    assert result.status is dt.OrchestrationStatus.RUNNING
    assert result.next_steps == ["call activity 'notify'"]


# -- changed code ----------------------------------------------------------------------------


async def test_a_renamed_activity_is_named(recorded: Any) -> None:
    waiting, done, _ = recorded
    for history in (waiting, done):
        with pytest.raises(HistoryMismatchError) as caught:
            replay(activity_renamed, history)
        message = str(caught.value)
        assert "'charge'" in message and "'charge_card'" in message
        assert "sequence #0" in message
        assert caught.value.position == position_of(
            history, lambda e: isinstance(e, h.TaskScheduled)
        )
        assert isinstance(caught.value, dt.NonDeterminismError)


async def test_reordered_steps_are_named(recorded: Any) -> None:
    with pytest.raises(dt.NonDeterminismError, match=r"activity 'charge'.*a timer") as caught:
        replay(steps_reordered, recorded[1])
    assert "order of steps" in str(caught.value)


async def test_a_removed_middle_step_is_named(recorded: Any) -> None:
    with pytest.raises(HistoryMismatchError, match=r"activity 'ship'.*a timer") as caught:
        replay(middle_step_removed, recorded[1])
    assert isinstance(caught.value.event, h.TaskScheduled)
    assert caught.value.event.name == "ship"


async def test_a_removed_last_step_is_named(recorded: Any) -> None:
    done = recorded[1]
    with pytest.raises(HistoryMismatchError, match=r"a timer at sequence #\d+.*removed") as caught:
        replay(last_step_removed, done)
    assert isinstance(caught.value.event, h.TimerCreated)
    assert caught.value.position == position_of(
        done, lambda e: isinstance(e, h.TimerCreated) and e.event_id > 1
    )


async def test_a_step_added_to_a_completed_history_is_named(recorded: Any) -> None:
    with pytest.raises(HistoryMismatchError, match=r"call activity 'notify'.*added"):
        replay(step_added_at_end, recorded[1])


async def test_a_different_end_is_reported() -> None:
    async def fails(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> None:
        raise RuntimeError("new bug")

    async def recorded_instantly(ctx: dt.OrchestrationContext, _: None) -> str:
        return "ok"

    async with TimeSkippingHub(start=T0) as hub:
        hub.register(recorded_instantly)
        state = await hub.client.wait_for_orchestration_completion(
            await hub.client.schedule_new_orchestration(recorded_instantly), timeout=10
        )
        history = await hub.client.get_orchestration_history(state.instance_id)
    with pytest.raises(
        HistoryMismatchError, match=r"ends with the orchestration COMPLETED.*FAILED.*new bug"
    ):
        replay(fails, history)


# -- names registered under other names --------------------------------------------------------


def send(ctx: dt.ActivityContext, to: str) -> str:
    return f"sent to {to}"


async def mailer(ctx: dt.OrchestrationContext, to: str) -> str:
    sent: str = await ctx.call_activity(send, input=to)
    return sent


async def test_activities_registered_under_other_names_resolve_as_on_the_worker() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.worker.add_orchestration(mailer, name="mail.flow")
        hub.worker.add_activity(send, name="mail.send")
        iid = await hub.client.schedule_new_orchestration("mail.flow", input="eve")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        history = await hub.client.get_orchestration_history(iid)
    assert state.output == "sent to eve"

    result = replay(mailer, history, activities={"mail.send": send})
    assert result.output == "sent to eve"
    assert result.name == "mail.flow"
    with pytest.raises(HistoryMismatchError, match=r"'mail\.send'.*'send'"):
        replay(mailer, history)


# -- failures recorded ---------------------------------------------------------------------------


def declined(ctx: dt.ActivityContext, order: dict[str, Any]) -> None:
    raise ValueError("card declined")


async def declined_order(ctx: dt.OrchestrationContext, order: dict[str, Any]) -> None:
    await ctx.call_activity(declined, input=order)


async def test_a_failed_history_replays_to_the_same_failure() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(declined_order, activities=(declined,))
        iid = await hub.client.schedule_new_orchestration(declined_order, input=ORDER)
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        history = await hub.client.get_orchestration_history(iid)
    assert state.runtime_status is dt.OrchestrationStatus.FAILED

    result = replay(declined_order, history)
    assert result.status is dt.OrchestrationStatus.FAILED
    assert result.failure is not None and "card declined" in result.failure.message
    assert result.output is None


# -- many histories ------------------------------------------------------------------------------


async def test_replay_many_reads_a_directory_and_lists_every_mismatch(
    recorded: Any, tmp_path: Path
) -> None:
    waiting, done, output = recorded
    (tmp_path / "a-waiting.json").write_text(waiting)
    (tmp_path / "b-done.json").write_text(done)
    (tmp_path / "notes.txt").write_text("not a history")

    results = replay_many(process_order, tmp_path)
    assert [r.source for r in results] == [
        str(tmp_path / "a-waiting.json"),
        str(tmp_path / "b-done.json"),
    ]
    assert [r.status for r in results] == [
        dt.OrchestrationStatus.RUNNING,
        dt.OrchestrationStatus.COMPLETED,
    ]
    assert results[1].output == output

    with pytest.raises(ReplayFailedError, match="2 of 2 histories") as caught:
        replay_many({"process_order": activity_renamed}, tmp_path)
    assert [m.source for m in caught.value.mismatches] == [r.source for r in results]
    assert "a-waiting.json" in str(caught.value) and "b-done.json" in str(caught.value)

    with pytest.raises(ValueError, match="no orchestration named 'process_order'"):
        replay_many([mailer], [done])


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("history.json", "not JSON text"),
        ('{"events": []}', "expected a JSON array"),
        ("[1]", "event #0 is not valid"),
        ('[{"type": "NO_SUCH_EVENT"}]', "unknown history event type"),
        ('[{"type": "TIMER_FIRED", "timestamp": "2024-01-01T00:00:00+00:00"}]', "event #0"),
        ("[]", "empty JSON array"),
        (
            '[{"type": "OrchestratorStarted", "timestamp": "2024-01-01T00:00:00Z"}]',
            "no ExecutionStarted",
        ),
    ],
)
def test_input_that_is_not_a_history_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(process_order, text)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the history file"):
        replay(process_order, tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not a directory"):
        replay_many(process_order, tmp_path / "missing")


async def test_a_terminated_history_replays_to_terminated() -> None:
    async with TimeSkippingHub(start=T0, auto_skip=False) as hub:
        hub.register(process_order, activities=(charge, ship))
        iid = await hub.client.schedule_new_orchestration(process_order, input=ORDER)
        await hub.wait_until_idle()
        await hub.client.terminate_orchestration(iid, output="cancelled by support")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=10)
        history = await hub.client.get_orchestration_history(iid)
    assert state.runtime_status is dt.OrchestrationStatus.TERMINATED

    result = replay(process_order, history)
    assert result.status is dt.OrchestrationStatus.TERMINATED
    assert result.next_actions == ()
