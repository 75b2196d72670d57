"""Soak: one worker process under a steady stream of short orchestrations, on each store.

The client starts ``RATE`` orchestrations a second (two activities in a row, or a 50 ms
durable timer and an activity, in turn) for ``DURATASK_SOAK_SECONDS`` (default 20), while
the test samples the worker process every half second: its resident memory (``VmRSS`` of
``/proc/<pid>/status``), its open file descriptors (``/proc/<pid>/fd``), on PostgreSQL its
open connections (``pg_stat_activity`` rows named ``duratask[<schema>]``, the name the store
gives its connections; the test's own connections are named otherwise), and the backlog
(instances started but not finished).

The first third of the run is warm-up. Between the second and the last third, resident
memory may grow by less than 20% and less than 30 MB, and the descriptors may not grow
except by the sockets of connections the PostgreSQL pool opens within its bound (10, plus
the LISTEN connection). Every instance must complete with its output, and the backlog may not keep
growing (the worker keeps up).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

import duratask as dt

from . import chaos_app as app
from .conftest import publish, soak_seconds
from .hubs import SQL_KINDS, Target
from .supervisor import Supervisor, pause
from .workload import f

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

RATE = float(os.environ.get("DURATASK_SOAK_RATE") or 20.0)  # orchestrations a second
SAMPLE_EVERY = 0.5
LEASE_SECONDS = 5.0
RSS_GROWTH_RATIO = 0.20
RSS_GROWTH_BYTES = 30 * 2**20
FD_SLACK = 2  # descriptors that come and go (a WAL file, a socket being replaced)
# The PostgreSQL store's pool holds at most 10 connections, plus one that LISTENs.
POOL_CONNECTIONS = 11
COMPLETION_TIMEOUT = 60.0


@dataclass
class Sample:
    at: float
    rss_bytes: int
    fds: int
    connections: int | None
    backlog: int


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thirds(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The samples of the second and of the last third of the run (by time)."""
    start, end = samples[0].at, samples[-1].at
    span = end - start
    second = [s for s in samples if start + span / 3 <= s.at < start + 2 * span / 3]
    last = [s for s in samples if s.at >= start + 2 * span / 3]
    return second, last


def median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(getattr(s, field) for s in samples))


def peak(samples: list[Sample], field: str) -> int:
    return max(int(getattr(s, field)) for s in samples)


# The soak measures a worker's memory, descriptors and database connections on the SQL
# stores; the Azure Storage store runs the chaos tests only.
@pytest.mark.parametrize("target", SQL_KINDS, indirect=True)
async def test_resources_stay_flat_under_steady_load(
    target: Target, supervisors: list[Supervisor], tmp_path: Path
) -> None:
    seconds = soak_seconds()
    supervisor = Supervisor(target.url, tmp_path, random.Random(0), lease_seconds=LEASE_SECONDS)
    supervisors.append(supervisor)
    started: dict[str, Any] = {}  # instance id -> expected output
    samples: list[Sample] = []
    stop = asyncio.Event()

    async with dt.AsyncTaskHubClient(target.client_url) as client:
        await supervisor.start(1)
        pid = supervisor.workers[0].pid
        began = time.monotonic()

        async def load() -> None:
            try:
                n = 0
                while time.monotonic() - began < seconds:
                    if n % 2:
                        spec: Any = app.Timers(n, [50])
                        orchestration: Any = app.timers
                        expected = f(n)
                    else:
                        spec, orchestration = app.Chain(n, length=2), app.chain
                        expected = f(f(n) + 1)
                    iid = f"soak-{n}"
                    await client.schedule_new_orchestration(
                        orchestration, input=spec, instance_id=iid
                    )
                    started[iid] = expected
                    n += 1
                    # Fixed-rate arrivals: the n-th instance is due at n / RATE.
                    await pause(stop, began + n / RATE - time.monotonic())
            finally:
                stop.set()

        async def sample() -> None:
            while True:
                supervisor.check()
                connections, finished = await asyncio.gather(
                    asyncio.to_thread(target.worker_connections),
                    asyncio.to_thread(target.finished_count),
                )
                samples.append(
                    Sample(
                        at=time.monotonic() - began,
                        rss_bytes=rss_bytes(pid),
                        fds=open_fds(pid),
                        connections=connections,
                        backlog=len(started) - finished,
                    )
                )
                if await pause(stop, SAMPLE_EVERY):
                    return

        async with asyncio.TaskGroup() as group:
            group.create_task(load())
            group.create_task(sample())

        deadline = time.monotonic() + COMPLETION_TIMEOUT
        wrong = []
        for iid, expected in started.items():
            state = await client.wait_for_orchestration_completion(
                iid, timeout=max(0.1, deadline - time.monotonic())
            )
            if state.runtime_status is not dt.OrchestrationStatus.COMPLETED:
                wrong.append(f"{iid}: {state.runtime_status.value} {state.failure_details}")
            elif state.output != expected:
                wrong.append(f"{iid}: output {state.output!r}, expected {expected!r}")
        await supervisor.stop_all()

    second, last = thirds(samples)
    assert len(second) >= 3 and len(last) >= 3, f"too few samples: {len(samples)}"
    rss_before, rss_after = median(second, "rss_bytes"), median(last, "rss_bytes")
    growth = rss_after - rss_before
    figures: dict[str, Any] = {
        "seconds": seconds,
        "rate": RATE,
        "instances": len(started),
        "samples": len(samples),
        "rss_mb": f"{rss_before / 2**20:.1f}->{rss_after / 2**20:.1f}",
        "rss_growth": f"{growth / rss_before:+.1%}",
        "fds": f"{median(second, 'fds'):g}->{median(last, 'fds'):g}"
        f"(peak {peak(second, 'fds')}->{peak(last, 'fds')})",
        "backlog": f"{median(second, 'backlog'):g}->{median(last, 'backlog'):g}"
        f"(peak {peak(samples, 'backlog')})",
    }
    if target.kind == "postgres":
        figures["connections"] = (
            f"{median(second, 'connections'):g}->{median(last, 'connections'):g}"
            f"(peak {peak(second, 'connections')}->{peak(last, 'connections')})"
        )
    publish(f"soak[{target.kind}]", figures, {"samples_taken": [asdict(s) for s in samples]})

    assert not wrong, f"{len(wrong)} instances went wrong:\n" + "\n".join(wrong[:20])
    assert growth < RSS_GROWTH_RATIO * rss_before, f"RSS grew by {growth / rss_before:.1%}"
    assert growth < RSS_GROWTH_BYTES, f"RSS grew by {growth / 2**20:.1f} MB"
    # The PostgreSQL pool opens connections as load asks for them, up to its size: one
    # more connection (and its socket) within that bound is the pool at work, not a leak.
    opened = 0.0
    if target.kind == "postgres":
        assert peak(last, "connections") <= POOL_CONNECTIONS, figures
        opened = max(0.0, median(last, "connections") - median(second, "connections"))
    assert median(last, "fds") <= median(second, "fds") + opened, figures["fds"]
    assert peak(last, "fds") <= peak(second, "fds") + opened + FD_SLACK, figures["fds"]
    # The worker keeps up: a backlog that grows all along would be half again as long in
    # the last third as in the second; one second's arrivals are noise on a busy machine.
    assert median(last, "backlog") <= 1.5 * median(second, "backlog") + RATE, figures
