"""Fixtures of the reliability suite: the conformance suite's stores, and the figures report."""

from __future__ import annotations

from typing import Any

from tests.conformance.conftest import (  # noqa: F401 (fixtures used by the tests here)
    clock,
    store,
    store_hub,
    store_url,
)

from .figures import FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "reliability figures")
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name}: {value}")
