"""A worker process for W1's scale-out runs: ``python -m benchmarks.worker_proc STORE_URL``.

Prints ``ready`` once its worker is running, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import duratask as dt
from benchmarks.workloads import new_worker


async def main(url: str) -> None:
    # Open (and migrate) the hub first, so "ready" means the worker can fetch work at once.
    async with dt.AsyncTaskHubClient(url) as client:
        await client.query_orchestrations(page_size=1)
    worker = new_worker(url)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(worker.shutdown()))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)
    if task.done():
        task.result()
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
