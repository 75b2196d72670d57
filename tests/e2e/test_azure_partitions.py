"""Partition leases on an Azure Storage task hub (on Azurite): worker processes share the
``{hub}-control-NN`` partitions evenly, and a SIGKILLed worker's partitions are taken over
within the partition lease time while every instance still completes once.

The workers are ``crash_worker.py`` subprocesses; who holds which partition is read from the
lease blobs (:meth:`AzureOrchestrationService.partition_owners`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from duratask.backends.azure._partitions import PARTITION_LEASE

from . import crash_app
from .crash_app import Job
from .test_azure_crashes import AzureHub, check_outcome, new_azure_hub

pytestmark = pytest.mark.timeout(150)

SPREAD_TIMEOUT = 45.0  # joining needs the holder's next round (a few seconds) and a second
TAKEOVER_SLACK = 5.0  # seconds beyond the lease: one round, and a busy two-core machine


@pytest.fixture
def six_partitions(tmp_path: Path) -> Iterator[AzureHub]:
    yield from new_azure_hub(tmp_path, 6)


@pytest.fixture
def four_partitions(tmp_path: Path) -> Iterator[AzureHub]:
    yield from new_azure_hub(tmp_path, 4)


def owners(hub: AzureHub) -> dict[str, int | None]:
    """The pid of the worker holding each partition (None: nobody)."""
    from duratask.backends.azure import AzureOrchestrationService

    async def read() -> dict[str, str | None]:
        store = AzureOrchestrationService(hub.store_url)
        await store.open(create=False)
        try:
            return await store.partition_owners()
        finally:
            await store.close()

    # A member is named host:pid:random.
    return {
        name: None if owner is None else int(owner.split(":")[-2])
        for name, owner in asyncio.run(read()).items()
    }


def wait_for_spread(hub: AzureHub, pids: list[int], timeout: float) -> dict[str, int | None]:
    """Wait until exactly ``pids`` hold every partition, evenly (counts differ by one at
    most); returns who holds which. Fails with what was last seen at the deadline."""
    deadline = time.monotonic() + timeout
    held: dict[str, int | None] = {}
    while time.monotonic() < deadline:
        held = owners(hub)
        counts = Counter(held.values())
        if set(counts) == set(pids) and max(counts.values()) - min(counts.values()) <= 1:
            return held
        time.sleep(0.2)
    raise AssertionError(f"partitions not spread over {pids}: {held}\n{hub.worker_logs()}")


def test_two_then_three_worker_processes_share_the_partitions_evenly(
    six_partitions: AzureHub,
) -> None:
    hub = six_partitions
    first = hub.start_worker("normal")
    second = hub.start_worker("normal")
    hub.wait_ready(first)
    hub.wait_ready(second)
    began = time.monotonic()
    held = wait_for_spread(hub, [first.pid, second.pid], SPREAD_TIMEOUT)
    assert sorted(Counter(held.values()).values()) == [3, 3]
    two = time.monotonic() - began

    third = hub.start_worker("normal")
    hub.wait_ready(third)
    began = time.monotonic()
    held = wait_for_spread(hub, [first.pid, second.pid, third.pid], SPREAD_TIMEOUT)
    assert sorted(Counter(held.values()).values()) == [2, 2, 2]
    print(f"partitions spread: 2 workers in {two:.1f} s, 3 in {time.monotonic() - began:.1f} s")

    # A worker stopped cleanly hands its partitions over at once (no lease to wait out).
    hub.stop(third)
    began = time.monotonic()
    held = wait_for_spread(hub, [first.pid, second.pid], PARTITION_LEASE)
    print(f"clean stop: partitions handed over in {time.monotonic() - began:.1f} s")
    hub.stop(first)
    hub.stop(second)
    assert set(owners(hub).values()) == {None}


def test_a_sigkilled_workers_partitions_are_taken_over_within_the_lease_time(
    four_partitions: AzureHub,
) -> None:
    hub = four_partitions
    jobs = {f"p-{n}": Job(n, timer_ms=300, fan_out=3) for n in range(8)}
    victim = hub.start_worker("random", "--activity-ms", "200")
    survivor = hub.start_worker("normal", "--activity-ms", "200")
    hub.wait_ready(victim)
    hub.wait_ready(survivor)
    held = wait_for_spread(hub, [victim.pid, survivor.pid], SPREAD_TIMEOUT)
    assert sorted(Counter(held.values()).values()) == [2, 2]
    ids = [
        hub.client.schedule_new_orchestration(crash_app.pipeline, input=job, instance_id=iid)
        for iid, job in jobs.items()
    ]
    deadline = time.monotonic() + 30
    while hub.count_finished(ids) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hub.count_finished(ids) < len(ids), "everything finished before the kill"

    hub.kill(victim)
    killed = time.monotonic()
    wait_for_spread(hub, [survivor.pid], PARTITION_LEASE + TAKEOVER_SLACK)
    print(f"partitions taken over {time.monotonic() - killed:.1f} s after the SIGKILL")

    check_outcome(hub, ids, jobs)
    hub.stop(survivor)
    hub.assert_no_work_left()
    pids = {e["pid"] for e in hub.executions()}
    assert {victim.pid, survivor.pid} <= pids, "the work was not shared between the workers"
