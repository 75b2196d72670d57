"""The management API's schedule routes: list, describe, pause, resume, trigger, delete.

Schedules are created with the clients or the CLI; the API reads and manages them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import Response

from duratask.dashboard.responses import SafeJSONResponse
from duratask.dashboard.spec import ApiCall, ApiRoute, Param, Reply
from duratask.schedules import ScheduleDescription, ScheduleInfo

SCHEDULE_ID = Param(
    "schedule_id", "path", "string", "The schedule id.", required=True, max_length=200
)
_NOTE = Param("note", "query", "string", "Why (kept with the schedule).")
_ERROR = {"$ref": "#/components/schemas/Error"}
_SCHEDULE = {"$ref": "#/components/schemas/Schedule"}
_BAD = Reply("Bad parameters.", _ERROR)
_MISSING = Reply("No schedule with this id.", _ERROR)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    """A schedule as the API returns it."""
    spec = info.spec
    return {
        "scheduleId": info.schedule_id,
        "orchestration": info.orchestration,
        "version": info.version,
        "input": info.input,
        "cron": list(spec.cron),
        "intervals": [
            {"everySeconds": i.every.total_seconds(), "offsetSeconds": i.offset.total_seconds()}
            for i in spec.intervals
        ],
        "timeZone": spec.time_zone,
        "startTime": _iso(spec.start_at),
        "endTime": _iso(spec.end_at),
        "jitterSeconds": spec.jitter.total_seconds(),
        "overlap": info.overlap.value,
        "catchUp": info.catch_up.value,
        "catchUpWindowSeconds": info.catch_up_window.total_seconds(),
        "runLimit": info.run_limit,
        "paused": info.paused,
        "note": info.note,
        "finished": info.finished,
        "runs": info.runs,
        "skipped": info.skipped,
        "nextFireTime": _iso(info.next_fire_at),
        "createdTime": _iso(info.created_at),
        "lastUpdatedTime": _iso(info.updated_at),
    }


def description_json(described: ScheduleDescription) -> dict[str, Any]:
    """A schedule with its recent runs and next fire times, as the API returns it."""
    return {
        **schedule_json(described.info),
        "recentRuns": [
            {
                "instanceId": run.instance_id,
                "slot": run.slot.isoformat(),
                "kind": run.kind,
                "runtimeStatus": run.status.value if run.status is not None else None,
            }
            for run in described.recent_runs
        ],
        "nextFireTimes": [t.isoformat() for t in described.next_fire_times],
    }


_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
SCHEDULE_SCHEMAS: dict[str, Any] = {
    "Schedule": {
        "type": "object",
        "required": ["scheduleId", "orchestration", "paused", "runs", "nextFireTime"],
        "properties": {
            "scheduleId": {"type": "string"},
            "orchestration": {"type": "string"},
            "version": {"type": ["string", "null"]},
            "input": {"description": "Any JSON value."},
            "cron": {"type": "array", "items": {"type": "string"}},
            "intervals": {"type": "array", "items": {"type": "object"}},
            "timeZone": {"type": "string"},
            "startTime": _NULLABLE_TIME,
            "endTime": _NULLABLE_TIME,
            "jitterSeconds": {"type": "number"},
            "overlap": {
                "type": "string",
                "enum": ["skip", "buffer_one", "allow_all", "terminate_previous"],
            },
            "catchUp": {"type": "string", "enum": ["window", "latest", "none"]},
            "catchUpWindowSeconds": {"type": "number"},
            "runLimit": {"type": ["integer", "null"]},
            "paused": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "finished": {"type": "boolean"},
            "runs": {"type": "integer", "minimum": 0},
            "skipped": {"type": "integer", "minimum": 0},
            "nextFireTime": _NULLABLE_TIME,
            "createdTime": {"type": "string", "format": "date-time"},
            "lastUpdatedTime": {"type": "string", "format": "date-time"},
            "recentRuns": {"type": "array", "items": {"type": "object"}},
            "nextFireTimes": {"type": "array", "items": {"type": "string"}},
        },
    },
}


async def list_schedules(call: ApiCall) -> Response:
    found = await call.client.list_schedules(prefix=call.args.text("scheduleIdPrefix"))
    return SafeJSONResponse([schedule_json(info) for info in found])


async def get_schedule(call: ApiCall) -> Response:
    described = await call.client.describe_schedule(
        call.args.required_text("schedule_id"),
        runs=call.args.integer("runs"),
        next_fire_times=call.args.integer("nextFireTimes"),
    )
    return SafeJSONResponse(description_json(described))


async def pause_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    info = await call.client.pause_schedule(schedule_id, call.args.text("note"))
    return SafeJSONResponse(schedule_json(info))


async def resume_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    info = await call.client.resume_schedule(schedule_id, call.args.text("note"))
    return SafeJSONResponse(schedule_json(info))


async def trigger_schedule(call: ApiCall) -> Response:
    run = await call.client.trigger_schedule(call.args.required_text("schedule_id"))
    return SafeJSONResponse({"instanceId": run}, status_code=202)


async def delete_schedule(call: ApiCall) -> Response:
    await call.client.delete_schedule(call.args.required_text("schedule_id"))
    return SafeJSONResponse({"deleted": True})


# The routes under an id come before the id's own (ids may hold slashes).
SCHEDULE_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute(
        "GET",
        "/api/schedules",
        "listSchedules",
        "List the schedules, by id.",
        list_schedules,
        params=(Param("scheduleIdPrefix", "query", "string", "Only ids starting with this."),),
        replies={
            200: Reply("The schedules.", {"type": "array", "items": _SCHEDULE}),
            400: _BAD,
        },
        tag="schedules",
    ),
    ApiRoute(
        "POST",
        "/api/schedules/{schedule_id:path}/pause",
        "pauseSchedule",
        "Pause a schedule: slots reached while paused are skipped.",
        pause_schedule,
        params=(SCHEDULE_ID, _NOTE),
        replies={200: Reply("Paused.", _SCHEDULE), 400: _BAD, 404: _MISSING},
        tag="schedules",
    ),
    ApiRoute(
        "POST",
        "/api/schedules/{schedule_id:path}/resume",
        "resumeSchedule",
        "Resume a schedule from now on.",
        resume_schedule,
        params=(SCHEDULE_ID, _NOTE),
        replies={200: Reply("Resumed.", _SCHEDULE), 400: _BAD, 404: _MISSING},
        tag="schedules",
    ),
    ApiRoute(
        "POST",
        "/api/schedules/{schedule_id:path}/trigger",
        "triggerSchedule",
        "Start a run of the schedule now.",
        trigger_schedule,
        params=(SCHEDULE_ID,),
        replies={
            202: Reply("Started.", {"$ref": "#/components/schemas/Accepted"}),
            400: _BAD,
            404: _MISSING,
        },
        tag="schedules",
    ),
    ApiRoute(
        "GET",
        "/api/schedules/{schedule_id:path}",
        "getSchedule",
        "A schedule with its recent runs (and their status) and next fire times.",
        get_schedule,
        params=(
            SCHEDULE_ID,
            Param(
                "runs",
                "query",
                "integer",
                "Recent runs to include.",
                default=10,
                minimum=0,
                maximum=20,
            ),
            Param(
                "nextFireTimes",
                "query",
                "integer",
                "Next fire times to include.",
                default=5,
                minimum=0,
                maximum=100,
            ),
        ),
        replies={200: Reply("The schedule.", _SCHEDULE), 400: _BAD, 404: _MISSING},
        tag="schedules",
    ),
    ApiRoute(
        "DELETE",
        "/api/schedules/{schedule_id:path}",
        "deleteSchedule",
        "Delete a schedule (its runs stay).",
        delete_schedule,
        params=(SCHEDULE_ID,),
        replies={
            200: Reply(
                "Deleted.",
                {
                    "type": "object",
                    "required": ["deleted"],
                    "properties": {"deleted": {"type": "boolean"}},
                },
            ),
            400: _BAD,
            404: _MISSING,
        },
        tag="schedules",
    ),
)
