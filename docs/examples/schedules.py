"""A nightly report on a schedule, run for a week of virtual time on the test hub."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import duratask as dt
from duratask.testing import TimeSkippingHub


# --8<-- [start:orchestration]
async def nightly_report(ctx: dt.OrchestrationContext, team: str) -> str:
    return f"report for {team} at {ctx.current_utc_datetime:%Y-%m-%d %H:%M}Z"


# --8<-- [end:orchestration]


# --8<-- [start:main]
async def run_a_week() -> dict:
    async with TimeSkippingHub(start=datetime(2026, 3, 25, tzinfo=UTC)) as hub:
        hub.register(nightly_report)
        await hub.client.create_schedule(
            "nightly-report",
            nightly_report,
            dt.ScheduleSpec(cron="0 6 * * MON-FRI", time_zone="Europe/Paris"),
            input="sales",
            overlap=dt.Overlap.SKIP,  # the default: no second run while one still runs
            catch_up=dt.CatchUp.LATEST,  # after downtime, run only the latest missed slot
        )
        await hub.advance(timedelta(days=7))  # a week passes in milliseconds
        described = await hub.client.describe_schedule("nightly-report", runs=3)
    return {
        "runs": described.info.runs,
        "recent": [
            (r.instance_id, r.status.name if r.status else None) for r in described.recent_runs
        ],
        "next": [t.isoformat() for t in described.next_fire_times[:2]],
    }


def main() -> dict:
    return asyncio.run(run_a_week())


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
