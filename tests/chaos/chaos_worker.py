"""A task hub worker process for the chaos and soak tests; runs until killed or told to stop.

    python tests/chaos/chaos_worker.py --store URL --workdir DIR [--lease-seconds S]

Once it is processing work it creates ``ready-<pid>`` in the work directory. It stops
gracefully on SIGTERM, and by itself if its parent process goes away or after
``--max-seconds``, so a test that crashes never leaves it behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy sees the package; the script runs with its own folder on sys.path
    from tests.chaos import chaos_app
else:
    import chaos_app

import duratask as dt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="task hub URL")
    parser.add_argument("--workdir", required=True, type=Path, help="ready markers and run log")
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    parser.add_argument("--activity-ms", type=float, default=0.0, help="work per activity")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--max-deliveries", type=int, default=10)
    parser.add_argument("--episode-budget", type=float, default=5.0, help="seconds")
    parser.add_argument("--max-retry-delay", type=float, default=60.0, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    chaos_app.configure(args.workdir, activity_seconds=args.activity_ms / 1000)
    worker = dt.TaskHubWorker(
        args.store,
        lease_duration=timedelta(seconds=args.lease_seconds),
        shutdown_grace=timedelta(seconds=2),
        max_deliveries=args.max_deliveries,
        episode_budget=timedelta(seconds=args.episode_budget),
        max_retry_delay=timedelta(seconds=args.max_retry_delay),
    )
    chaos_app.register(worker)

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
