"""The management API's schedule routes: create, update, list, describe, pause, resume,
trigger, delete. Schedules are shown as :mod:`duratask._schedules_json` writes them (the
CLI's JSON), and created and changed with bodies of that form
(:mod:`duratask.dashboard.schedule_bodies`).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from duratask._schedules_json import description_to_json, info_to_json
from duratask.dashboard.errors import HttpError
from duratask.dashboard.responses import SafeJSONResponse
from duratask.dashboard.schedule_bodies import (
    ScheduleChange,
    ScheduleDefinition,
    body_schemas,
    parse_body,
)
from duratask.dashboard.spec import ApiCall, ApiRoute, Body, Param, Reply
from duratask.dashboard.values import parse_json

SCHEDULE_ID = Param(
    "schedule_id", "path", "string", "The schedule id.", required=True, max_length=200
)
_NOTE = Param("note", "query", "string", "Why (kept with the schedule).")
_ERROR = {"$ref": "#/components/schemas/Error"}
_SCHEDULE = {"$ref": "#/components/schemas/Schedule"}
_BAD = Reply("Bad parameters.", _ERROR)
_BAD_BODY = Reply("Bad parameters, or a body that is not a schedule that can work.", _ERROR)
_MISSING = Reply("No schedule with this id.", _ERROR)

_ACTIONS = ("pause", "resume", "trigger")  # the routes under an id
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_SECONDS = {"type": "number", "minimum": 0}
SCHEDULE_SCHEMAS: dict[str, Any] = {
    "Schedule": {
        "type": "object",
        "required": [
            "schedule_id",
            "orchestration",
            "version",
            "input",
            "spec",
            "overlap",
            "catch_up",
            "catch_up_window_s",
            "run_limit",
            "paused",
            "note",
            "finished",
            "runs",
            "skipped",
            "next_fire_at",
            "created_at",
            "updated_at",
        ],
        "additionalProperties": False,
        "properties": {
            "schedule_id": {"type": "string"},
            "orchestration": {"type": "string"},
            "version": _NULLABLE_STRING,
            "input": {"description": "Each run's input: any JSON value."},
            "spec": {
                "type": "object",
                "required": ["cron", "intervals", "time_zone", "start_at", "end_at", "jitter_s"],
                "additionalProperties": False,
                "properties": {
                    "cron": {"type": "array", "items": {"type": "string"}},
                    "intervals": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["every_s", "offset_s"],
                            "additionalProperties": False,
                            "properties": {"every_s": _SECONDS, "offset_s": _SECONDS},
                        },
                    },
                    "time_zone": {"type": "string"},
                    "start_at": _NULLABLE_TIME,
                    "end_at": _NULLABLE_TIME,
                    "jitter_s": _SECONDS,
                },
            },
            "overlap": {
                "type": "string",
                "enum": ["skip", "buffer_one", "allow_all", "terminate_previous"],
            },
            "catch_up": {"type": "string", "enum": ["window", "latest", "none"]},
            "catch_up_window_s": _SECONDS,
            "run_limit": {"type": ["integer", "null"]},
            "paused": {"type": "boolean"},
            "note": _NULLABLE_STRING,
            "finished": {"type": "boolean"},
            "runs": {"type": "integer", "minimum": 0},
            "skipped": {"type": "integer", "minimum": 0},
            "next_fire_at": _NULLABLE_TIME,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "recent_runs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["instance_id", "slot", "kind", "status"],
                    "additionalProperties": False,
                    "properties": {
                        "instance_id": {"type": "string"},
                        "slot": _NULLABLE_TIME,
                        "kind": {"type": "string"},
                        "status": _NULLABLE_STRING,
                    },
                },
            },
            "next_fire_times": {
                "type": "array",
                "items": {"type": "string", "format": "date-time"},
            },
        },
    },
    **body_schemas(),
}


async def create_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    body = parse_json(await call.request.body(), "the request body (the schedule)")
    definition = parse_body(ScheduleDefinition, body)
    info = await call.client.create_schedule(schedule_id, **definition.create_arguments())
    return SafeJSONResponse(info_to_json(info), status_code=201)


async def update_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    action = next((a for a in _ACTIONS if schedule_id.endswith(f"/{a}")), None)
    if action is not None:  # ids may hold slashes: this path names an action, not an id
        raise HttpError(
            405,
            "method_not_allowed",
            f"PATCH is not allowed on a schedule's {action!r} action (POST it)",
            headers={"Allow": "POST"},
        )
    body = parse_json(await call.request.body(), "the request body (the change)")
    change = parse_body(ScheduleChange, body)
    info = await call.client.update_schedule(schedule_id, **change.update_arguments())
    return SafeJSONResponse(info_to_json(info))


async def list_schedules(call: ApiCall) -> Response:
    found = await call.client.list_schedules(prefix=call.args.text("scheduleIdPrefix"))
    return SafeJSONResponse([info_to_json(info) for info in found])


async def get_schedule(call: ApiCall) -> Response:
    described = await call.client.describe_schedule(
        call.args.required_text("schedule_id"),
        runs=call.args.integer("runs"),
        next_fire_times=call.args.integer("nextFireTimes"),
    )
    return SafeJSONResponse(description_to_json(described))


async def pause_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    info = await call.client.pause_schedule(schedule_id, call.args.text("note"))
    return SafeJSONResponse(info_to_json(info))


async def resume_schedule(call: ApiCall) -> Response:
    schedule_id = call.args.required_text("schedule_id")
    info = await call.client.resume_schedule(schedule_id, call.args.text("note"))
    return SafeJSONResponse(info_to_json(info))


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
        "POST",
        "/api/schedules/{schedule_id:path}",
        "createSchedule",
        "Create a schedule that starts an orchestration at every slot of its spec from now on.",
        create_schedule,
        params=(SCHEDULE_ID,),
        body=Body(
            "What the schedule starts, when, and its policies; the definition part of a "
            "schedule as it is shown. Durations are in seconds, times ISO 8601 with an offset.",
            {"$ref": "#/components/schemas/ScheduleDefinition"},
            required=True,
        ),
        replies={
            201: Reply("Created.", _SCHEDULE),
            400: _BAD_BODY,
            409: Reply("A schedule with this id exists.", _ERROR),
        },
        tag="schedules",
    ),
    ApiRoute(
        "PATCH",
        "/api/schedules/{schedule_id:path}",
        "updateSchedule",
        "Change what a schedule starts or when: the fields given change, the others stay; "
        "slots from now on follow the new definition.",
        update_schedule,
        params=(SCHEDULE_ID,),
        body=Body(
            "The fields to change (input, version and run_limit may be null).",
            {"$ref": "#/components/schemas/ScheduleChange"},
            required=True,
        ),
        replies={200: Reply("Changed.", _SCHEDULE), 400: _BAD_BODY, 404: _MISSING},
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
