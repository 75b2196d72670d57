"""Small measuring helpers shared by the workloads: process memory and CPU, percentiles,
and a progress file a trial keeps up to date so a timed-out trial still tells how far it got.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """This process's resident set size (``VmRSS`` of ``/proc/self/status``) in MiB."""
    return _proc_status_kib("VmRSS") / 1024


def peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``) in MiB."""
    return _proc_status_kib("VmHWM") / 1024


def _proc_status_kib(field: str) -> float:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return math.nan
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return math.nan


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    return time.process_time()


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile of ``values`` (``pct`` in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Progress:
    """Writes ``{"done": n, "of": total, "elapsed_s": s, "phase": ..., "metrics": {...}}``
    to a file, at most every 0.5 s (at once for a new phase or metric).

    The runner reads it when it has to kill a trial that ran past its timeout: ``done`` tells
    how far the trial got, and ``metrics`` holds the figures it had already measured in full
    (W5's memory and CPU, say, when the delivery phase is what ran out of time).
    """

    def __init__(self, path: str | None) -> None:
        self._path = Path(path) if path else None
        self._last_write = 0.0
        self._started = time.perf_counter()
        self._record: dict[str, Any] = {"done": -1, "of": 0, "phase": "", "metrics": {}}

    def restart(self) -> None:
        self._started = time.perf_counter()

    def phase(self, name: str) -> None:
        self._record["phase"] = name
        self._write(time.perf_counter())

    def measured(self, **metrics: float) -> None:
        """Figures measured in full so far."""
        self._record["metrics"].update(metrics)
        self._write(time.perf_counter())

    def update(self, done: int, of: int, extra: dict[str, float] | None = None) -> None:
        now = time.perf_counter()
        self._record.update(done=done, of=of, **(extra or {}))
        if now - self._last_write >= 0.5:
            self._write(now)

    def _write(self, now: float) -> None:
        if self._path is None:
            return
        self._last_write = now
        self._record["elapsed_s"] = now - self._started
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._record))
        tmp.replace(self._path)


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The last record a :class:`Progress` wrote, or None."""
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data
