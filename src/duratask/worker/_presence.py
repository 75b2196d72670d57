"""A worker's presence in its hub: the row that says what it runs and how busy it is, and
what it does at start about the leases of workers that are gone.

The row is written when the worker starts and every :data:`HEARTBEAT_INTERVAL` seconds
after, from a timer: the hot path never writes it. Clients read the rows to tell which
workers are connected and what they registered.

A lease names its holder (a worker id). At start, a worker takes over at once the leases
held by workers whose row says they ran on this very host (same host name, boot and
process namespace, so two containers sharing a host name never mistake each other) in a
process that no longer exists: a worker that crashed and was restarted does not wait out
its own old leases. For the others it says once which leases it waits for, and until when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from duratask._registry import Registry
from duratask.backends.base import LeaseHolder, TaskHubStore, WorkerInfo
from duratask.state import DEFAULT_TASK_QUEUE

_LOG = logging.getLogger("duratask.worker")
HEARTBEAT_INTERVAL = 5.0  # seconds between two writes of a worker's row
FORGOTTEN_AFTER = timedelta(days=1)  # rows of workers not heard from for this long are removed


def host_identity() -> str:
    """This host as a worker row names it: the host name, then (on Linux) the boot id and
    the process-id namespace, which tell apart machines and containers of one name."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]"))
    return "/".join(parts)


def process_is_gone(pid: int) -> bool:
    """Whether no process with ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, as another user
    return False


class Presence:
    """Keeps one worker's row up to date while it runs."""

    def __init__(
        self,
        store: TaskHubStore,
        worker_id: str,
        registry: Registry,
        clock: Callable[[], datetime],
        in_flight: Callable[[], Mapping[str, int]],
        task_queues: frozenset[str] = frozenset({DEFAULT_TASK_QUEUE}),
    ) -> None:
        self._store = store
        self._task_queues = task_queues
        self._worker_id = worker_id
        self._registry = registry
        self._clock = clock
        self._in_flight = in_flight
        self._started_at = clock()
        self._host = host_identity()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take over what dead processes of this host held, then write the row and keep it
        fresh."""
        await self._take_over_dead_leases()
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._keep_up())

    async def stop(self) -> None:
        """Stop refreshing the row and remove it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._store.remove_worker(self._worker_id)

    async def _keep_up(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self._beat()
            except Exception as exc:  # a store outage: the next beat tries again
                _LOG.warning(
                    "worker %s: could not record its heartbeat: %s",
                    self._worker_id,
                    exc,
                    extra={"event": "duratask.worker.heartbeat_failed"},
                )

    async def _beat(self) -> None:
        await self._store.heartbeat_worker(
            WorkerInfo(
                worker_id=self._worker_id,
                host=self._host,
                pid=os.getpid(),
                started_at=self._started_at,
                heartbeat_at=self._clock(),
                orchestrations=self._registry.orchestration_keys,
                activities=frozenset(self._registry.activity_names),
                task_queues=self._task_queues,
                in_flight=dict(self._in_flight()),
            )
        )

    async def _take_over_dead_leases(self) -> None:
        now = self._clock()
        rows = {w.worker_id: w for w in await self._store.list_workers()}
        for row in rows.values():
            if row.worker_id != self._worker_id and now - row.heartbeat_at > FORGOTTEN_AFTER:
                await self._store.remove_worker(row.worker_id)
        waiting: list[LeaseHolder] = []
        for holder in await self._store.lease_holders():
            if holder.owner == self._worker_id:
                continue
            owner = rows.get(holder.owner)
            if (
                owner is not None
                and owner.host == self._host
                and owner.pid != os.getpid()
                and process_is_gone(owner.pid)
            ):
                broken = await self._store.break_leases(holder.owner)
                _LOG.warning(
                    "worker %s: took over %d lease(s) of %s, a process of this host "
                    "that no longer exists",
                    self._worker_id,
                    broken,
                    holder.owner,
                    extra={
                        "event": "duratask.worker.leases_taken_over",
                        "owner": holder.owner,
                        "leases": broken,
                    },
                )
                await self._store.remove_worker(holder.owner)
                continue
            waiting.append(holder)
        for holder in waiting:
            _LOG.info(
                "worker %s: %d lease(s) are held by %s until %s; their work waits until then "
                "(or until that worker finishes it)",
                self._worker_id,
                holder.items,
                holder.owner,
                holder.expires_at.isoformat(),
                extra={
                    "event": "duratask.worker.waiting_for_leases",
                    "owner": holder.owner,
                    "leases": holder.items,
                    "until": holder.expires_at.isoformat(),
                },
            )
