"""Run one activity work item and build the result message for its orchestration."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Executor
from datetime import datetime

from duratask import history as h
from duratask._registry import Registry
from duratask.backends.base import ActivityWorkItem, OrchestrationMessage
from duratask.context import ActivityContext
from duratask.converter import PayloadCodec
from duratask.errors import ActivityNotRegisteredError
from duratask.state import FailureDetails


async def run_activity(
    work_item: ActivityWorkItem,
    registry: Registry,
    codec: PayloadCodec,
    thread_pool: Executor,
    now: datetime,
) -> OrchestrationMessage:
    """Run the activity (async in the loop, sync in the thread pool); failures become TaskFailed."""
    request = work_item.request
    event: h.HistoryEvent
    try:
        spec = registry.get_activity(request.name)
        if spec is None:
            raise ActivityNotRegisteredError(
                f"activity {request.name!r} is not registered on this worker "
                f"(registered activities: {registry.activity_names})"
            )
        ctx = ActivityContext(
            orchestration_id=request.instance_id,
            execution_id=request.execution_id,
            task_id=request.task_id,
            name=request.name,
            attempt=work_item.dequeue_count,
        )
        value = codec.decode(request.input, spec.input_type)
        if spec.is_async:
            result = await spec.fn(ctx, value)
        else:
            call = functools.partial(contextvars.copy_context().run, spec.fn, ctx, value)
            result = await asyncio.get_running_loop().run_in_executor(thread_pool, call)
        encoded = codec.encode(result, f"result of activity {request.name!r}")
        event = h.TaskCompleted(timestamp=now, task_scheduled_id=request.task_id, result=encoded)
    except Exception as exc:
        event = h.TaskFailed(
            timestamp=now,
            task_scheduled_id=request.task_id,
            failure_details=FailureDetails.from_exception(exc),
        )
    return OrchestrationMessage(request.instance_id, event, request.execution_id)
