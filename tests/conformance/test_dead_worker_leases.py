"""What a starting worker does about leases other workers hold, on every store.

A worker that finds leases held by a worker of its own host whose process no longer exists
(it was killed and this is its replacement) takes them over at once, instead of waiting out
the lease (2 minutes here); the work resumes as a new delivery of the same try. Leases held
by anyone else (another host, or a live process) are waited for, and the worker says once
whose leases, how many, and until when.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask.backends import open_store
from duratask.backends.base import TaskHubStore, WorkerInfo
from duratask.worker._presence import host_identity

from . import dead_worker_app as app
from .e2e_hub import TaskHub, wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def _field(record: logging.LogRecord, name: str) -> Any:
    return record.__dict__[name]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    app.configure(tmp_path)
    yield tmp_path


@pytest.fixture
async def seam(store_url: str) -> AsyncIterator[TaskHubStore]:
    """A store object of the test's own on the hub, to see and make leases directly."""
    store = open_store(store_url)
    await store.open()
    yield store
    await store.close()


async def test_a_restarted_worker_takes_over_its_dead_predecessors_leases_at_once(
    store_url: str, seam: TaskHubStore, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("an in-memory hub lives in one process: no other process can die")
    dead_id = f"killed-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "tests.conformance.dead_worker_app"]
    first = subprocess.Popen([*command, store_url, str(workdir), dead_id], cwd=ROOT)
    hub = TaskHub(store_url)
    hub.register(app.ships, activities=(app.record_then_hang,))
    try:
        iid = await hub.client.schedule_new_orchestration(app.ships, input="A-1")

        async def running() -> bool:
            assert first.poll() is None, "the first worker ended by itself"
            return len(app.runs()) == 1

        await wait_until(running, timeout=60, what="the first worker running the activity")
        assert dead_id in {h.owner for h in await seam.lease_holders()}
        first.kill()
        first.wait()  # reaped: its pid names no process now

        caplog.set_level(logging.INFO, logger="duratask.worker")
        restarted = time.monotonic()
        await hub.start()
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        took = time.monotonic() - restarted
        workers = {w.worker_id for w in await hub.client.list_workers()}
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        await hub.stop()

    assert (state.runtime_status, state.output) == (dt.OrchestrationStatus.COMPLETED, "A-1")
    assert took < app.DEAD_LEASE.total_seconds() / 4, f"waited {took:.1f} s for the dead lease"
    # The activity ran again as a second delivery of its first try: not a retry.
    assert app.runs() == [
        {"pid": first.pid, "attempt": 1, "delivery": 1},
        {"pid": os.getpid(), "attempt": 1, "delivery": 2},
    ]
    (taken,) = _events(caplog, "duratask.worker.leases_taken_over")
    assert _field(taken, "owner") == dead_id and _field(taken, "leases") >= 1
    assert "a process of this host that no longer exists" in taken.getMessage()
    assert not _events(caplog, "duratask.worker.waiting_for_leases")
    assert dead_id not in workers, "the dead worker's row is gone with it"


def _gone_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    probe.wait()
    return probe.pid


async def quick(ctx: dt.OrchestrationContext, _: None) -> str:
    return "done"


@pytest.mark.parametrize("holder", ["another host", "a live process of this host"])
async def test_a_worker_says_once_whose_leases_it_waits_for_and_until_when(
    store_url: str, seam: TaskHubStore, caplog: pytest.LogCaptureFixture, holder: str
) -> None:
    hub = TaskHub(store_url)
    hub.register(quick)
    try:
        iid = await hub.client.schedule_new_orchestration(quick)
        owner = f"other-{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)
        if holder == "another host":  # whose pid here means nothing, even one that is gone
            host, pid = "some-other-host/0/0", _gone_pid()
        else:
            host, pid = host_identity(), os.getppid()
        await seam.heartbeat_worker(
            WorkerInfo(
                worker_id=owner,
                host=host,
                pid=pid,
                started_at=now,
                heartbeat_at=now,
                orchestrations=frozenset(),
                activities=frozenset(),
                in_flight={},
            )
        )
        leased = await seam.lock_next_orchestration_work_item(owner, timedelta(seconds=3))
        assert leased is not None and leased.instance_id == iid
        (held,) = await seam.lease_holders()

        caplog.set_level(logging.INFO, logger="duratask.worker")
        await hub.start()
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
    finally:
        await hub.stop()

    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert state.last_updated_at >= held.expires_at, "the lease was waited out, not broken"
    (waits,) = _events(caplog, "duratask.worker.waiting_for_leases")
    assert _field(waits, "owner") == owner and _field(waits, "leases") == 1
    assert _field(waits, "until") == held.expires_at.isoformat()
    assert f"1 lease(s) are held by {owner} until {held.expires_at.isoformat()}" in (
        waits.getMessage()
    )
    assert not _events(caplog, "duratask.worker.leases_taken_over")
