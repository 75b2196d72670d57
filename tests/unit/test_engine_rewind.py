"""Rewind: the history replay sees once a FAILED execution was rewound, and the replay."""

from __future__ import annotations

from typing import Any

from duratask import history as h
from duratask._actions import ScheduleTaskAction
from duratask._engine import final_failure, has_ended, rewound_view
from duratask.context import OrchestrationContext
from duratask.retry import RetryPolicy
from duratask.state import FailureDetails, OrchestrationStatus
from tests.unit.history_builder import SEC, HistoryBuilder, execute, payload, registry

FAILED = OrchestrationStatus.FAILED
BOOM = FailureDetails("TaskFailedError", "boom")


async def two_steps(ctx: OrchestrationContext, _: Any) -> list[str]:
    first = await ctx.call_activity("first")
    second = await ctx.call_activity("second")
    return [first, second]


def failed_two_steps() -> HistoryBuilder:
    b = HistoryBuilder().episode().started("two_steps").task_scheduled(0, "first").done()
    b.episode().task_completed(0, "a").task_scheduled(1, "second").done()
    b.episode().task_failed(1).completed(FAILED, failure=BOOM).done()
    return b


def test_a_history_without_rewinds_is_returned_as_is() -> None:
    events = failed_two_steps().build()
    assert rewound_view(events) is events
    assert has_ended(events)


def test_rewind_forgets_the_final_failure_and_the_completion() -> None:
    b = failed_two_steps()
    events = b.build()
    forgotten = final_failure(events)
    assert {type(events[i]) for i in forgotten} == {h.TaskFailed, h.ExecutionCompleted}
    b.episode().rewound("fixed").task_completed(1, "b")
    view = rewound_view(b.build())
    assert not any(isinstance(e, h.TaskFailed | h.ExecutionCompleted) for e in view)
    assert not has_ended(b.build())
    result = execute(registry([two_steps]), view)
    assert result.completion is not None
    assert result.completion.result == payload(["a", "b"])


def test_earlier_handled_failures_and_retries_are_kept() -> None:
    async def retried(ctx: OrchestrationContext, _: Any) -> str:
        policy = RetryPolicy(first_retry_interval=SEC, max_number_of_attempts=2)
        return str(await ctx.call_activity("flaky", retry_policy=policy))

    b = HistoryBuilder().episode().started("retried").task_scheduled(0, "flaky").done()
    b.episode().task_failed(0).timer_created(1, b.now + SEC).done()
    b.episode().timer_fired(1, b.now + SEC).task_scheduled(2, "flaky").done()
    b.episode().task_failed(2).completed(FAILED, failure=BOOM).done()
    b.episode().rewound()
    view = rewound_view(b.build())
    failures = [e for e in view if isinstance(e, h.TaskFailed)]
    assert [e.task_scheduled_id for e in failures] == [0], "only the last attempt is forgotten"
    # Replaying the view leaves the code waiting on attempt #2, with nothing new to schedule.
    result = execute(registry([retried]), view)
    assert result.completion is None
    assert not [a for a in result.actions if isinstance(a, ScheduleTaskAction)]


def test_a_second_failure_after_a_rewind_is_forgotten_by_the_second_rewind() -> None:
    b = failed_two_steps()
    b.episode().rewound().task_failed(1, "again").completed(FAILED, failure=BOOM).done()
    assert has_ended(b.build())
    b.episode().rewound().task_completed(1, "b")
    view = rewound_view(b.build())
    assert not any(isinstance(e, h.TaskFailed | h.ExecutionCompleted) for e in view)
    assert rewound_view(view) == view, "the view is stable"


def test_rewind_of_a_completed_execution_forgets_nothing() -> None:
    b = HistoryBuilder().episode().started("x").completed(OrchestrationStatus.COMPLETED, 1)
    assert final_failure(b.build()) == set()
    b.episode().rewound()
    assert rewound_view(b.build()) == b.build()
