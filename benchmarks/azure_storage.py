"""W1 on an Azure Storage task hub (on Azurite), beside Azurite's own raw limit, and the
storage calls duratask makes per activity.

    python -m benchmarks.azure_storage [--orchestrations 100] [--activities 5]

- **L (Azurite)**: entity inserts per second into one table partition, one at a time, for
  ``--limit-seconds``: what a store needing one table write per step could reach at best.
- **W1**: N orchestrations of ``--activities`` sequential trivial activities, scheduled
  together, one worker in this process; done when every instance completed (the client
  waits on each instance).
- **calls per activity**: the requests the worker's store sent over W1's window (tables,
  queues and blobs), divided by the activities run. The Durable Task Framework's own Azure
  Storage store needs about 4 dequeues, 3 enqueues, 4 table reads and 4 table writes for an
  orchestration of 3 activities, about 5 calls per activity.

Azurite runs in memory on free loopback ports (``make azurite`` installs it), so the figures
measure the emulator and the client stack, not a storage account's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from tests import azurite

import duratask as dt
from benchmarks.workloads import bump, sequence


async def raw_limit(url: str, seconds: float) -> float:
    """Entity inserts per second into one partition of a fresh table, one in flight."""
    from azure.data.tables.aio import TableServiceClient

    from duratask.backends.azure import parse_azure_url

    target = parse_azure_url(url)
    assert target.connection_string is not None
    name = f"limit{uuid.uuid4().hex[:10]}"
    async with TableServiceClient.from_connection_string(target.connection_string) as service:
        table = await service.create_table(name)
        done = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            await table.create_entity(
                {"PartitionKey": "p", "RowKey": f"{done:012d}", "Body": "x" * 64}
            )
            done += 1
        await table.close()
        await service.delete_table(name)
    return done / seconds


async def w1(url: str, orchestrations: int, activities: int) -> dict[str, Any]:
    worker = dt.TaskHubWorker(url)
    worker.add_orchestration(sequence)
    worker.add_activity(bump)
    task = asyncio.create_task(worker.run())
    try:
        async with dt.AsyncTaskHubClient(url) as client:
            warm = await client.schedule_new_orchestration(sequence, input=1)
            (await client.wait_for_orchestration_completion(warm, timeout=120)).raise_if_failed()
            store = worker.store
            before = dict(getattr(store, "calls", {}))
            started = time.perf_counter()
            ids = [
                await client.schedule_new_orchestration(sequence, input=activities)
                for _ in range(orchestrations)
            ]
            for iid in ids:
                state = await client.wait_for_orchestration_completion(iid, timeout=600)
                state.raise_if_failed()
            elapsed = time.perf_counter() - started
            after = dict(getattr(store, "calls", {}))
    finally:
        await worker.shutdown()
        await task
    total = orchestrations * activities
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "seconds": round(elapsed, 2),
        "orch_per_s": round(orchestrations / elapsed, 2),
        "act_per_s": round(total / elapsed, 2),
        "worker_calls": calls,
        "worker_calls_per_activity": round(sum(calls.values()) / total, 2),
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orchestrations", type=int, default=100)
    parser.add_argument("--activities", type=int, default=5)
    parser.add_argument("--limit-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    emulator = azurite.start()
    try:
        limit = await raw_limit(emulator.url("limit"), args.limit_seconds)
        figures = await w1(emulator.url(azurite.new_hub()), args.orchestrations, args.activities)
    finally:
        emulator.stop()
    figures["L_inserts_per_s"] = round(limit, 1)
    figures["act_per_s_over_L"] = round(figures["act_per_s"] / limit, 3)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
