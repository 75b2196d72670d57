"""Chaos for entities: counters incremented by many orchestrations (signals and calls) while
worker processes are SIGKILLed at random, on each store.

Every orchestration signals ``add 1`` to the tally of each of its keys, then calls ``add 1``
on its first key. When every orchestration has COMPLETED the kills stop and each tally must
hold exactly the number of increments sent to it: none lost, none applied twice, even though
workers died mid-batch and batches ran again elsewhere. The hub drains (no message, no
entity or instance lease left) and no entity lock is left.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections import Counter
from pathlib import Path

import pytest

import duratask as dt

from . import chaos_app
from .conftest import chaos_budget, chaos_instances, publish
from .hubs import Target, wait_for_drain
from .supervisor import Supervisor

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

WORKERS = 3
LEASE_SECONDS = 1.0
KEYS = [f"k{i}" for i in range(6)]
POLL = 0.1
DRAIN_TIMEOUT = 60.0


async def test_entity_counters_survive_random_kills(
    target: Target, supervisors: list[Supervisor], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("DURATASK_CHAOS_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    count = chaos_instances(request.config, target.kind)
    plans = [rng.sample(KEYS, rng.randint(1, 4)) for _ in range(count)]
    expected = Counter(key for keys in plans for key in keys)
    expected.update(keys[0] for keys in plans)  # the call
    supervisor = Supervisor(
        target.url,
        tmp_path,
        random.Random(rng.random()),
        lease_seconds=LEASE_SECONDS,
        kill_interval=target.kill_interval,
    )
    supervisors.append(supervisor)
    began = time.monotonic()
    deadline = began + chaos_budget(count, target.kind)
    async with dt.AsyncTaskHubClient(target.client_url) as client:
        await supervisor.start(WORKERS)
        stop = asyncio.Event()

        async def client_side() -> None:
            try:
                ids = []
                for n, keys in enumerate(plans):
                    if n == len(plans) // 2:
                        # The second half starts once a worker was killed, so that a kill
                        # always lands while operations are in flight, however quick the run.
                        while supervisor.kills == 0:
                            assert time.monotonic() < deadline, f"seed={seed}: no kill came"
                            await asyncio.sleep(POLL)
                    ids.append(
                        await client.schedule_new_orchestration(chaos_app.increment, input=keys)
                    )
                    await asyncio.sleep(rng.uniform(0.0, 0.05))
                for iid in ids:
                    while True:
                        state = await client.get_orchestration_state(iid)
                        assert state is not None
                        if state.runtime_status.is_terminal:
                            assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, (
                                f"seed={seed}: {iid} ended {state.runtime_status}: "
                                f"{state.failure_details}"
                            )
                            break
                        assert time.monotonic() < deadline, f"seed={seed}: {iid} never finished"
                        await asyncio.sleep(POLL)
                while await _tallies(client) != dict(expected):
                    assert time.monotonic() < deadline, (
                        f"seed={seed}: tallies {await _tallies(client)} != {dict(expected)}"
                    )
                    await asyncio.sleep(POLL)
            finally:
                stop.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(supervisor.run_chaos(stop))
            group.create_task(client_side())
        # The kills stopped: the hub must drain (no message, no lease), and nothing moved.
        await wait_for_drain(target, supervisor, time.monotonic() + DRAIN_TIMEOUT)
        tallies = await _tallies(client)
        leftovers = [
            (e.entity_id, e.locked_by, e.backlog)
            for e in (await client.query_entities(name="tally")).entities
            if e.locked_by is not None or e.backlog
        ]
        await supervisor.stop_all()
    publish(
        f"entity-chaos[{target.kind}]",
        {
            "orchestrations": count,
            "increments": sum(expected.values()),
            "kills": supervisor.kills,
            "wall": f"{time.monotonic() - began:.1f}s",
            "seed": seed,
        },
    )
    assert tallies == dict(expected), f"seed={seed}"
    assert leftovers == [], f"seed={seed}"
    assert supervisor.kills >= 1, "no worker was killed during the run"


async def _tallies(client: dt.AsyncTaskHubClient) -> dict[str, int]:
    page = await client.query_entities(name="tally", page_size=100)
    return {e.key: int(e.state) for e in page.entities if e.state is not None}
