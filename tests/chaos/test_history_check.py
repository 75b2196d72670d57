"""The history validator of the chaos tests accepts good histories and names what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

import duratask as dt
from duratask import history as h

from .history_check import history_problems, raised_events

T0 = datetime(2024, 5, 1, tzinfo=UTC)
Corruption = Callable[[list[h.HistoryEvent]], object]


def good_history() -> list[h.HistoryEvent]:
    """Two episodes: an activity, a timer, a sub-orchestration, an event, then the end."""
    return [
        h.OrchestratorStarted(timestamp=T0),  # 0
        h.ExecutionStarted(timestamp=T0, name="o", instance_id="i", execution_id="x"),
        h.TaskScheduled(event_id=0, timestamp=T0, name="step"),
        h.TimerCreated(event_id=1, timestamp=T0, fire_at=T0),
        h.SubOrchestrationInstanceCreated(event_id=2, timestamp=T0, name="c", instance_id="i:c"),
        h.OrchestratorCompleted(timestamp=T0),  # 5
        h.OrchestratorStarted(timestamp=T0),
        h.TaskCompleted(timestamp=T0, task_scheduled_id=0, result="1"),
        h.TimerFired(timestamp=T0, timer_id=1, fire_at=T0),
        h.SubOrchestrationInstanceCompleted(timestamp=T0, task_scheduled_id=2, result="[]"),
        h.EventRaised(timestamp=T0, name="Go", input="3"),  # 10
        h.ExecutionCompleted(timestamp=T0, status=dt.OrchestrationStatus.COMPLETED),
        h.OrchestratorCompleted(timestamp=T0),
    ]


def test_a_good_history_has_no_problem() -> None:
    assert history_problems(good_history(), all_answered=True) == []
    assert raised_events(good_history()) == {"go": 1}


def test_a_running_history_is_valid_unless_it_must_be_finished() -> None:
    running = good_history()[:6]
    assert history_problems(running, finished=False) == []
    assert history_problems(running) == ["no ExecutionCompleted"]
    assert history_problems(running, finished=False, all_answered=True) == [
        "tasks without a result: [0, 1, 2]"
    ]


def _replace(i: int, event: h.HistoryEvent) -> Corruption:
    return lambda events: events.__setitem__(i, event)


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        pytest.param(lambda ev: ev.insert(4, ev[2]), "task id 0 scheduled twice", id="dup-task"),
        pytest.param(
            lambda ev: ev.insert(5, h.TimerCreated(event_id=2, timestamp=T0, fire_at=T0)),
            "task id 2 scheduled twice",
            id="dup-id-across-kinds",
        ),
        pytest.param(lambda ev: ev.insert(8, ev[7]), "second result for task 0", id="dup-result"),
        pytest.param(
            lambda ev: ev.insert(12, ev[8]), "followed by ['TimerFired'", id="after-the-end"
        ),
        pytest.param(
            lambda ev: ev.insert(11, ev[11]), "2 ExecutionCompleted events", id="two-ends"
        ),
        pytest.param(lambda ev: ev.insert(6, ev[1]), "ExecutionStarted at [1, 6]", id="restart"),
        pytest.param(lambda ev: ev.pop(5), "starts an episode inside another", id="no-close"),
        pytest.param(lambda ev: ev.pop(), "the last episode is not closed", id="open-end"),
        pytest.param(
            lambda ev: ev.insert(6, ev[10]), "#6 EventRaised: outside any episode", id="outside"
        ),
        pytest.param(
            lambda ev: ev.pop(2), "answers task 0, which is no earlier TaskScheduled", id="orphan"
        ),
        pytest.param(
            _replace(8, h.TimerFired(timestamp=T0, timer_id=0, fire_at=T0)),
            "answers task 0, which is no earlier TimerCreated",
            id="wrong-kind",
        ),
        pytest.param(lambda ev: ev.pop(9), "tasks without a result: [2]", id="unanswered"),
        pytest.param(
            _replace(2, h.TaskScheduled(event_id=-1, timestamp=T0, name="step")),
            "negative task id -1",
            id="negative-id",
        ),
    ],
)
def test_each_corruption_is_named(corrupt: Corruption, problem: str) -> None:
    events = good_history()
    corrupt(events)
    problems = history_problems(events, all_answered=True)
    assert any(problem in p for p in problems), problems


def test_an_empty_history_is_a_problem() -> None:
    assert history_problems([]) == ["empty history"]
