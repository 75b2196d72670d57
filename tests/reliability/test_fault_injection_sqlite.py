"""Fault injection on the SQLite store (see ``fault_scenario.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fault_scenario import check_store_faults

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_the_scenario_survives_every_store_fault(mode: str, tmp_path: Path) -> None:
    await check_store_faults("sqlite", mode, tmp_path)
