"""Tasks, their combinators, retry policies and the contexts' other members.

``OrchestrationContext.call_activity``, ``call_sub_orchestrator`` and
``wait_for_external_event`` are left out here: their typing is being reworked.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, assert_type

import duratask as dt


def check_tasks(ints: list[dt.Task[int]], strs: list[dt.Task[str]], task: dt.Task[int]) -> None:
    assert_type(dt.when_all(ints), dt.Task[list[int]])
    assert_type(dt.when_all(strs), dt.Task[list[str]])
    assert_type(dt.when_any(ints), dt.Task[dt.Task[Any]])
    assert_type(task.get_result(), int)
    assert_type(task.is_complete, bool)
    assert_type(task.is_failed, bool)
    assert_type(task.get_exception(), BaseException | None)


async def check_awaiting(ints: list[dt.Task[int]], task: dt.Task[int]) -> None:
    assert_type(await task, int)
    assert_type(await dt.when_all(ints), list[int])
    assert_type(await dt.when_any(ints), dt.Task[Any])


def check_retry_policy(failure: dt.TaskFailedError) -> None:
    policy = dt.RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=3)
    assert_type(policy, dt.RetryPolicy)
    assert_type(policy.first_retry_interval, timedelta)
    assert_type(policy.max_number_of_attempts, int)
    assert_type(policy.backoff_coefficient, float)
    assert_type(policy.max_retry_interval, timedelta | None)
    assert_type(policy.retry_timeout, timedelta | None)
    now = datetime.now()
    assert_type(policy.next_delay(1, now, now, failure), timedelta | None)


async def check_orchestration_context(ctx: dt.OrchestrationContext) -> None:
    assert_type(ctx.instance_id, str)
    assert_type(ctx.execution_id, str)
    assert_type(ctx.name, str)
    assert_type(ctx.version, str | None)
    assert_type(ctx.parent_instance_id, str | None)
    assert_type(ctx.current_utc_datetime, datetime)
    assert_type(ctx.is_replaying, bool)
    assert_type(ctx.logger, logging.Logger | logging.LoggerAdapter[logging.Logger])
    assert_type(ctx.new_uuid(), uuid.UUID)
    assert_type(ctx.create_timer(timedelta(minutes=5)), dt.Task[None])
    assert_type(await ctx.create_timer(ctx.current_utc_datetime), None)
    assert_type(ctx.send_event("other", "ping"), None)
    assert_type(ctx.set_custom_status({"step": 1}), None)
    assert_type(ctx.continue_as_new(None), None)


def check_history(events: list[dt.HistoryEvent]) -> None:
    assert_type(dt.format_timeline(events), str)
