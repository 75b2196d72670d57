"""One bad item never hurts the rest, with real worker processes (``crash_worker.py``).

- An activity that kills its worker ends its own instance FAILED as poison, while every
  other instance, including those whose activities ran beside it, completes.
- Orchestration code that never yields is interrupted at its episode budget; the instance
  ends FAILED as poison naming the budget; the worker keeps working and stops on SIGTERM.
- A worker restarted on the same host takes over its dead predecessor's leases at once,
  not when they expire.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import duratask as dt

from . import crash_app
from .crash_app import Burst
from .test_crash_recovery import STARTUP_TIMEOUT, Hub, report, wait_for_file

pytestmark = pytest.mark.timeout(120)
S = dt.OrchestrationStatus


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    client = dt.TaskHubClient(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = Hub(workdir=tmp_path, client=client)
    try:
        yield hub
    finally:
        hub.cleanup()
        client.close()


def keep_workers_running(
    hub: Hub, count: int, ids: list[str], timeout: float, *extra: str
) -> tuple[list[dt.OrchestrationState], int]:
    """Keep ``count`` workers alive (restarting those that die) until every instance has
    finished; the final states, and how many workers died."""
    workers = [hub.start_worker("normal", *extra) for _ in range(count)]
    deaths = 0
    deadline = time.monotonic() + timeout
    while hub.count_finished(ids) < len(ids):
        if time.monotonic() > deadline:
            raise AssertionError(f"not finished after {timeout}s\n{hub.worker_logs()}")
        for i, proc in enumerate(workers):
            if proc.poll() is not None:
                deaths += 1
                workers[i] = hub.start_worker("normal", *extra)
        time.sleep(0.05)  # a supervisor's poll interval, not a wait for a condition
    for proc in workers:
        hub.stop(proc)
    return hub.wait_all(ids, timeout=10), deaths


def test_an_activity_that_kills_its_worker_fails_only_its_own_instance(hub: Hub) -> None:
    bursts = [Burst(n, steps=2, fan_out=6) for n in range(20)]
    ids = [
        hub.client.schedule_new_orchestration(
            crash_app.steps_then_fan_out, input=burst, instance_id=f"bystander-{burst.n}"
        )
        for burst in bursts
    ]
    poison = hub.client.schedule_new_orchestration(
        crash_app.calls_a_killer, input=0, instance_id="poison"
    )
    states, deaths = keep_workers_running(
        hub, 2, [*ids, poison], 90, "--max-deliveries", "3", "--lease-seconds", "30"
    )
    by_id = {s.instance_id: s for s in states}
    failed = [i for i in ids if by_id[i].runtime_status is not S.COMPLETED]
    assert failed == [], [(i, by_id[i].failure_details) for i in failed]
    for burst, iid in zip(bursts, ids, strict=True):
        assert by_id[iid].output == crash_app.expected_steps_then_fan_out(burst)
    bad = by_id[poison]
    assert bad.runtime_status is S.FAILED
    assert bad.failure_details is not None
    assert "PoisonWorkError" in str(bad.failure_details)
    assert "'kills_its_worker' was delivered 4 times" in str(bad.failure_details)
    runs = Counter(e["activity"] for e in hub.executions())
    # The killer ran once per allowed delivery; each death restarted a worker.
    assert runs["kills_its_worker"] == 3 and deaths == 3
    report({"bystanders": len(ids), "worker_deaths": deaths, "activity_runs": sum(runs.values())})


def test_orchestration_code_that_never_yields_is_stopped_at_its_budget(hub: Hub) -> None:
    spinner = hub.client.schedule_new_orchestration(crash_app.spins, instance_id="spins")
    worker = hub.start_worker("normal", "--episode-budget", "0.5", "--max-deliveries", "2")
    hub.wait_ready(worker)
    ids = [
        hub.client.schedule_new_orchestration(crash_app.sequence, input=n, instance_id=f"s-{n}")
        for n in range(5)
    ]
    states = hub.wait_all([*ids, spinner], timeout=60)
    by_id = {s.instance_id: s for s in states}
    for n, iid in enumerate(ids):
        assert by_id[iid].output == crash_app.expected_sequence(n)
    spun = by_id[spinner]
    assert spun.runtime_status is S.FAILED
    message = str(spun.failure_details)
    assert "PoisonWorkError" in message and "episode budget (0:00:00.500000)" in message
    began = time.monotonic()
    hub.stop(worker)  # SIGTERM is heard: exit code 0
    report({"stop_seconds": round(time.monotonic() - began, 2)})


def test_a_restarted_worker_takes_over_its_dead_predecessors_leases_at_once(hub: Hub) -> None:
    iid = hub.client.schedule_new_orchestration(crash_app.sequence, input=0, instance_id="seq")
    first = hub.start_worker("activity", "--lease-seconds", "120")
    marker = wait_for_file(hub.workdir / crash_app.HANG_MARKER, first, STARTUP_TIMEOUT, hub)
    assert json.loads(marker.read_text())["pid"] == first.pid
    hub.kill(first)  # holding the activity's lease for two more minutes
    killed_at = time.monotonic()
    second = hub.start_worker("normal", "--lease-seconds", "120")
    (state,) = hub.wait_all([iid], timeout=60)
    took = time.monotonic() - killed_at
    hub.stop(second)
    assert state.output == crash_app.expected_sequence(0)
    assert took < 60, f"took {took:.1f}s: the new worker waited for the old lease"
    log = "\n".join(p.read_text() for p in Path(hub.workdir).glob("worker-*.log"))
    assert f":{first.pid}:" in log and "took over" in log
    report({"seconds_after_kill": round(took, 2)})
