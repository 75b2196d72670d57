"""Instructions per W1 activity, counted by ``valgrind --tool=callgrind``.

Wall-clock figures on a shared 2-core machine drift by tens of percent from one run to the
next; an instruction count does not. This runs W1 (orchestrations of five sequential
trivial activities, worker and client in one process) twice under callgrind, once with
N + 1 orchestrations and once with 1, and reports the difference divided by the N x 5
activities between them: the CPU work duratask does per activity, start-up and shutdown
excluded. System calls
and waits are not instructions of this process, so a change that saves a syscall or an
fsync does not show here (measure those with ``make bench``).

    python -m benchmarks.instructions                      # SQLite, 300 orchestrations
    python -m benchmarks.instructions --store memory --orchestrations 200
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 5
# W1's client looks every 10 ms; under callgrind, which runs the process some 50 times
# slower, that would be 50 times as many looks per activity as in a real run, counted as
# work per activity. Looking twice a second keeps them a small share, as they are in W1.
POLL = 0.5


async def _run(url: str, orchestrations: int, poll: float) -> None:
    """W1 as ``make bench`` runs it, without its CPU sampling (a thread that would count),
    the client looking for unfinished instances every ``poll`` seconds."""
    import duratask as dt
    from benchmarks.workloads import (
        LIVE,
        any_with_status,
        check_all_completed,
        schedule_many,
        sequence,
        warm_up,
        workers,
    )

    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        await schedule_many(client, sequence, [STEPS] * orchestrations)
        while await any_with_status(client, LIVE):
            await asyncio.sleep(poll)
        await check_all_completed(client, orchestrations)


def _store_url(store: str, folder: Path) -> str:
    if store == "memory":
        return "memory://instructions"
    if store == "sqlite":
        return f"sqlite:///{folder / 'hub.db'}"
    raise SystemExit(f"unknown store {store!r}: memory or sqlite")


def _count(store: str, orchestrations: int, poll: float) -> int:
    """Instructions of one run of this module under callgrind (child mode)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            "--store",
            store,
            "--orchestrations",
            str(orchestrations),
            "--poll",
            str(poll),
        ]
        subprocess.run(command, check=True, capture_output=True)
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        if summary is None:
            raise SystemExit(f"no summary line in {out}")
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", help="memory or sqlite")
    parser.add_argument("--orchestrations", type=int, default=300)
    parser.add_argument(
        "--poll",
        type=float,
        default=POLL,
        help=f"seconds between the client's looks for unfinished instances (default {POLL})",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as folder:
            asyncio.run(_run(_store_url(args.store, Path(folder)), args.orchestrations, args.poll))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    base = _count(args.store, 1, args.poll)
    loaded = _count(args.store, args.orchestrations + 1, args.poll)
    per_activity = (loaded - base) / (args.orchestrations * STEPS)
    print(
        f"{args.store}: {per_activity / 1000:,.0f}K instructions per W1 activity "
        f"({args.orchestrations} orchestrations of {STEPS} activities; "
        f"{loaded:,} - {base:,} instructions)"
    )


if __name__ == "__main__":
    main()
