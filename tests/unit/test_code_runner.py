"""The orchestration code runner's budget: counted from when an episode starts, enforced
from outside its thread, and never cutting an import short."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from pathlib import Path

import pytest

from duratask.worker._code_runner import EpisodeOverBudget, OrchestrationCodeRunner


def burn(seconds: float) -> float:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass
    return seconds


async def test_code_past_its_budget_is_stopped_from_outside() -> None:
    runner = OrchestrationCodeRunner(threads=1, budget=0.2)
    try:
        began = time.monotonic()
        with pytest.raises(EpisodeOverBudget):
            await runner.run(burn, 30.0)
        assert time.monotonic() - began < 10
        assert await runner.run(burn, 0.01) == 0.01  # the thread serves the next episode
    finally:
        runner.close()


async def test_the_budget_counts_from_the_start_not_from_the_queue() -> None:
    runner = OrchestrationCodeRunner(threads=1, budget=0.5)
    try:
        first = asyncio.ensure_future(runner.run(burn, 0.4))
        second = asyncio.ensure_future(runner.run(burn, 0.3))  # waits 0.4 s for the thread
        assert list(await asyncio.gather(first, second)) == [0.4, 0.3]
    finally:
        runner.close()


async def test_an_import_is_never_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slow_to_import.py").write_text(
        "import time\n"
        "_until = time.perf_counter() + 0.6\n"
        "while time.perf_counter() < _until:\n"
        "    pass\n"
        "COMPLETE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    def import_then_spin() -> None:
        importlib.import_module("slow_to_import")

        burn(30.0)

    runner = OrchestrationCodeRunner(threads=1, budget=0.2)
    try:
        with pytest.raises(EpisodeOverBudget):
            await runner.run(import_then_spin)
        module = sys.modules["slow_to_import"]
        assert module.COMPLETE is True  # imported whole, though past the budget while at it
    finally:
        runner.close()
        sys.modules.pop("slow_to_import", None)


def fail(message: str) -> None:
    raise ValueError(message)


async def test_a_lone_episode_returns_or_raises_whether_it_ends_before_the_loop_stops_waiting() -> (
    None
):
    """The loop waits briefly for a lone episode (WAIT_ON_LOOP), then awaits it: episodes
    ending before, around and after that moment all come back, and none is lost."""
    runner = OrchestrationCodeRunner(threads=1, budget=5.0)
    try:
        lengths = [0.0, 0.0005, 0.0009, 0.001, 0.0011, 0.0015, 0.005]
        for _ in range(20):
            for seconds in lengths:
                assert await asyncio.wait_for(runner.run(burn, seconds), 5) == seconds
        with pytest.raises(ValueError, match="out of the code"):
            await runner.run(fail, "out of the code")
    finally:
        runner.close()


async def test_the_loop_runs_on_while_a_lone_episode_computes() -> None:
    runner = OrchestrationCodeRunner(threads=1, budget=5.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    try:
        await asyncio.sleep(0)
        before = ticks
        assert await runner.run(burn, 0.3) == 0.3
        assert ticks - before > 2, "the loop was held for the whole episode"
    finally:
        ticker.cancel()
        runner.close()
