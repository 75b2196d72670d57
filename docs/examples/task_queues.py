"""Task queues: an activity that runs only on the workers of one group."""

from __future__ import annotations

import duratask as dt


def draw(ctx: dt.ActivityContext, job: str) -> str:
    return f"{job} drawn on a GPU worker"


def publish(ctx: dt.ActivityContext, frames: str) -> str:
    return f"published: {frames}"


# --8<-- [start:route]
async def render(ctx: dt.OrchestrationContext, job: str) -> str:
    frames = await ctx.call_activity(draw, input=job, task_queue="gpu")
    return await ctx.call_activity(publish, input=frames)  # the instance's own queue


# --8<-- [end:route]


def main(store: str = "memory://task-queues") -> dict:
    # --8<-- [start:workers]
    app_worker = dt.TaskHubWorker(store)  # serves the "default" queue
    app_worker.add_orchestration(render)
    app_worker.add_activity(publish)

    gpu_worker = dt.TaskHubWorker(store, task_queues={"gpu"})
    gpu_worker.add_activity(draw)
    # --8<-- [end:workers]
    with app_worker, gpu_worker, dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(render, input="scene-1")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
    return {"output": state.output, "task_queue": state.task_queue}
