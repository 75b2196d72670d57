"""Where W3's time goes: a timeline of one-activity orchestrations, step by step.

Runs W3 (each orchestration scheduled and awaited before the next, worker and client in one
process) with the store's and the worker's main steps timed, and prints, for each step, the
median time from the client's call at which it began and ended. It wraps methods of the
store class and of the worker's internals for the run, so its times include the wrapping
(a few microseconds per step); read it for the budget, not as the W3 figure.

    python -m benchmarks.latency_budget                      # SQLite, 200 orchestrations
    python -m benchmarks.latency_budget --store postgresql   # at --pg-url (a fresh schema)

Steps: ``create`` (the client's ``create_instance``), ``create leased`` (the same, by an
in-process worker that leases the instance as it creates it: eager start; its commit does
not wait for the disk), ``create durable`` (the start waiting for a durable commit, the
first episode's, to cover the create before the client is told), ``lock`` (each
orchestration fetch; one that finds nothing is a poll or a second fetcher looking for
more), ``code`` (an episode on an orchestration code thread, from the hand-over to the
result back on the loop), ``commit`` (``commit_episode``), ``activity`` (the activity
itself) and, on SQLite, ``fsync`` (the durable ``COMMIT``, wherever it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

Marks = list[tuple[str, float]]


def _timed_async(
    owner: Any, name: str, label: str, marks: Marks
) -> Callable[..., Coroutine[Any, Any, Any]]:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        marks.append((label + " begins", time.perf_counter()))
        try:
            return await original(*args, **kwargs)
        finally:
            marks.append((label + " ends", time.perf_counter()))

    setattr(owner, name, timed)
    return timed


def _timed_sync(owner: Any, name: str, label: str, marks: Marks) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        marks.append((label + " begins", time.perf_counter()))
        try:
            return original(*args, **kwargs)
        finally:
            marks.append((label + " ends", time.perf_counter()))

    setattr(owner, name, timed)


def _instrument(store_class: type, marks: Marks) -> None:
    import duratask.worker.task_hub_worker as worker_module
    from duratask.worker import _code_runner

    _timed_async(store_class, "create_instance", "create", marks)
    if hasattr(store_class, "create_and_lease_instance"):  # eager start, by the worker
        _timed_async(store_class, "create_and_lease_instance", "create leased", marks)
    if hasattr(store_class, "wait_durable"):
        _timed_async(store_class, "wait_durable", "create durable", marks)
    _timed_async(store_class, "lock_next_orchestration_work_item", "lock", marks)
    _timed_async(store_class, "commit_episode", "commit", marks)
    _timed_async(_code_runner.OrchestrationCodeRunner, "run", "code", marks)
    _timed_async(worker_module, "run_activity", "activity", marks)
    if store_class.__name__.startswith("Sqlite"):
        from duratask.backends.sqlite import _database

        _timed_sync(_database.Database, "_commit_durably", "fsync", marks)


async def _timeline(url: str, store_class: type, samples: int) -> dict[str, list[float]]:
    import duratask as dt
    from benchmarks.workloads import sequence, warm_up, workers

    marks: Marks = []
    _instrument(store_class, marks)
    steps: dict[str, list[float]] = {}
    async with dt.AsyncTaskHubClient(url) as client, workers(url, 0):
        await warm_up(client)
        for _ in range(samples):
            marks.clear()
            started = time.perf_counter()
            instance_id = await client.schedule_new_orchestration(sequence, input=1)
            marks.append(("client: scheduled", time.perf_counter()))
            await client.wait_for_orchestration_completion(instance_id, timeout=60)
            marks.append(("client: saw it complete", time.perf_counter()))
            seen: dict[str, int] = {}
            for label, at in marks:
                seen[label] = seen.get(label, 0) + 1
                key = label if seen[label] == 1 else f"{label} (#{seen[label]})"
                steps.setdefault(key, []).append((at - started) * 1000)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", help="sqlite or postgresql")
    parser.add_argument("--orchestrations", type=int, default=200)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    from benchmarks.hubs import HubPlace

    with tempfile.TemporaryDirectory() as folder:
        place = HubPlace.new(args.store, folder, args.pg_url)
        store_class: type
        if args.store == "sqlite":
            from duratask.backends.sqlite import SqliteOrchestrationService

            store_class = SqliteOrchestrationService
        elif args.store == "postgresql":
            from duratask.backends.postgres import PostgresOrchestrationService

            store_class = PostgresOrchestrationService
        else:
            raise SystemExit(f"unknown store {args.store!r}: sqlite or postgresql")
        try:
            steps = asyncio.run(_timeline(place.duratask_url(), store_class, args.orchestrations))
        finally:
            place.cleanup()
    print(f"{args.store}: median ms from the client's call, {args.orchestrations} orchestrations")
    # Steps seen in most samples, in the order they happen (a step some samples lack, such as
    # a poll that came or did not, is left out).
    common = [k for k, v in steps.items() if len(v) >= 0.9 * args.orchestrations]
    for key in sorted(common, key=lambda k: statistics.median(steps[k])):
        print(f"{statistics.median(steps[key]):8.3f}  {key}")


if __name__ == "__main__":
    main()
