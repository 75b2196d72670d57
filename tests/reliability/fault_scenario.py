"""The fault-injection scenario, run on a real worker whose store fails on purpose.

A scenario (three activities in sequence, a durable timer, an external event and a
sub-orchestration that runs an activity) runs on a worker whose store is a
:class:`FaultyStore`. :func:`check_store_faults` makes ``PERIOD`` runs for one store kind and
one mode ("before": the call fails without effect; "after": the call takes effect, then
fails, the ambiguous commit); run ``k`` fails every call ``c`` of every worker-side method
with ``c % PERIOD == k``, so across the runs every call position of every method fails once.

Every run must end with the right output, no instance lost, and a hub that ``check_hub``
finds consistent (so no step was committed twice). Activities may run more than once: those
re-runs are counted and reported, as are the faults injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duratask as dt
from duratask import history as h
from duratask.backends.base import TaskHubStore
from duratask.backends.memory import MemoryOrchestrationService
from duratask.backends.sqlite import SqliteOrchestrationService
from duratask.integrity import check_hub

from .faulty_store import WORKER_METHODS, FaultPlan, FaultyStore
from .figures import count

S = dt.OrchestrationStatus
PERIOD = 3
SPEED = 25  # the hub's clock runs this many times faster than real time
TIMER = timedelta(seconds=2)  # of the hub's clock


class FastClock:
    """Aware UTC time running ``speed`` times faster than real time: back-offs, lease expiry
    and timers of the hub's clock pass quickly, and in the same proportions."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._base = datetime.now(UTC)
        self._start = time.monotonic()

    def __call__(self) -> datetime:
        return self._base + timedelta(seconds=(time.monotonic() - self._start) * self.speed)


# -- the scenario ------------------------------------------------------------------------------
_runs: Counter[tuple[str, int]] = Counter()
_runs_lock = threading.Lock()


def step(ctx: dt.ActivityContext, value: str) -> str:
    with _runs_lock:
        _runs[(ctx.orchestration_id, ctx.task_id)] += 1
    return f"<{value}>"


async def child(ctx: dt.OrchestrationContext, value: str) -> str:
    return str(await ctx.call_activity(step, input=f"child {value}"))


async def scenario(ctx: dt.OrchestrationContext, _: None) -> list[str]:
    first = await ctx.call_activity(step, input="1")
    second = await ctx.call_activity(step, input=first)
    third = await ctx.call_activity(step, input=second)
    await ctx.create_timer(TIMER)
    approval = await ctx.wait_for_external_event("approve")
    kid = await ctx.call_sub_orchestrator(
        child, input=approval, instance_id=f"{ctx.instance_id}-kid"
    )
    return [third, approval, kid]


EXPECTED = ["<<<1>>>", "yes", "<child yes>"]


# -- stores ------------------------------------------------------------------------------------
StoreMaker = Callable[[Path, FastClock], tuple[TaskHubStore, TaskHubStore]]


def memory_stores(tmp_path: Path, clock: FastClock) -> tuple[TaskHubStore, ...]:
    store = MemoryOrchestrationService(clock=clock)
    return store, store


def sqlite_stores(tmp_path: Path, clock: FastClock) -> tuple[TaskHubStore, ...]:
    path = str(tmp_path / "hub.db")
    return SqliteOrchestrationService(path, clock=clock), SqliteOrchestrationService(
        path, clock=clock
    )


STORES = {"memory": memory_stores, "sqlite": sqlite_stores}


@contextlib.asynccontextmanager
async def running(worker: dt.TaskHubWorker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        await worker.shutdown()
        await asyncio.wait_for(task, timeout=30)


async def run_scenario(
    kind: str, mode: str, offset: int, tmp_path: Path
) -> tuple[FaultPlan, int, int]:
    """Run the scenario under one fault plan; returns (plan, activity runs, distinct runs)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    clock = FastClock(SPEED)
    worker_store, client_store = STORES[kind](tmp_path, clock)
    plan = FaultPlan(PERIOD, offset, mode, WORKER_METHODS)
    worker = dt.TaskHubWorker(
        FaultyStore(worker_store, plan),
        clock=clock,
        lease_duration=timedelta(seconds=10),
        shutdown_grace=timedelta(seconds=5),
    )
    worker.add_orchestration(scenario)
    worker.add_orchestration(child)
    worker.add_activity(step)
    await client_store.open()
    client = dt.AsyncTaskHubClient(client_store, clock=clock)
    iid = f"{kind}-{mode}-{offset}"
    with _runs_lock:
        _runs.clear()
    try:
        async with running(worker) as task:
            await client.schedule_new_orchestration(scenario, instance_id=iid)
            await client.raise_orchestration_event(iid, "approve", "yes")
            try:
                state = await client.wait_for_orchestration_completion(iid, timeout=60)
            except dt.OrchestrationWaitTimeoutError:
                raise AssertionError(
                    f"{iid}: never finished; worker alive: {not task.done()}; "
                    f"faults {dict(plan.injected)}"
                ) from None
            assert not task.done(), "the worker's loop ended under faults"
        assert state.runtime_status is S.COMPLETED, (iid, state.failure_details)
        assert state.output == EXPECTED

        page = await client.query_orchestrations()
        assert {s.instance_id: s.runtime_status for s in page.states} == {
            iid: S.COMPLETED,
            f"{iid}-kid": S.COMPLETED,
        }
        problems = await check_hub(client_store)
        assert problems == [], "\n".join(map(str, problems))
        history = await client.get_orchestration_history(iid)
        kinds = Counter(type(e).__name__ for e in history)
        assert kinds[h.EventRaised.__name__] == 1
        assert kinds[h.TaskScheduled.__name__] == 3
        assert kinds[h.ExecutionStarted.__name__] == 1
    finally:
        await client.close()
        await client_store.close()
    with _runs_lock:
        return plan, sum(_runs.values()), len(_runs)


async def check_store_faults(kind: str, mode: str, tmp_path: Path) -> None:
    """Every run of one store kind and mode completes correctly; the figures are counted."""
    injected: Counter[str] = Counter()
    for offset in range(PERIOD):
        plan, runs, distinct = await run_scenario(kind, mode, offset, tmp_path / str(offset))
        assert distinct == 4  # three activities of the parent, one of the child
        injected.update(plan.injected)
        count(f"faults injected ({kind}, {mode})", plan.total_injected)
        count("fault runs", 1)
        count("activity runs under faults", runs)
        count("activity re-runs caused by faults", runs - distinct)
    # Every commit-carrying method was hit in these runs.
    for method in (
        "lock_next_orchestration_work_item",
        "commit_episode",
        "lock_next_activity_work_items",
        "complete_activity_work_item",
    ):
        assert injected[method] > 0, (method, dict(injected))
    for method, n in injected.items():
        count(f"faults injected into {method}", n)
