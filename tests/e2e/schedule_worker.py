"""A worker run as a subprocess by the schedule crash tests, until it is stopped or killed.

    python tests/e2e/schedule_worker.py --store URL --workdir DIR [--kill-at-run N]

It runs the ``tick`` orchestration and fires the hub's schedules. With ``--kill-at-run N`` it
SIGKILLs itself right after it created the N-th schedule run, before it could record it in
the schedule: the worst moment for the firing worker to die. Once it works it creates
``ready-<pid>`` in the work directory; it stops when its parent goes away, after
``--max-seconds``, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType

import duratask as dt
from duratask.backends import TaskHubStore, open_store
from duratask.backends.base import OrchestrationMessage
from duratask.state import OrchestrationStatus


async def tick(ctx: dt.OrchestrationContext, n: int) -> int:
    return n


def self_killing(store: TaskHubStore, kill_at: int, workdir: Path) -> TaskHubStore:
    """``store``, whose ``kill_at``-th creation of a schedule run kills the process after it
    was stored."""
    created = 0
    create = store.create_instance

    async def create_instance(
        message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        nonlocal created
        await create(message, replaceable)
        if "@" in message.instance_id:
            created += 1
            if created == kill_at:
                (workdir / f"killed-{os.getpid()}").write_text(message.instance_id)
                os.kill(os.getpid(), signal.SIGKILL)

    store.create_instance = create_instance  # type: ignore[method-assign]
    return store


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--lease-seconds", type=float, default=2.0)
    parser.add_argument("--kill-at-run", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    args = parser.parse_args()
    store = open_store(args.store)
    if args.kill_at_run:
        store = self_killing(store, args.kill_at_run, args.workdir)
    worker = dt.TaskHubWorker(store, lease_duration=timedelta(seconds=args.lease_seconds))
    worker.add_orchestration(tick)
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_seconds
    worker.start()
    try:
        (args.workdir / f"ready-{os.getpid()}").touch()
        while not stop.wait(0.2):
            if os.getppid() != parent or time.monotonic() > deadline:
                break
    finally:
        worker.stop(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
