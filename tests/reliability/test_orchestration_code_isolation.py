"""Orchestration code runs off the worker's event loop, under a time budget per episode.

CPU-heavy steps must not starve lease renewal (no activity runs twice, no lease is lost),
and code that never yields must not stall the loop: it stays responsive, and the episode
is interrupted at its budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import duratask as dt
from tests.conformance.e2e_hub import TaskHub
from tests.e2e.crash_app import burn_cpu

S = dt.OrchestrationStatus
_runs: Counter[str] = Counter()


def record(ctx: dt.ActivityContext, key: str) -> str:
    _runs[key] += 1
    return key


async def heavy(ctx: dt.OrchestrationContext, seconds: float) -> list[str]:
    """Two steps, each burning ``seconds`` of CPU in orchestration code first."""
    done = []
    for step in range(2):
        burn_cpu(seconds)
        done.append(await ctx.call_activity(record, input=f"{ctx.instance_id}-{step}"))
    return done


async def spins(ctx: dt.OrchestrationContext, _: Any) -> None:
    while True:
        try:
            burn_cpu(3600)
        except Exception:
            continue


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "memory":
        return "memory://code-isolation-" + str(id(request))
    return f"sqlite:///{tmp_path / 'hub.db'}"


async def test_cpu_heavy_orchestration_code_does_not_starve_lease_renewal(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _runs.clear()
    # Twelve instances burning 0.25 s per step at once: 3 s of CPU at a time, beside a 3 s
    # lease renewed every second (where episodes ran on the loop, they held up renewals
    # past the lease). The twelve code threads still share the GIL with the loop: a 2 s
    # lease left too little slack for a loaded 2-core machine.
    hub = TaskHub(url, lease_duration=timedelta(seconds=3), orchestration_cache_size=0)
    hub.register(heavy, activities=(record,))
    caplog.set_level(logging.WARNING, logger="duratask")
    await hub.start()
    try:
        ids = [await hub.client.schedule_new_orchestration(heavy, input=0.25) for _ in range(12)]
        states = [await hub.client.wait_for_orchestration_completion(i, 60) for i in ids]
    finally:
        await hub.stop()
    assert all(s.runtime_status is S.COMPLETED for s in states)
    assert len(_runs) == 24 and set(_runs.values()) == {1}, "an activity ran twice"
    lost = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert lost == []


async def test_code_that_never_yields_leaves_the_loop_responsive(url: str) -> None:
    hub = TaskHub(url, episode_budget=timedelta(seconds=1), max_deliveries=1)
    hub.register(spins)
    await hub.start()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        iid = await hub.client.schedule_new_orchestration(spins)
        state = await hub.client.wait_for_orchestration_completion(iid, 30)
    finally:
        ticking.cancel()
        await hub.stop()
    assert state.runtime_status is S.FAILED
    assert state.failure_details is not None
    assert "episode budget (0:00:01)" in state.failure_details.message
    assert gaps and max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f}s"


async def test_budget_must_be_positive(url: str) -> None:
    with pytest.raises(ValueError, match="episode_budget"):
        dt.TaskHubWorker(url, episode_budget=timedelta(0))
