"""Eager start: an instance a client of this process creates runs its first episode here at
once, leased to this worker in the transaction that creates it.

The worker offers itself to the clients of its process (:mod:`duratask._local_workers`).
It takes a start only when it registered the orchestration (name and version) and has a
free orchestration slot; the store then creates the instance leased to it
(:class:`~duratask.backends.base.SupportsEagerStart`) and the work item runs in that slot,
as if a fetch had leased it. When the store does not lease it (a scheduled start ahead, an
instance replaced), the instance is created all the same and waits for a fetch. Should the
worker die before the episode commits, the lease expires and the instance is redelivered
like any other.

The create need not be durable by itself: its commit skips the wait for the disk, and the
first episode's commit, which is durable, covers it (the store's log is sequential). The
client is told the instance exists only then, or, if that episode is slow to commit, after
``SYNC_WAIT`` once the store has made the create durable on its own: one durable commit
for the start and its first episode instead of two, and the same guarantee to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from duratask._registry import Registry
from duratask.backends.base import (
    OrchestrationMessage,
    OrchestrationWorkItem,
    SupportsEagerStart,
    WorkFilter,
)
from duratask.history import ExecutionStarted
from duratask.state import OrchestrationStatus
from duratask.worker._dispatcher import Dispatcher

# How long a start waits for its first episode's commit to make the create durable before
# the store is asked to: long enough for a quick episode and its commit, short enough that
# orchestration code that computes for long holds up its client's create by little.
SYNC_WAIT = 0.005


class EagerStarts:
    """Creates instances leased to this worker, and runs them in its orchestration slots."""

    def __init__(
        self,
        store: SupportsEagerStart,
        orchestrations: Dispatcher[OrchestrationWorkItem],
        registry: Registry,
        work_filter: Callable[[], WorkFilter | None],
        *,
        owner: str,
        lease: timedelta,
    ) -> None:
        self._store = store
        self._orchestrations = orchestrations
        self._registry = registry
        self._work_filter = work_filter
        self._owner = owner
        self._lease = lease

    async def start_here(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> bool:
        """Create the instance leased to this worker and run it here; False (nothing done)
        when the worker cannot run it now."""
        event = message.event
        if (
            not isinstance(event, ExecutionStarted)
            or self._registry.get_orchestration(event.name, event.version) is None
        ):
            return False
        permit = self._orchestrations.try_reserve()
        if permit is None:
            return False
        with permit:
            item = await self._store.create_and_lease_instance(
                message, replaceable, self._owner, self._lease, self._work_filter(), durable=False
            )
            if item is None:  # no episode of ours to cover the create: durable now
                await self._store.wait_durable(0)
                return True
            permit.submit(item)
        # The episode starts (on its way to a code thread) and commits, durably.
        await asyncio.sleep(0)
        await self._store.wait_durable(SYNC_WAIT)
        return True
