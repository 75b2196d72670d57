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
