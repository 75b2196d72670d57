"""A task hub worker run as a subprocess by the crash tests, until it is killed.

    python tests/e2e/crash_worker.py --store sqlite:////abs/hub.db --workdir DIR --mode MODE

Modes:

- ``normal`` / ``random``: a plain worker (the test kills it whenever it likes);
- ``activity``: the first execution of ``hang_once`` blocks (see ``crash_app``), so the test
  can kill the worker in the middle of an activity;
- ``episode``: the store's ``commit_episode`` SIGKILLs its own process on
  the ``--kill-on``-th call (counting only the episodes ``--kill-filter`` selects), either
  ``before`` delegating (the episode was computed, nothing is committed) or ``after`` the
  commit returned. Just before dying it writes ``episode-kill.json`` describing the episode.

Once the worker is processing work it creates ``ready-<pid>`` in the work directory. It stops
by itself if its parent process goes away or after ``--max-seconds`` (so a crashed test
never leaves it behind), or gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
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
    from tests.e2e import crash_app
else:
    import crash_app

import duratask as dt
from duratask import history as h
from duratask.backends import TaskHubStore, open_store
from duratask.backends.base import ActivityWorkItem, EpisodeFence, OrchestrationCommit
from duratask.backends.sqlite import SqliteOrchestrationService
from duratask.errors import InstanceBusyError

MODES = ("normal", "random", "activity", "episode")
KILL_FILTERS = ("any", "mid-instance", "child-completing", "root-completing")


class SelfKillingStore(SqliteOrchestrationService):
    """The SQLite store, except that one chosen episode commit kills the process."""

    def __init__(self, path: str, *, workdir: Path, kill_on: int, when: str, kind: str) -> None:
        super().__init__(path)
        self._workdir = workdir
        self._kill_on = kill_on
        self._when = when
        self._kind = kind
        self._seen = 0

    def _counts(self, fence: EpisodeFence, commit: OrchestrationCommit) -> bool:
        """Whether the episode is of the kind whose ``kill_on``-th one kills the process."""
        if self._kind == "any":
            return True
        if self._kind == "mid-instance":  # not an execution's first episode
            return fence.history_length > 0
        if not any(isinstance(e, h.ExecutionCompleted) for e in commit.new_events):
            return False
        is_child = commit.state.parent_instance_id is not None
        return is_child == (self._kind == "child-completing")

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Every episode commit counts (also one run on an activity's result and committed
        with it); the chosen one kills the process. A commit refused because the instance
        was busy is not counted: the worker then commits that episode another way."""
        counted = self._counts(fence, commit)
        if counted:
            self._seen += 1
        doomed = counted and self._seen == self._kill_on
        if doomed and self._when == "before":
            self._die(commit, fence.history_length, committed=False)
        try:
            leased = await super().commit_episode(fence, commit)
        except InstanceBusyError:
            self._seen -= counted
            raise
        if doomed and self._when == "after":
            self._die(commit, fence.history_length, committed=True)
        return leased

    def _die(self, commit: OrchestrationCommit, history_length: int, *, committed: bool) -> None:
        record = {
            "pid": os.getpid(),
            "instance": commit.state.instance_id,
            "committed": committed,
            "history_length": history_length,  # history may be left out (cached)
            "new_events": [e.event_type.name for e in commit.new_events],
            "episode_started_at": commit.new_events[0].timestamp.isoformat(),
            "consumed_message_ids": list(commit.consumed_message_ids),
        }
        final = self._workdir / crash_app.EPISODE_KILL_RECORD
        private = final.with_name(f"{final.name}.{os.getpid()}")
        with private.open("w") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        private.rename(final)
        os.kill(os.getpid(), signal.SIGKILL)


def sqlite_path(url: str) -> str:
    store = open_store(url)
    if not isinstance(store, SqliteOrchestrationService):
        raise SystemExit(f"--mode episode needs a sqlite:// store, got {url!r}")
    return store.path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        required=True,
        help="task hub URL (sqlite:////abs/path.db, postgresql://...?schema=NAME)",
    )
    parser.add_argument("--workdir", required=True, type=Path, help="marker and log directory")
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    parser.add_argument("--kill-on", type=int, default=1, help="episode mode: which commit")
    parser.add_argument("--kill-when", choices=("before", "after"), default="before")
    parser.add_argument(
        "--kill-filter",
        choices=KILL_FILTERS,
        default="any",
        help="episode mode: count every episode, or only those completing a sub-orchestration "
        "(child-completing) or a top-level orchestration (root-completing)",
    )
    parser.add_argument(
        "--activity-ms", type=float, default=0.0, help="how long each activity works"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--max-deliveries", type=int, default=10)
    parser.add_argument("--episode-budget", type=float, default=5.0, help="seconds")
    parser.add_argument("--shutdown-grace", type=float, default=2.0, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    workdir: Path = args.workdir
    crash_app.configure(
        workdir, hang=args.mode == "activity", activity_seconds=args.activity_ms / 1000
    )
    store: str | TaskHubStore = args.store
    if args.mode == "episode":
        store = SelfKillingStore(
            sqlite_path(args.store),
            workdir=workdir,
            kill_on=args.kill_on,
            when=args.kill_when,
            kind=args.kill_filter,
        )
    worker = dt.TaskHubWorker(
        store,
        lease_duration=timedelta(seconds=args.lease_seconds),
        shutdown_grace=timedelta(seconds=args.shutdown_grace),
        max_deliveries=args.max_deliveries,
        episode_budget=timedelta(seconds=args.episode_budget),
    )
    crash_app.register(worker)

    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_seconds
    worker.start()
    try:
        (workdir / f"ready-{os.getpid()}").touch()
        while not stop.wait(0.2):
            if os.getppid() != parent or time.monotonic() > deadline:
                break
    finally:
        worker.stop(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
