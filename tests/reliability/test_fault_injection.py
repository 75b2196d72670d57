"""Fault injection on the in-memory store (see ``fault_scenario.py``); SQLite has its own file."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fault_scenario import PERIOD, check_store_faults, run_scenario

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_the_scenario_survives_every_store_fault(mode: str, tmp_path: Path) -> None:
    await check_store_faults("memory", mode, tmp_path)


async def test_without_faults_nothing_runs_twice(tmp_path: Path) -> None:
    plan, runs, distinct = await run_scenario("memory", "before", PERIOD, tmp_path)
    assert plan.total_injected == 0
    assert (runs, distinct) == (4, 4)
