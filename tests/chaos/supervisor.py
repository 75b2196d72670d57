"""Worker processes under test: started, SIGKILLed at random moments, replaced, cleaned up.

:class:`Supervisor` runs ``chaos_worker.py`` subprocesses on one task hub from the test's
event loop. :meth:`Supervisor.run_chaos` is the fault schedule: after a random pause it
SIGKILLs a random worker that has finished starting and starts a replacement, until told to
stop. A worker that exits
without being killed fails the test (its log is in the error). :meth:`Supervisor.cleanup`
kills whatever is still running; the fixtures call it however the test ends.

A worker that exits with ``poison_exit`` was taken down by a poison activity on purpose: it
is counted in ``poison_deaths`` and replaced, not a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("chaos_worker.py")
STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 20.0


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True if it was set."""
    if stop.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class WorkerDied(AssertionError):
    """A worker process exited without being killed by the supervisor."""


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    log: Path
    ready_file: Path
    spawned_at: float  # wall-clock time, comparable with the ready file's mtime
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Supervisor:
    """The worker processes of one task hub."""

    store_url: str
    workdir: Path
    rng: random.Random
    lease_seconds: float = 1.0
    activity_ms: float = 0.0
    kill_interval: tuple[float, float] = (0.5, 2.0)
    workers: list[Worker] = field(default_factory=list)
    max_deliveries: int = 10
    episode_budget: float = 5.0
    max_retry_delay: float = 60.0
    poison_exit: int | None = None
    kills: int = 0
    kills_before_ready: int = 0
    poison_deaths: int = 0

    # -- one worker ---------------------------------------------------------------------------
    async def start_worker(self) -> Worker:
        index = len(self.workers)
        log = self.workdir / f"worker-{index}.log"
        command = [
            sys.executable,
            str(WORKER_SCRIPT),
            "--store",
            self.store_url,
            "--workdir",
            str(self.workdir),
            "--lease-seconds",
            str(self.lease_seconds),
            "--activity-ms",
            str(self.activity_ms),
            "--max-deliveries",
            str(self.max_deliveries),
            "--episode-budget",
            str(self.episode_budget),
            "--max-retry-delay",
            str(self.max_retry_delay),
        ]
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )
        worker = Worker(index, proc, log, self.workdir / f"ready-{proc.pid}", time.time())
        self.workers.append(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until ``worker`` processes work; fail if it exits first or takes too long."""
        deadline = time.monotonic() + timeout
        while not worker.ready_file.exists():
            if not worker.running:
                raise WorkerDied(self._died(worker))
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.pid} not ready after {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), timeout=0.02)  # the poll interval

    async def kill(self, worker: Worker) -> None:
        """SIGKILL ``worker`` and wait for it to be gone."""
        if not worker.ready_file.exists():
            self.kills_before_ready += 1
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGKILL)
        code = await asyncio.wait_for(worker.proc.wait(), timeout=EXIT_TIMEOUT)
        if self._poisoned(worker):  # poison got there first
            self.poison_deaths += 1
            return
        if code != -signal.SIGKILL:
            raise WorkerDied(f"{self._died(worker)}\n(it exited before the SIGKILL landed)")
        self.kills += 1

    # -- all of them --------------------------------------------------------------------------
    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.running]

    def check(self) -> None:
        """Fail if a worker exited on its own, other than by poison."""
        for worker in self.workers:
            if not worker.running and not worker.killed and not self._poisoned(worker):
                raise WorkerDied(self._died(worker))

    def _poisoned(self, worker: Worker) -> bool:
        return self.poison_exit is not None and worker.proc.returncode == self.poison_exit

    async def replace_poisoned(self) -> None:
        """Start a replacement for each worker that poison took down since the last call."""
        for worker in list(self.workers):
            if not worker.running and not worker.killed and self._poisoned(worker):
                worker.killed = True  # accounted for
                self.poison_deaths += 1
                await self.start_worker()

    async def start(self, count: int) -> None:
        """Start ``count`` workers and wait until all of them process work."""
        started = [await self.start_worker() for _ in range(count)]
        for worker in started:
            await self.wait_ready(worker)

    async def run_chaos(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: after a random pause, SIGKILL a random live worker and start
        a replacement (the victim may be a replacement still starting up)."""
        low, high = self.kill_interval
        next_kill = time.monotonic() + self.rng.uniform(low, high)
        while not await pause(stop, min(0.1, max(0.0, next_kill - time.monotonic()))):
            await self.replace_poisoned()
            self.check()
            if time.monotonic() < next_kill:
                continue
            # Victims are workers that finished starting: each death charges a delivery to
            # every orchestration its worker held, so killing replacements as they start
            # would poison healthy instances by the charging policy alone.
            ready = [w for w in self.alive() if w.ready_file.exists()]
            if not ready:
                continue  # the kill is due: it lands as soon as a worker is ready
            next_kill = time.monotonic() + self.rng.uniform(low, high)
            await self.kill(self.rng.choice(ready))
            await self.start_worker()
        await self.replace_poisoned()
        self.check()

    async def stop_all(self) -> None:
        """Stop every live worker with SIGTERM; each must exit cleanly. A replacement still
        starting up is waited for first: it handles SIGTERM only once it runs."""
        live = self.alive()
        for worker in live:
            await self.wait_ready(worker)
        for worker in live:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in live:
            code = await asyncio.wait_for(worker.proc.wait(), timeout=EXIT_TIMEOUT)
            if code != 0:
                raise WorkerDied(f"{self._died(worker)}\n(exit code {code} on SIGTERM)")

    async def cleanup(self) -> None:
        """Kill every worker still running and reap them all."""
        for worker in self.workers:
            if worker.running:
                worker.killed = True
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
        for worker in self.workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), timeout=EXIT_TIMEOUT)

    # -- reporting ----------------------------------------------------------------------------
    def startup_seconds(self) -> list[float]:
        """How long each worker that got ready took to, from its spawn."""
        times = []
        for worker in self.workers:
            with contextlib.suppress(FileNotFoundError):
                times.append(worker.ready_file.stat().st_mtime - worker.spawned_at)
        return sorted(times)

    def _died(self, worker: Worker) -> str:
        return (
            f"worker {worker.pid} (#{worker.index}) exited with {worker.proc.returncode} "
            f"without being killed\n{self.log_tail(worker)}"
        )

    @staticmethod
    def log_tail(worker: Worker, size: int = 4000) -> str:
        try:
            text = worker.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- {worker.log.name} ---\n{text[-size:]}"

    def logs(self, size: int = 2000) -> str:
        return "\n".join(self.log_tail(w, size) for w in self.workers if w.log.exists())

    def count_in_logs(self, text: str) -> int:
        """How many times ``text`` appears in all worker logs."""
        return sum(w.log.read_text(errors="replace").count(text) for w in self.workers)
