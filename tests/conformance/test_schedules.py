"""Schedules on every store: specs, policies, client operations, daylight saving changes, and
each slot run exactly once with several firing workers and a worker dying mid-fire.

Time is the :class:`FakeClock` the store, the client and the scheduler share; a test moves it
from one due time to the next and lets the scheduler fire, as a worker would on waking.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import CatchUp, Interval, Overlap, ScheduleSpec
from duratask._schedule_codec import definition_from_json
from duratask._schedule_plan import run_message, start_run
from duratask.backends.base import TaskHubStore
from duratask.history import ExecutionStarted
from duratask.worker._scheduler import Scheduler

from .conftest import FakeClock, StoreHub

CLAIM = timedelta(seconds=30)
HOURLY = ScheduleSpec(cron="0 * * * *")


class Firing:
    """A client and a scheduler on one store and one fake clock."""

    def __init__(self, store: TaskHubStore, clock: FakeClock, owner: str = "worker-a") -> None:
        self.store = store
        self.clock = clock
        self.client = dt.AsyncTaskHubClient(store, clock=clock)
        self.scheduler = Scheduler(store, owner, clock, CLAIM)

    async def create(self, schedule_id: str, spec: ScheduleSpec, **kwargs: Any) -> dt.ScheduleInfo:
        """Create a schedule of "Report"; its runs may overlap unless said otherwise (no
        worker runs them: they stay PENDING)."""
        kwargs.setdefault("overlap", Overlap.ALLOW_ALL)
        return await self.client.create_schedule(schedule_id, "Report", spec, **kwargs)

    async def fire(self) -> None:
        while await self.scheduler.fire_due():
            pass

    async def to(self, when: datetime) -> None:
        """Let time pass to ``when``, firing at every due time on the way."""
        while True:
            due = await self.store.next_schedule_due_at()
            if due is None or due > when:
                break
            self.clock.now = max(self.clock.now, due)
            await self.fire()
        self.clock.now = when
        await self.fire()

    async def runs(self, schedule_id: str) -> list[str]:
        page = await self.client.query_orchestrations(
            instance_id_prefix=f"{schedule_id}@", page_size=1000
        )
        return sorted(s.instance_id for s in page.states)


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


@pytest.fixture
async def firing(store: TaskHubStore, clock: FakeClock) -> AsyncIterator[Firing]:
    clock.now = at(12, 30)
    f = Firing(store, clock)
    yield f
    await f.client.close()


def run_id(schedule_id: str, when: datetime) -> str:
    return f"{schedule_id}@{when.strftime('%Y-%m-%dT%H:%M:%S')}Z"


# -- specs
async def test_a_cron_schedule_starts_one_tagged_run_per_slot(firing: Firing) -> None:
    info = await firing.create("hourly", HOURLY, input={"n": 1})
    assert info.next_fire_at == at(13)
    await firing.to(at(16, 30))
    assert await firing.runs("hourly") == [run_id("hourly", at(h)) for h in (13, 14, 15, 16)]
    state = await firing.client.get_orchestration_state(run_id("hourly", at(14)))
    assert state is not None and state.name == "Report" and state.input == {"n": 1}
    tags = {}
    item = await firing.store.lock_next_orchestration_work_item("w", CLAIM)
    while item is not None:
        event = item.messages[0].message.event
        assert isinstance(event, ExecutionStarted)
        tags[item.instance_id] = event.tags
        item = await firing.store.lock_next_orchestration_work_item("w", CLAIM)
    assert tags[run_id("hourly", at(14))] == {
        "duratask.schedule": "hourly",
        "duratask.slot": "2024-01-01T14:00:00Z",
    }
    described = await firing.client.describe_schedule("hourly", runs=2, next_fire_times=3)
    assert described.info.runs == 4
    assert [r.instance_id for r in described.recent_runs] == [
        run_id("hourly", at(16)),
        run_id("hourly", at(15)),
    ]
    assert all(r.status is dt.OrchestrationStatus.PENDING for r in described.recent_runs)
    assert described.next_fire_times == [at(17), at(18), at(19)]


async def test_an_interval_schedule_fires_at_its_offset(firing: Firing) -> None:
    spec = ScheduleSpec(intervals=[Interval(timedelta(minutes=20), offset=timedelta(minutes=5))])
    await firing.create("every20", spec)
    await firing.to(at(13, 30))
    expected = [at(12, 45), at(13, 5), at(13, 25)]
    assert await firing.runs("every20") == [run_id("every20", t) for t in expected]


async def test_a_six_field_cron_fires_on_seconds(firing: Firing) -> None:
    await firing.create("fast", ScheduleSpec(cron="*/20 * * * * *"))
    await firing.to(at(12, 31))
    assert len(await firing.runs("fast")) == 3


async def test_jitter_delays_each_slot_the_same_way_on_every_look(firing: Firing) -> None:
    spec = ScheduleSpec(cron="0 * * * *", jitter=timedelta(minutes=10))
    info = await firing.create("jittery", spec)
    assert info.next_fire_at is not None and at(13) <= info.next_fire_at < at(13, 10)
    firing.clock.now = info.next_fire_at - timedelta(microseconds=1)
    await firing.fire()
    assert await firing.runs("jittery") == []
    await firing.to(info.next_fire_at)
    assert await firing.runs("jittery") == [run_id("jittery", at(13))]


async def test_start_and_end_times_bound_the_slots_and_the_schedule_finishes(
    firing: Firing,
) -> None:
    spec = ScheduleSpec(cron="0 * * * *", start_at=at(14), end_at=at(16))
    await firing.create("bounded", spec)
    await firing.to(at(20))
    assert await firing.runs("bounded") == [run_id("bounded", at(h)) for h in (14, 15, 16)]
    info = (await firing.client.describe_schedule("bounded")).info
    assert info.finished and info.next_fire_at is None
    assert await firing.store.next_schedule_due_at() is None


async def test_the_run_limit_stops_the_schedule(firing: Firing) -> None:
    await firing.create("three", HOURLY, run_limit=3)
    await firing.to(at(20))
    assert len(await firing.runs("three")) == 3
    described = await firing.client.describe_schedule("three")
    assert described.info.finished and described.next_fire_times == []


# -- daylight saving
async def test_spring_forward_runs_a_skipped_time_once_after_the_gap(firing: Firing) -> None:
    firing.clock.now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    spec = ScheduleSpec(cron="30 2 * * *", time_zone="America/New_York")
    await firing.create("dst", spec)
    await firing.to(datetime(2026, 3, 10, 12, tzinfo=UTC))
    # 02:30 EST is 07:30Z; on 8 March 02:30 does not exist: it runs at 03:00 EDT (07:00Z).
    assert await firing.runs("dst") == [
        "dst@2026-03-07T07:30:00Z",
        "dst@2026-03-08T07:00:00Z",
        "dst@2026-03-09T06:30:00Z",
        "dst@2026-03-10T06:30:00Z",
    ]


async def test_fall_back_runs_a_repeated_time_once(firing: Firing) -> None:
    firing.clock.now = datetime(2026, 10, 30, 12, tzinfo=UTC)
    spec = ScheduleSpec(cron="30 1 * * *", time_zone="America/New_York")
    await firing.create("dst", spec)
    await firing.to(datetime(2026, 11, 3, 12, tzinfo=UTC))
    # 01:30 happens twice on 1 November (EDT then EST): one run, at the first.
    assert await firing.runs("dst") == [
        "dst@2026-10-31T05:30:00Z",
        "dst@2026-11-01T05:30:00Z",
        "dst@2026-11-02T06:30:00Z",
        "dst@2026-11-03T06:30:00Z",
    ]


# -- catch-up
async def test_catch_up_window_runs_the_missed_slots_inside_it(firing: Firing) -> None:
    await firing.create("win", HOURLY, catch_up=CatchUp.WINDOW, catch_up_window=timedelta(hours=3))
    firing.clock.now = at(22, 30)  # no worker fired since 12:30
    await firing.fire()
    assert await firing.runs("win") == [run_id("win", at(h)) for h in (20, 21, 22)]
    await firing.to(at(23, 30))
    assert (await firing.runs("win"))[-1] == run_id("win", at(23))


async def test_catch_up_latest_runs_only_the_last_missed_slot(firing: Firing) -> None:
    await firing.create("last", HOURLY, catch_up=CatchUp.LATEST)
    firing.clock.now = at(22, 30)
    await firing.fire()
    assert await firing.runs("last") == [run_id("last", at(22))]


async def test_catch_up_none_skips_missed_slots_but_runs_on_time_ones(firing: Firing) -> None:
    await firing.create("none", HOURLY, catch_up=CatchUp.NONE)
    firing.clock.now = at(22, 30)
    await firing.fire()
    assert await firing.runs("none") == []
    await firing.to(at(23, 30))
    assert await firing.runs("none") == [run_id("none", at(23))]


# -- overlap (runs stay PENDING: no worker runs them)
async def test_overlap_skip_skips_slots_while_the_previous_run_runs(firing: Firing) -> None:
    await firing.create("skip", HOURLY, overlap=Overlap.SKIP)
    await firing.to(at(15, 30))
    assert await firing.runs("skip") == [run_id("skip", at(13))]
    described = await firing.client.describe_schedule("skip")
    assert described.info.skipped == 2
    assert [r.kind for r in described.recent_runs] == ["skipped", "skipped", "scheduled"]


async def test_overlap_allow_all_starts_every_slot(firing: Firing) -> None:
    await firing.create("all", HOURLY, overlap=Overlap.ALLOW_ALL)
    await firing.to(at(15, 30))
    assert len(await firing.runs("all")) == 3


async def test_overlap_terminate_previous_terminates_it(firing: Firing) -> None:
    await firing.create("term", HOURLY, overlap=Overlap.TERMINATE_PREVIOUS)
    await firing.to(at(14, 30))
    assert len(await firing.runs("term")) == 2
    history = await firing.store.get_history(run_id("term", at(13)))
    assert history == []  # no worker: the terminate waits as a message
    # The terminate was sent: a worker applying it would end the run TERMINATED.
    item = await firing.store.lock_next_orchestration_work_item("w", CLAIM)
    seen = []
    while item is not None:
        seen.append((item.instance_id, [type(m.message.event).__name__ for m in item.messages]))
        item = await firing.store.lock_next_orchestration_work_item("w", CLAIM)
    assert (run_id("term", at(13)), ["ExecutionStarted", "ExecutionTerminated"]) in seen


async def test_overlap_buffer_one_starts_the_buffered_slot_when_the_run_ends(
    firing: Firing,
) -> None:
    await firing.create("buf", HOURLY, overlap=Overlap.BUFFER_ONE)
    await firing.to(at(15, 30))  # 13:00 runs, 14:00 waits, 15:00 is skipped
    assert await firing.runs("buf") == [run_id("buf", at(13))]
    assert (await firing.client.describe_schedule("buf")).info.skipped == 1
    await finish(firing.store, run_id("buf", at(13)))
    await firing.to(at(15, 31))
    assert await firing.runs("buf") == [run_id("buf", at(13)), run_id("buf", at(14))]


async def finish(store: TaskHubStore, instance_id: str) -> None:
    """End a run as a worker would (COMPLETED), without running its code."""
    item = await store.lock_next_orchestration_work_item("finisher", CLAIM)
    assert item is not None and item.instance_id == instance_id
    from duratask.backends.base import OrchestrationCommit
    from duratask.history import ExecutionCompleted
    from duratask.state import OrchestrationStatus

    assert item.state is not None
    started = item.messages[0].message.event
    done = ExecutionCompleted(
        timestamp=started.timestamp, status=OrchestrationStatus.COMPLETED, result="null"
    )
    state = replace(item.state, runtime_status=OrchestrationStatus.COMPLETED)
    commit = OrchestrationCommit(
        state=state,
        new_events=[started, done],
        consumed_message_ids=[m.message_id for m in item.messages],
    )
    await store.commit_episode(item.fence(), commit)


# -- client operations
async def test_pause_skips_slots_and_resume_goes_on_from_now(firing: Firing) -> None:
    await firing.create("p", HOURLY, overlap=Overlap.ALLOW_ALL)
    await firing.to(at(13, 30))
    paused = await firing.client.pause_schedule("p", note="maintenance")
    assert paused.paused and paused.note == "maintenance" and paused.next_fire_at is None
    await firing.to(at(16, 30))
    assert await firing.runs("p") == [run_id("p", at(13))]
    resumed = await firing.client.resume_schedule("p", note="done")
    assert not resumed.paused and resumed.next_fire_at == at(17)
    await firing.to(at(17, 30))
    assert await firing.runs("p") == [run_id("p", at(13)), run_id("p", at(17))]


async def test_trigger_starts_a_run_now(firing: Firing) -> None:
    await firing.create("t", HOURLY)
    triggered = await firing.client.trigger_schedule("t")
    assert triggered == "t@2024-01-01T12:30:00Z-manual"
    assert await firing.client.get_orchestration_state(triggered) is not None
    described = await firing.client.describe_schedule("t")
    assert described.recent_runs[0].kind == "triggered"
    assert described.info.runs == 0  # a manual run does not count against the limit


async def test_backfill_runs_each_slot_of_the_range_once(firing: Firing) -> None:
    await firing.create("b", HOURLY)
    started = await firing.client.backfill_schedule("b", at(3), at(5))
    assert started == [run_id("b", at(h)) for h in (3, 4, 5)]
    assert await firing.client.backfill_schedule("b", at(2), at(4)) == [run_id("b", at(2))]
    assert len(await firing.runs("b")) == 4


async def test_update_changes_what_and_when_from_now_on(firing: Firing) -> None:
    await firing.create("u", HOURLY, overlap=Overlap.ALLOW_ALL)
    await firing.to(at(13, 30))
    updated = await firing.client.update_schedule(
        "u", spec=ScheduleSpec(cron="15 * * * *"), input=7, orchestration="Other"
    )
    assert updated.next_fire_at == at(14, 15) and updated.input == 7
    assert updated.overlap is Overlap.ALLOW_ALL  # not given: kept
    await firing.to(at(14, 30))
    state = await firing.client.get_orchestration_state(run_id("u", at(14, 15)))
    assert state is not None and state.name == "Other" and state.input == 7
    with pytest.raises(dt.InvalidScheduleError):
        await firing.client.update_schedule("u", run_limit=0)
    assert (await firing.client.describe_schedule("u")).info.run_limit is None


async def test_list_and_delete(firing: Firing) -> None:
    for sid in ("b-2", "a-1", "b-1"):
        await firing.create(sid, HOURLY)
    assert [s.schedule_id for s in await firing.client.list_schedules()] == ["a-1", "b-1", "b-2"]
    assert [s.schedule_id for s in await firing.client.list_schedules(prefix="b-")] == [
        "b-1",
        "b-2",
    ]
    await firing.to(at(13, 30))
    await firing.client.delete_schedule("b-1")
    with pytest.raises(dt.ScheduleNotFoundError):
        await firing.client.describe_schedule("b-1")
    with pytest.raises(dt.ScheduleNotFoundError):
        await firing.client.delete_schedule("b-1")
    assert await firing.runs("b-1") == [run_id("b-1", at(13))]  # its runs stay
    await firing.to(at(14, 30))
    assert await firing.runs("b-1") == [run_id("b-1", at(13))]


async def test_an_existing_id_is_refused_and_the_schedule_kept(firing: Firing) -> None:
    await firing.create("dup", HOURLY, input=1)
    with pytest.raises(dt.ScheduleAlreadyExistsError):
        await firing.client.create_schedule("dup", "Other", HOURLY, input=2)
    info = (await firing.client.describe_schedule("dup")).info
    assert info.orchestration == "Report" and info.input == 1


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: ScheduleSpec(cron="61 * * * *"), "invalid cron expression"),
        (lambda: ScheduleSpec(cron="* * *"), "3 fields"),
        (lambda: ScheduleSpec(cron="0 * * * *", time_zone="Mars/Olympus"), "unknown time zone"),
        (lambda: ScheduleSpec(intervals=[Interval(timedelta(0))]), "at least one second"),
        (
            lambda: ScheduleSpec(cron="0 * * * *", start_at=at(14), end_at=at(13)),
            "before start_at",
        ),
        (lambda: ScheduleSpec(), "at least one cron expression or interval"),
    ],
)
def test_a_bad_spec_is_refused_with_a_typed_error(make: Any, problem: str) -> None:
    with pytest.raises(dt.InvalidScheduleError, match=problem):
        make()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"schedule_id": "a@b"}, "must not contain '@'"),
        ({"schedule_id": ""}, "non-empty"),
        ({"run_limit": 0}, "run_limit"),
        ({"catch_up_window": timedelta(0)}, "catch_up_window"),
        ({"spec": "0 * * * *"}, "ScheduleSpec"),
    ],
)
async def test_a_bad_schedule_stores_nothing(
    firing: Firing, kwargs: dict[str, Any], problem: str
) -> None:
    args: dict[str, Any] = {"schedule_id": "s", "orchestration": "Report", "spec": HOURLY}
    args.update(kwargs)
    with pytest.raises(dt.InvalidScheduleError, match=problem):
        await firing.client.create_schedule(**args)
    assert await firing.client.list_schedules() == []


# -- exactly once
async def test_two_schedulers_firing_together_start_each_slot_once(
    store_hub: StoreHub, store: TaskHubStore, peer: TaskHubStore, clock: FakeClock
) -> None:
    clock.now = at(12, 30)
    a, b = Firing(store, clock, "worker-a"), Firing(peer, clock, "worker-b")
    for n in range(5):
        await a.create(f"s{n}", HOURLY)
    for hour in range(13, 19):
        clock.now = at(hour)
        await asyncio.gather(a.fire(), b.fire(), a.fire(), b.fire())
    for n in range(5):
        assert await a.runs(f"s{n}") == [run_id(f"s{n}", at(h)) for h in range(13, 19)]
        assert (await a.client.describe_schedule(f"s{n}")).info.runs == 6
    await a.client.close()
    await b.client.close()


async def test_a_worker_dying_after_starting_a_run_leaves_it_counted_once(
    firing: Firing,
) -> None:
    await firing.create("c", HOURLY, overlap=Overlap.SKIP)
    firing.clock.now = at(13)
    # A worker claims the schedule, starts the 13:00 run, and dies before recording it.
    (record,) = await firing.store.due_schedules(at(13), 10)
    claimed = replace(record, claimed_by="dead-worker", next_due_at=at(13) + CLAIM)
    assert await firing.store.update_schedule(claimed)
    definition = definition_from_json(record.definition)
    slot_run = run_id("c", at(13))
    assert await start_run(firing.store, run_message("c", definition, at(13), at(13), slot_run))
    await firing.fire()  # its claim holds: nobody else looks
    assert (await firing.client.describe_schedule("c")).info.runs == 0
    # The claim expires; another worker takes over and finds the run already there.
    await firing.to(at(13) + CLAIM)
    described = await firing.client.describe_schedule("c")
    assert await firing.runs("c") == [slot_run]
    assert described.info.runs == 1 and described.info.skipped == 0
    assert described.recent_runs[0].instance_id == slot_run


async def test_a_client_change_waits_for_a_live_claim(firing: Firing) -> None:
    await firing.create("w", HOURLY)
    firing.clock.now = at(13)
    (record,) = await firing.store.due_schedules(at(13), 10)
    claimed = replace(record, claimed_by="busy-worker", next_due_at=at(13) + CLAIM)
    assert await firing.store.update_schedule(claimed)
    pausing = asyncio.create_task(firing.client.pause_schedule("w"))
    await asyncio.sleep(0.05)
    assert not pausing.done()
    released = replace(claimed, claimed_by=None, revision=claimed.revision + 1)
    assert await firing.store.update_schedule(released)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pausing, 5)
    assert pausing.done() and (await pausing).paused


# -- idle cost
async def test_an_idle_scheduler_looks_about_once_a_second(
    firing: Firing, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(20):
        await firing.create(f"idle-{n}", ScheduleSpec(cron="0 0 1 1 *"))
    looks = 0
    due_schedules = firing.store.due_schedules

    async def counted(now: datetime, limit: int) -> list[Any]:
        nonlocal looks
        looks += 1
        return await due_schedules(now, limit)

    monkeypatch.setattr(firing.store, "due_schedules", counted)
    await firing.scheduler.start()
    await asyncio.sleep(1.5)
    await firing.scheduler.stop()
    assert 1 <= looks <= 3  # a spinning scheduler would look thousands of times
