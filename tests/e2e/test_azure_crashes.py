"""Crashes on an Azure Storage task hub (on Azurite): a worker SIGKILLed mid-run, and the
storage service itself restarted mid-run. Every instance must finish with the right output
and a well-formed history, and nothing may be left waiting in the hub.

The workers are ``crash_worker.py`` subprocesses (as in ``test_crash_recovery.py``) with a
1 s lease, driven from this process by a :class:`duratask.TaskHubClient`.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import duratask as dt

from .. import azurite
from . import crash_app
from .crash_app import Job
from .test_crash_recovery import Hub

pytestmark = pytest.mark.timeout(150)


@dataclass
class AzureHub(Hub):
    """A crash-test hub on Azurite."""

    store_url: str = ""

    @property
    def url(self) -> str:
        return self.store_url

    def assert_no_work_left(self) -> None:
        """No message, activity, outbox row or lease is left in the History table."""
        from duratask.backends.azure import AzureOrchestrationService

        async def leftovers() -> list[str]:
            store = AzureOrchestrationService(self.store_url)
            await store.open(create=False)
            try:
                rows = await store._query("history", "RowKey ne @s", {"s": "sentinel"})
                sentinels = await store._query("history", "RowKey eq @s", {"s": "sentinel"})
            finally:
                await store.close()
            kinds = ("m-", "a-", "o-")
            left = [r["RowKey"] for r in rows if r["RowKey"].startswith(kinds)]
            left += [f"lease {r['PartitionKey']}" for r in sentinels if r["Token"]]
            return left

        assert asyncio.run(leftovers()) == []


@pytest.fixture
def azure_hub(tmp_path: Path) -> Iterator[AzureHub]:
    yield from new_azure_hub(tmp_path)


def new_azure_hub(tmp_path: Path, partitions: int | None = None) -> Iterator[AzureHub]:
    """A fresh hub on the session's Azurite (with ``partitions`` control queues), its
    workers killed at the end."""
    url = azurite.require_azurite().url(azurite.new_hub(), partitions=partitions)
    client = dt.TaskHubClient(url)
    hub = AzureHub(workdir=tmp_path, client=client, store_url=url)
    try:
        yield hub
    finally:
        hub.cleanup()
        client.close()


def run_batches(hub: AzureHub, kills: int, batch_size: int) -> tuple[list[str], dict[str, Job]]:
    """Schedule a batch of pipelines before each worker starts; SIGKILL each worker but the
    last at a random moment while its batch runs. Returns the instance ids and their jobs."""
    rng = random.Random(20261207)
    ids: list[str] = []
    jobs: dict[str, Job] = {}
    proc = None
    for generation in range(kills + 1):
        for k in range(batch_size):
            n = generation * batch_size + k
            jobs[f"r-{n}"] = Job(n, timer_ms=300, fan_out=3)
            ids.append(
                hub.client.schedule_new_orchestration(
                    crash_app.pipeline, input=jobs[f"r-{n}"], instance_id=f"r-{n}"
                )
            )
        last = generation == kills
        proc = hub.start_worker("normal" if last else "random", "--activity-ms", "200")
        hub.wait_ready(proc)
        if last:
            break
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.3, 1.0))  # still running at the kill
        assert hub.count_finished(ids) < len(ids)
        hub.kill(proc)
    return ids, jobs


def check_outcome(hub: AzureHub, ids: list[str], jobs: dict[str, Job]) -> None:
    states = hub.wait_all(ids, timeout=90)
    for iid, state in zip(ids, states, strict=True):
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
        assert state.output == crash_app.expected_pipeline(jobs[iid])
    hub.check_histories([*ids, *(f"{iid}:child" for iid in ids)])


def test_sigkilled_workers_leave_every_instance_to_complete(azure_hub: AzureHub) -> None:
    began = time.monotonic()
    ids, jobs = run_batches(azure_hub, kills=2, batch_size=4)
    check_outcome(azure_hub, ids, jobs)
    azure_hub.stop(azure_hub.procs[-1])
    azure_hub.assert_no_work_left()
    print(f"azure crash test: {len(ids)} pipelines, 2 kills, {time.monotonic() - began:.1f} s")


def test_storage_restarted_mid_run_every_instance_completes(tmp_path: Path) -> None:
    """Azurite keeping its data on disk is stopped and started again on the same ports while
    a worker runs: the worker's calls fail for a while, then everything completes."""
    azurite.require_azurite()  # skips (or fails in CI) when Azurite cannot run
    ports = (azurite.free_port(), azurite.free_port(), azurite.free_port())
    location = tmp_path / "azurite"
    location.mkdir()
    emulator = azurite.start(location, ports)
    url = emulator.url(azurite.new_hub())
    client = dt.TaskHubClient(url)
    hub = AzureHub(workdir=tmp_path, client=client, store_url=url)
    try:
        jobs = {f"r-{n}": Job(n, timer_ms=300, fan_out=3) for n in range(6)}
        ids = [
            client.schedule_new_orchestration(crash_app.pipeline, input=job, instance_id=iid)
            for iid, job in jobs.items()
        ]
        proc = hub.start_worker("normal", "--activity-ms", "200")
        hub.wait_ready(proc)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        assert hub.count_finished(ids) < len(ids)
        emulator.stop()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)  # the worker outlives its storage's absence
        emulator = azurite.start(location, ports)
        check_outcome(hub, ids, jobs)
        hub.stop(proc)
        hub.assert_no_work_left()
    finally:
        hub.cleanup()
        client.close()
        emulator.stop()


def test_worker_processes_share_the_hub_and_survivors_take_over(azure_hub: AzureHub) -> None:
    """Two workers at once both run the hub's work (instances are leased one by one, by any
    worker); SIGKILL one mid-run and the other finishes everything once the dead worker's
    leases expire."""
    jobs = {f"s-{n}": Job(n, timer_ms=300, fan_out=3) for n in range(8)}
    ids = [
        azure_hub.client.schedule_new_orchestration(crash_app.pipeline, input=job, instance_id=iid)
        for iid, job in jobs.items()
    ]
    first = azure_hub.start_worker("random", "--activity-ms", "200")
    second = azure_hub.start_worker("normal", "--activity-ms", "200")
    azure_hub.wait_ready(first)
    azure_hub.wait_ready(second)
    with pytest.raises(subprocess.TimeoutExpired):
        first.wait(timeout=1.5)
    assert azure_hub.count_finished(ids) < len(ids)
    azure_hub.kill(first)
    check_outcome(azure_hub, ids, jobs)
    azure_hub.stop(second)
    azure_hub.assert_no_work_left()
    pids = {e["pid"] for e in azure_hub.executions()}
    assert {first.pid, second.pid} <= pids, "the work was not shared between the workers"
