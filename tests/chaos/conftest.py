"""Chaos and soak tests: the ``chaos`` marker, their sizes, fixtures and figures.

Sizes: ``DURATASK_CHAOS_INSTANCES`` (default 60, 30 on Azure Storage) top-level instances
per chaos run, or 500 with ``--chaos-full`` (when pytest is pointed at ``tests/chaos``) or
``DURATASK_CHAOS_FULL=1``; ``DURATASK_SOAK_SECONDS`` (default 20) per soak run. Each test's
timeout grows with its size. The figures of every run are repeated in the terminal summary
and written as JSON under ``tests/chaos/results/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .. import azurite
from .hubs import STORE_KINDS, Target, make_target
from .supervisor import Supervisor

RESULTS_DIR = Path(__file__).with_name("results")
DEFAULT_INSTANCES = 60
# Azure Storage on Azurite is slower (one emulator process serves every table scan, and a
# killed worker's partitions wait 15 s for a new owner): its default run is smaller.
SMALLER_DEFAULT = {"azure": 30}
FULL_INSTANCES = 500
DEFAULT_SOAK_SECONDS = 20.0

_figure_lines: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full",
        action="store_true",
        default=False,
        help=f"run the chaos tests at full size ({FULL_INSTANCES} instances per store)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: worker processes SIGKILLed at random under load; soak runs"
    )


def chaos_instances(config: pytest.Config, kind: str = "") -> int:
    """How many top-level instances a chaos run on store ``kind`` starts."""
    explicit = os.environ.get("DURATASK_CHAOS_INSTANCES")
    if explicit:
        return int(explicit)
    full = os.environ.get("DURATASK_CHAOS_FULL") == "1" or bool(
        config.getoption("--chaos-full", default=False)
    )
    return FULL_INSTANCES if full else SMALLER_DEFAULT.get(kind, DEFAULT_INSTANCES)


def soak_seconds() -> float:
    """How long a soak run keeps its load on."""
    return float(os.environ.get("DURATASK_SOAK_SECONDS") or DEFAULT_SOAK_SECONDS)


def chaos_budget(instances: int, kind: str = "") -> float:
    """Seconds a chaos run on store ``kind`` may take before its own deadline fails it."""
    if kind == "azure":
        return 120.0 + 2.0 * instances
    return 60.0 + 0.5 * instances


# The mixed-workload test's poison activity takes a worker down at each of its deliveries
# (up to its max_deliveries), each followed by a replacement's start: time on top.
POISON_ALLOWANCE = 60.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest-timeout reads the marker before fixtures run, so sized timeouts go on here.
    for item in items:
        if item.get_closest_marker("chaos") is None:
            continue
        if item.path.name == "test_soak.py":
            budget = soak_seconds() + 90.0
        else:
            callspec = getattr(item, "callspec", None)
            kind = str(callspec.params.get("target", "")) if callspec is not None else ""
            budget = chaos_budget(chaos_instances(config, kind), kind) + POISON_ALLOWANCE + 60.0
        item.add_marker(pytest.mark.timeout(budget))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    azurite.warn_in_summary(terminalreporter, "Azure Storage chaos tests")
    if _figure_lines:
        terminalreporter.section("chaos and soak figures")
        for line in _figure_lines:
            terminalreporter.write_line(line)


def publish(label: str, figures: dict[str, Any], details: dict[str, Any] | None = None) -> Path:
    """Print ``figures`` on one line, keep it for the summary, and write a JSON result file."""
    line = f"{label}: " + " ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    _figure_lines.append(line)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = label.replace("[", "-").replace("]", "")
    path = RESULTS_DIR / f"{safe}-{stamp}-{os.getpid()}.json"
    path.write_text(json.dumps({"label": label, **figures, **(details or {})}, indent=1) + "\n")
    return path


@pytest.fixture(params=STORE_KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A fresh task hub, once per store kind."""
    with make_target(request.param, tmp_path) as made:
        yield made


@pytest.fixture
async def supervisors() -> AsyncIterator[list[Supervisor]]:
    """Supervisors a test makes; every worker they started is killed afterwards."""
    made: list[Supervisor] = []
    try:
        yield made
    finally:
        for supervisor in made:
            await supervisor.cleanup()
