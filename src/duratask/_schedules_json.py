"""Schedules as JSON, one form for the CLI and the REST API: what ``duratask schedule list
--output json`` prints, ``GET /api/schedules`` answers, and (its definition part)
``POST``/``PATCH /api/schedules/{id}`` read back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from duratask.schedules import ScheduleDescription, ScheduleInfo, ScheduleSpec


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def spec_to_json(spec: ScheduleSpec) -> dict[str, Any]:
    """When a schedule fires, as JSON values (durations in seconds)."""
    return {
        "cron": list(spec.cron),
        "intervals": [
            {"every_s": i.every.total_seconds(), "offset_s": i.offset.total_seconds()}
            for i in spec.intervals
        ],
        "time_zone": spec.time_zone,
        "start_at": _iso(spec.start_at),
        "end_at": _iso(spec.end_at),
        "jitter_s": spec.jitter.total_seconds(),
    }


def info_to_json(info: ScheduleInfo) -> dict[str, Any]:
    """A schedule (its definition, then where its firing stands) as JSON values."""
    return {
        "schedule_id": info.schedule_id,
        "orchestration": info.orchestration,
        "version": info.version,
        "input": info.input,
        "spec": spec_to_json(info.spec),
        "overlap": info.overlap.value,
        "catch_up": info.catch_up.value,
        "catch_up_window_s": info.catch_up_window.total_seconds(),
        "run_limit": info.run_limit,
        "paused": info.paused,
        "note": info.note,
        "finished": info.finished,
        "runs": info.runs,
        "skipped": info.skipped,
        "next_fire_at": _iso(info.next_fire_at),
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
    }


def description_to_json(described: ScheduleDescription) -> dict[str, Any]:
    """A description (the schedule, its recent runs, its next fire times) as JSON values."""
    return {
        **info_to_json(described.info),
        "recent_runs": [
            {
                "instance_id": r.instance_id,
                "slot": _iso(r.slot),
                "kind": r.kind,
                "status": r.status.value if r.status is not None else None,
            }
            for r in described.recent_runs
        ],
        "next_fire_times": [t.isoformat() for t in described.next_fire_times],
    }
