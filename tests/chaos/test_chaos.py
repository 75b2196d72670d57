"""Chaos: worker processes SIGKILLed at random while a mixed workload runs, on each store.

Three workers (``chaos_worker.py``) share a fresh task hub. The supervisor SIGKILLs a random
one every 0.5-2 s and starts a replacement; meanwhile the client starts the workload of
``workload.py`` (activity chains, fan-outs of about ten, durable timers of 50-300 ms,
sub-orchestrations, instances waiting for external events) and raises those events at random
moments, a third of them before the instance has even started. Everything random comes from
one seed, printed with the figures; ``DURATASK_CHAOS_SEED`` replays a run's workload and
schedules (not the processes' own timing).

When every instance is finished the kills stop, the hub must drain (no message, activity or
lease left) and the workers stop cleanly. Then:

- every instance (sub-orchestrations too) COMPLETED with the output the workload computed;
- every history is valid (``history_problems``: no task id scheduled twice, at most one
  result each, nothing after the end), holds each raised event once, and is stored as
  contiguous rows (each episode committed once);
- ``duratask.integrity.scan_hub`` finds no problem and checks every instance;
- every scheduled activity ran at least once, and nothing else ran (the run log).

The workload carries poison: ``KILLERS`` instances call an activity that kills its worker
(exit code 3) every time it runs, and one orchestration (``POISON.spinner``) spins without
ever yielding. Workers run with the default ``max_deliveries`` (``MAX_DELIVERIES``), a 1 s
episode budget and failed episodes retried after at most ``MAX_RETRY_DELAY``. Each killer
instance must end FAILED with ``PoisonWorkError`` naming its activity, its activity having
run at most ``MAX_DELIVERIES`` times; the spinner FAILED as poison (naming the episode
budget, unless random kills of the workers holding it used up its deliveries first); and
every other instance completes as above: poison never takes a bystander with it.

The figures go to the terminal summary and to ``tests/chaos/results/``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask import history as h

from . import chaos_app
from .conftest import POISON_ALLOWANCE, chaos_budget, chaos_instances, publish
from .history_check import history_problems, raised_events
from .hubs import Target, wait_for_drain
from .supervisor import Supervisor, pause
from .workload import Item, Raise, make_workload

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

WORKERS = 3
LEASE_SECONDS = 1.0
ACTIVITY_MS = 20.0  # long enough for kills to land inside activities
SCHEDULE_CHUNK = 5
CHUNK_GAP = (0.25, 0.75)  # about ten new instances a second
# On Azure Storage an outbox row left by a killed worker waits for its partition's new
# owner, who takes the partition once the blob lease runs out (15 s).
DRAIN_TIMEOUT = 60.0
POLL = 0.1
KILLERS = 1
MAX_DELIVERIES = 10  # the worker's default
EPISODE_BUDGET = 1.0
# Failed episodes (the spinner's, over budget) rest at most this long before their next
# delivery, so that the spinner uses up its deliveries within the run.
MAX_RETRY_DELAY = 1.0


@dataclass(frozen=True)
class Poison:
    """The poison instances: what each must fail with."""

    killers: tuple[str, ...] = tuple(f"poison-killer-{k}" for k in range(KILLERS))
    spinner: str | None = "poison-spinner"

    @property
    def ids(self) -> tuple[str, ...]:
        return (*self.killers, *([self.spinner] if self.spinner else []))


POISON = Poison()


async def start_poison(client: dt.AsyncTaskHubClient) -> None:
    for k, iid in enumerate(POISON.killers):
        await client.schedule_new_orchestration(chaos_app.calls_a_killer, input=k, instance_id=iid)
    if POISON.spinner is not None:
        await client.schedule_new_orchestration(chaos_app.spins, instance_id=POISON.spinner)


async def check_poison(
    client: dt.AsyncTaskHubClient, workdir: Path
) -> tuple[list[str], dict[str, Any]]:
    """What is wrong with how the poison instances ended, and some figures."""
    problems = []
    figures: dict[str, Any] = {}
    runs = Counter(r["instance"] for r in activity_runs(workdir))
    for iid in POISON.ids:
        state = await client.get_orchestration_state(iid)
        if state is None or state.runtime_status is not dt.OrchestrationStatus.FAILED:
            status = state.runtime_status.value if state else "missing"
            problems.append(f"{iid}: {status}, expected FAILED as poison")
            continue
        reason = str(state.failure_details)
        if iid == POISON.spinner:
            wanted = ["PoisonWorkError"]
            figures["spinner_stopped_by"] = "budget" if "episode budget" in reason else "kills"
        else:
            wanted = ["PoisonWorkError", "'kill_worker' was delivered"]
        if not all(w in reason for w in wanted):
            problems.append(f"{iid}: failed with {reason[:300]!r}, expected {wanted}")
        if iid != POISON.spinner and not 1 <= runs[iid] <= MAX_DELIVERIES:
            problems.append(f"{iid}: its killer activity ran {runs[iid]} times")
    figures["killer_runs"] = [runs[iid] for iid in POISON.killers]
    return problems, figures


@dataclass
class ClientLog:
    """What the client did, for the figures."""

    raised: int = 0
    raised_before_start: int = 0
    scheduled_by: float = 0.0
    finished_by: float = 0.0
    problems: list[str] = field(default_factory=list)


def median_and_max(values: list[float]) -> tuple[float, float]:
    return (statistics.median(values), max(values)) if values else (0.0, 0.0)


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def raise_event(
    client: dt.AsyncTaskHubClient, iid: str, event: Raise, stop: asyncio.Event, log: ClientLog
) -> None:
    await pause(stop, event.delay)
    state = await client.get_orchestration_state(iid)
    if state is not None and state.runtime_status is dt.OrchestrationStatus.PENDING:
        log.raised_before_start += 1
    await client.raise_orchestration_event(iid, event.name, event.value)
    log.raised += 1


async def drive(
    client: dt.AsyncTaskHubClient,
    items: list[Item],
    rng: random.Random,
    stop: asyncio.Event,
    deadline: float,
    began: float,
    log: ClientLog,
) -> None:
    """Start the poison and the workload in chunks, raise the workload's events, and wait
    until all of it finished."""
    await start_poison(client)
    async with asyncio.TaskGroup() as raising:
        for start in range(0, len(items), SCHEDULE_CHUNK):
            for item in items[start : start + SCHEDULE_CHUNK]:
                await client.schedule_new_orchestration(
                    item.orchestration, input=item.spec, instance_id=item.instance_id
                )
                for event in item.raises:
                    raising.create_task(raise_event(client, item.instance_id, event, stop, log))
            await pause(stop, rng.uniform(*CHUNK_GAP))
        log.scheduled_by = time.monotonic() - began
    for iid in [*POISON.ids, *(item.instance_id for item in items)]:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            await client.wait_for_orchestration_completion(iid, timeout=remaining)
        except dt.OrchestrationWaitTimeoutError:
            log.problems.append(await describe_unfinished(client, items))
            return
    log.finished_by = time.monotonic() - began


async def describe_unfinished(client: dt.AsyncTaskHubClient, items: list[Item]) -> str:
    """The instances not finished by the deadline, with the tail of their histories."""
    lines = []
    for iid in POISON.ids:
        state = await client.get_orchestration_state(iid)
        if state is None or not state.runtime_status.is_terminal:
            lines.append(f"  {iid}: {state.runtime_status.value if state else 'missing'}")
    for item in items:
        for iid in (item.instance_id, *item.children):
            state = await client.get_orchestration_state(iid)
            if state is not None and state.runtime_status.is_terminal:
                continue
            status = state.runtime_status.value if state else "missing"
            tail = []
            if state is not None:
                events = await client.get_orchestration_history(iid)
                tail = [type(e).__name__ for e in events[-8:]]
            lines.append(f"  {iid}: {status}; history ends {tail}")
    return "unfinished at the deadline:\n" + "\n".join(lines[:30])


async def hub_integrity(client: dt.AsyncTaskHubClient, instances: int) -> list[str] | None:
    """The problems ``duratask.integrity`` finds in the hub (None where it does not exist)."""
    try:
        integrity = importlib.import_module("duratask.integrity")
    except ImportError:
        return None
    report = await integrity.scan_hub(client)
    problems = [f"integrity: {problem}" for problem in report.problems]
    if report.instances_checked != instances:
        problems.append(
            f"integrity: checked {report.instances_checked} instances "
            f"(skipped {report.instances_skipped}) of {instances}"
        )
    return problems


def activity_runs(workdir: Path) -> list[dict[str, Any]]:
    try:
        text = (workdir / chaos_app.ACTIVITY_LOG).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()]


@dataclass
class Findings:
    """What the checks found: work lost (an instance not completed as expected, an activity
    that never ran) and anything else wrong (histories, stored rows, the run log)."""

    lost: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*(f"LOST {p}" for p in self.lost), *(f"INVALID {p}" for p in self.invalid)]


async def check_run(
    client: dt.AsyncTaskHubClient, target: Target, items: list[Item], workdir: Path
) -> tuple[Findings, dict[str, Any]]:
    """Every check of the docstring; returns what they found and some figures."""
    found = Findings()
    expected: dict[str, Any] = {}
    raises: dict[str, dict[str, int]] = {}
    for item in items:
        expected[item.instance_id] = item.expected
        raises[item.instance_id] = dict(Counter(r.name for r in item.raises))
        for child_id, output in item.children.items():
            expected[child_id] = output
            raises[child_id] = {}

    histories: dict[str, list[h.HistoryEvent]] = {}
    for iid, output in expected.items():
        state = await client.get_orchestration_state(iid)
        if state is None:
            found.lost.append(f"{iid}: no such instance")
            continue
        if state.runtime_status is not dt.OrchestrationStatus.COMPLETED:
            found.lost.append(f"{iid}: {state.runtime_status.value} {state.failure_details}")
        elif state.output != output:
            found.lost.append(f"{iid}: output {state.output!r}, expected {output!r}")
        events = await client.get_orchestration_history(iid)
        histories[iid] = events
        for problem in history_problems(events, finished=True, all_answered=True):
            found.invalid.append(f"{iid}: history {problem}")
        if raised_events(events) != raises[iid]:
            found.invalid.append(f"{iid}: events {raised_events(events)}, raised {raises[iid]}")

    stored = await asyncio.to_thread(target.instance_ids)
    if stored != {*expected, *POISON.ids}:
        extra = sorted(stored - {*expected, *POISON.ids})
        missing = sorted({*expected, *POISON.ids} - stored)
        found.invalid.append(f"instances: unexpected {extra[:10]}, missing {missing[:10]}")
    numbers = await asyncio.to_thread(target.sequence_numbers)
    for iid, events in histories.items():
        if numbers.get(iid) != list(range(len(events))):
            found.invalid.append(f"{iid}: history rows {numbers.get(iid)}, {len(events)} events")
    found.invalid.extend(await asyncio.to_thread(target.storage_problems))

    scheduled = {
        (iid, e.event_id)
        for iid, events in histories.items()
        for e in events
        if isinstance(e, h.TaskScheduled)
    }
    runs = [r for r in activity_runs(workdir) if r["instance"] not in POISON.ids]
    ran = Counter((r["instance"], r["task_id"]) for r in runs)
    for never_ran in sorted(scheduled - set(ran)):
        found.lost.append(f"activity {never_ran} never ran")
    unscheduled = sorted(set(ran) - scheduled)
    if unscheduled:
        found.invalid.append(f"activities that ran without being scheduled: {unscheduled[:10]}")
    wanted = sum(item.activities for item in items)
    if len(scheduled) != wanted:
        found.invalid.append(f"{len(scheduled)} activities scheduled, the workload has {wanted}")
    integrity = await hub_integrity(client, len(expected) + len(POISON.ids))
    found.invalid.extend(integrity or [])
    figures = {
        "integrity_check": "unavailable" if integrity is None else "done",
        "activity_runs": len(runs),
        "activities": len(scheduled),
        "re_executions": len(runs) - len(ran),
        "worker_pids_running_activities": len({r["pid"] for r in runs}),
        **await asyncio.to_thread(target.figures),
    }
    return found, figures


async def test_random_kills_under_a_mixed_workload(
    target: Target, supervisors: list[Supervisor], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("DURATASK_CHAOS_SEED") or secrets.randbits(32))
    print(f"chaos[{target.kind}] seed={seed} (DURATASK_CHAOS_SEED={seed} replays the schedule)")
    rng = random.Random(seed)
    count = chaos_instances(request.config, target.kind)
    items = make_workload(random.Random(rng.random()), count)
    supervisor = Supervisor(
        target.url,
        tmp_path,
        random.Random(rng.random()),
        kill_interval=target.kill_interval,
        lease_seconds=LEASE_SECONDS,
        activity_ms=ACTIVITY_MS,
        max_deliveries=MAX_DELIVERIES,
        episode_budget=EPISODE_BUDGET,
        max_retry_delay=MAX_RETRY_DELAY,
        poison_exit=chaos_app.POISON_EXIT,
    )
    supervisors.append(supervisor)
    client_rng = random.Random(rng.random())
    log = ClientLog()

    began = time.monotonic()
    deadline = began + chaos_budget(count, target.kind) + POISON_ALLOWANCE
    async with dt.AsyncTaskHubClient(target.client_url) as client:
        await supervisor.start(WORKERS)
        stop = asyncio.Event()

        async def client_side() -> None:
            try:
                await drive(client, items, client_rng, stop, deadline, began, log)
            finally:
                stop.set()

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(supervisor.run_chaos(stop))
                group.create_task(client_side())
        except BaseExceptionGroup as errors:
            raise first_error(errors) from None
        assert not log.problems, f"seed={seed}\n{log.problems[0]}\n{supervisor.logs()}"
        wall = time.monotonic() - began
        await wait_for_drain(target, supervisor, time.monotonic() + DRAIN_TIMEOUT)
        await supervisor.stop_all()
        found, run_figures = await check_run(client, target, items, tmp_path)
        poison_problems, poison_figures = await check_poison(client, tmp_path)
        found.invalid.extend(poison_problems)

    figures = {
        "instances": count,
        "sub_orchestrations": sum(len(item.children) for item in items),
        "kills": supervisor.kills,
        "kills_before_ready": supervisor.kills_before_ready,
        "poison_instances": len(POISON.ids),
        "worker_deaths_by_poison": supervisor.poison_deaths,
        **poison_figures,
        "worker_startup_s": "{:.2f}/{:.2f}".format(*median_and_max(supervisor.startup_seconds())),
        **run_figures,
        "events_raised": log.raised,
        "raised_before_start": log.raised_before_start,
        "lease_lost_warnings": supervisor.count_in_logs("lease lost"),
        "errors_logged": supervisor.count_in_logs(" ERROR "),
        "lost": len(found.lost),
        "invalid": len(found.invalid),
        "wall": f"{wall:.1f}s",
        "seed": seed,
    }
    kinds = Counter(item.orchestration.__name__ for item in items)
    problems = found.all()
    details = {
        "workload": dict(kinds),
        "scheduled_by_s": round(log.scheduled_by, 2),
        "finished_by_s": round(log.finished_by, 2),
        "startup_of_each_worker_s": [round(t, 3) for t in supervisor.startup_seconds()],
        "problems": problems,
    }
    publish(f"chaos[{target.kind}]", figures, details)
    assert not problems, f"seed={seed}: {len(problems)} problems:\n" + "\n".join(problems[:30])
    assert supervisor.kills >= 1, "no worker was killed during the run"
    assert supervisor.poison_deaths >= 1, "no worker was taken down by the poison activity"
    assert run_figures["worker_pids_running_activities"] >= 2, "the work was not shared"
