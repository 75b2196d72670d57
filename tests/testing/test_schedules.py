"""Schedules on the time-skipping hub: a year of daily runs in a blink, each run really run."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import duratask as dt
from duratask import Overlap, ScheduleSpec
from duratask.testing import SyncTimeSkippingHub, TimeSkippingHub

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def nightly(ctx: dt.OrchestrationContext, n: int) -> str:
    return f"{n} at {ctx.current_utc_datetime.isoformat()}"


async def slow(ctx: dt.OrchestrationContext, _: None) -> None:
    await ctx.create_timer(timedelta(hours=30))


async def test_a_year_of_daily_runs_passes_in_virtual_time() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(nightly)
        spec = ScheduleSpec(cron="0 3 * * *", time_zone="Europe/Paris")
        await hub.client.create_schedule("nightly", nightly, spec, input=7)
        started = time.monotonic()
        await hub.advance(timedelta(days=365))
        elapsed = time.monotonic() - started
        page = await hub.client.query_orchestrations(instance_id_prefix="nightly@", page_size=500)
        assert len(page.states) == 365
        assert {s.runtime_status for s in page.states} == {dt.OrchestrationStatus.COMPLETED}
        # 03:00 in Paris: 02:00Z in winter, 01:00Z in summer; each run ran at its slot.
        by_id = {s.instance_id: s for s in page.states}
        assert by_id["nightly@2026-01-15T02:00:00Z"].output == "7 at 2026-01-15T02:00:00+00:00"
        assert by_id["nightly@2026-07-15T01:00:00Z"].output == "7 at 2026-07-15T01:00:00+00:00"
        described = await hub.client.describe_schedule("nightly")
        assert described.info.runs == 365
        assert described.next_fire_times[0] == datetime(2027, 1, 1, 2, tzinfo=UTC)
        assert elapsed < 30  # wall time: milliseconds per simulated day


async def test_overlap_skip_sees_runs_that_outlast_their_slot() -> None:
    async with TimeSkippingHub(start=T0) as hub:
        hub.register(slow)
        await hub.client.create_schedule(
            "slow", slow, ScheduleSpec(cron="0 0 * * *"), overlap=Overlap.SKIP
        )
        await hub.advance(timedelta(days=4, hours=1))
        page = await hub.client.query_orchestrations(instance_id_prefix="slow@")
        # Each run lasts 30 h: the next day's slot is skipped while it runs.
        assert sorted(s.instance_id for s in page.states) == [
            "slow@2026-01-02T00:00:00Z",
            "slow@2026-01-04T00:00:00Z",
        ]
        assert (await hub.client.describe_schedule("slow")).info.skipped == 2


def test_the_sync_hub_and_client_manage_schedules() -> None:
    with SyncTimeSkippingHub(start=T0) as hub:
        hub.register(nightly)
        hub.client.create_schedule("s", nightly, ScheduleSpec(cron="0 * * * *"), input=1)
        hub.advance(timedelta(hours=3))
        assert hub.client.describe_schedule("s").info.runs == 3
        assert hub.client.pause_schedule("s", note="why").paused
        hub.advance(timedelta(hours=3))
        assert [s.runs for s in hub.client.list_schedules()] == [3]
        hub.client.resume_schedule("s")
        run = hub.client.trigger_schedule("s")
        assert hub.client.wait_for_orchestration_completion(run).output is not None
        assert hub.client.backfill_schedule("s", T0 - timedelta(hours=2), T0 - timedelta(hours=1))
        hub.client.update_schedule("s", input=2)
        hub.client.delete_schedule("s")
        assert hub.client.list_schedules() == []
