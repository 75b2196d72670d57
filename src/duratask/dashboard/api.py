"""The REST management API under ``/api/``, shaped like Durable Functions' HTTP API.

Every route is one :class:`~duratask.dashboard.spec.ApiRoute` in :data:`API_ROUTES`; the same
table writes ``/openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duratask._executions_json import execution_to_json, takeover_to_json
from duratask._waiting import open_items
from duratask._workers_json import backlog_to_json, worker_to_json
from duratask.backends.base import EntityMetadata
from duratask.dashboard import operations
from duratask.dashboard.errors import HttpError, bad_request, from_exception, json_error
from duratask.dashboard.hub import ClientSource
from duratask.dashboard.responses import SafeJSONResponse
from duratask.dashboard.schedules_api import SCHEDULE_ROUTES
from duratask.dashboard.spec import ApiCall, ApiRoute, Body, Param, Reply, read_args
from duratask.dashboard.values import iso, parse_json, payload_value, status_name
from duratask.history import HistoryEvent, event_export_dict
from duratask.state import DEFAULT_TASK_QUEUE, FailureDetails, OrchestrationState

_LOG = logging.getLogger("duratask.dashboard")

CONTINUATION_HEADER = "x-ms-continuation-token"
MAX_PAGE_SIZE = 1000


# -- response bodies ---------------------------------------------------------------------


def failure_json(details: FailureDetails | None) -> dict[str, Any] | None:
    """Failure details in the API's camelCase form."""
    if details is None:
        return None
    return {
        "errorType": details.error_type,
        "errorMessage": details.message,
        "stackTrace": details.stack_trace,
        "innerFailure": failure_json(details.inner_failure),
        "isNonRetriable": details.is_non_retriable,
        "errorTypes": list(details.error_types),
    }


def status_json(state: OrchestrationState, *, show_input: bool = True) -> dict[str, Any]:
    """An instance's status as the API returns it."""
    body: dict[str, Any] = {
        "instanceId": state.instance_id,
        "name": state.name,
        "version": state.version,
        "runtimeStatus": status_name(state.runtime_status),
        "createdTime": iso(state.created_at),
        "lastUpdatedTime": iso(state.last_updated_at),
        "completedTime": iso(state.completed_at),
        "scheduledStartTime": iso(state.scheduled_start_at),
        "executionId": state.execution_id,
        "parentInstanceId": state.parent_instance_id,
        "taskQueue": state.task_queue,
    }
    if show_input:
        body["input"] = payload_value(state.serialized_input)
    body["output"] = payload_value(state.serialized_output)
    body["customStatus"] = payload_value(state.serialized_custom_status)
    body["failureDetails"] = failure_json(state.failure_details)
    return body


def open_items_json(history: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """What a running instance waits on (activities, timers, sub-orchestrations)."""
    return [
        {
            "kind": item.kind,
            "taskId": item.task_id,
            "name": item.name,
            "since": iso(item.since),
            "attempt": item.attempt,
            "due": iso(item.due),
            "instanceId": item.instance_id,
        }
        for item in open_items(history)
    ]


def instance_url(request: Request, instance_id: str, suffix: str = "") -> str:
    """The absolute API URL of an instance (or of one of its operations)."""
    base = str(request.base_url).rstrip("/")
    return f"{base}/api/instances/{quote(instance_id, safe='')}{suffix}"


def management_urls(request: Request, instance_id: str) -> dict[str, str]:
    """Where to manage an instance, as Durable Functions' ``CreateCheckStatusResponse``."""
    base = str(request.base_url).rstrip("/")
    return {
        "id": instance_id,
        "statusQueryGetUri": instance_url(request, instance_id),
        "sendEventPostUri": instance_url(request, instance_id, "/raiseEvent/{eventName}"),
        "terminatePostUri": instance_url(request, instance_id, "/terminate?reason={text}"),
        "suspendPostUri": instance_url(request, instance_id, "/suspend?reason={text}"),
        "resumePostUri": instance_url(request, instance_id, "/resume?reason={text}"),
        "rewindPostUri": instance_url(request, instance_id, "/rewind?reason={text}"),
        "restartPostUri": instance_url(request, instance_id, "/restart"),
        "purgeHistoryDeleteUri": instance_url(request, instance_id),
        "dashboardUri": f"{base}/instances/{quote(instance_id, safe='')}",
    }


def _started(request: Request, instance_id: str) -> Response:
    urls = management_urls(request, instance_id)
    return SafeJSONResponse(urls, status_code=202, headers={"Location": urls["statusQueryGetUri"]})


def _accepted(instance_id: str) -> Response:
    return SafeJSONResponse({"instanceId": instance_id}, status_code=202)


async def _json_body(call: ApiCall, what: str) -> Any:
    return parse_json(await call.request.body(), what)


# -- handlers ------------------------------------------------------------------------------


async def start_orchestration(call: ApiCall) -> Response:
    name = call.args.required_text("name")
    data = await _json_body(call, "the request body (the orchestration's input)")
    instance_id = await call.client.schedule_new_orchestration(
        name,
        input=data,
        instance_id=call.args.text("instance_id"),
        start_at=call.args.time("start_at"),
        version=call.args.text("version"),
        task_queue=call.args.text("task_queue") or DEFAULT_TASK_QUEUE,
    )
    return _started(call.request, instance_id)


async def get_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    state = await operations.require_state(call.client, instance_id)
    body = status_json(state, show_input=call.args.flag("showInput"))
    body["waiting"] = await call.client.why_waiting(state)
    history = None
    if call.args.flag("showHistory") or not state.runtime_status.is_terminal:
        history = await call.client.get_orchestration_history(instance_id)
    body["waitingFor"] = [] if state.runtime_status.is_terminal else open_items_json(history or [])
    if call.args.flag("showHistory"):
        body["historyEvents"] = [event_export_dict(event) for event in history or []]
    if state.runtime_status.is_terminal:
        return SafeJSONResponse(body)
    # Still going: 202 with the URL to poll, as Durable Functions answers.
    return SafeJSONResponse(
        body, status_code=202, headers={"Location": instance_url(call.request, instance_id)}
    )


async def list_instances(call: ApiCall) -> Response:
    args = call.args
    header_token = args.text(CONTINUATION_HEADER)
    query_token = args.text("continuationToken")
    if header_token and query_token and header_token != query_token:
        raise bad_request(
            f"the continuation token is given twice with different values "
            f"(header {CONTINUATION_HEADER} and query continuationToken)"
        )
    page = await call.client.query_orchestrations(
        statuses=args.statuses("runtimeStatus"),
        created_from=args.time("createdTimeFrom"),
        created_to=args.time("createdTimeTo"),
        name=args.text("name"),
        instance_id_prefix=args.text("instanceIdPrefix"),
        parent_instance_id=args.text("parentInstanceId"),
        page_size=args.integer("top"),
        continuation_token=header_token or query_token,
        sort=args.text("sortBy") or "created",
        descending=args.flag("descending"),
        top_level_only=args.flag("topLevelOnly"),
        custom_status_contains=args.text("customStatusContains"),
    )
    show_input = args.flag("showInput")
    headers = {}
    if page.continuation_token is not None:
        headers[CONTINUATION_HEADER] = page.continuation_token
    return SafeJSONResponse(
        [status_json(s, show_input=show_input) for s in page.states], headers=headers
    )


async def get_workers(call: ApiCall) -> Response:
    workers = await call.client.list_workers(connected_only=not call.args.flag("all"))
    backlog = await call.client.backlog()
    now = datetime.now(UTC)
    return SafeJSONResponse(
        {
            "workers": [worker_to_json(w, now) for w in workers],
            "backlog": [backlog_to_json(e) for e in backlog],
        }
    )


async def get_takeovers(call: ApiCall) -> Response:
    takeovers = await call.client.get_lease_takeovers(call.args.required_text("instance_id"))
    return SafeJSONResponse([takeover_to_json(t) for t in takeovers])


async def get_executions(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    records = await call.client.get_orchestration_executions(instance_id)
    return SafeJSONResponse([execution_to_json(r) for r in records])


async def get_history(call: ApiCall) -> Response:
    history = await call.client.get_orchestration_history(call.args.required_text("instance_id"))
    return SafeJSONResponse([event_export_dict(event) for event in history])


async def raise_event(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    data = await _json_body(call, "the request body (the event's data)")
    await operations.raise_event(call.client, instance_id, call.args.required_text("event"), data)
    return _accepted(instance_id)


async def terminate_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    await operations.terminate(call.client, instance_id, call.args.text("reason"))
    return _accepted(instance_id)


async def suspend_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    await operations.suspend(call.client, instance_id, call.args.text("reason"))
    return _accepted(instance_id)


async def resume_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    await operations.resume(call.client, instance_id, call.args.text("reason"))
    return _accepted(instance_id)


async def rewind_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    await operations.rewind(call.client, instance_id, call.args.text("reason"))
    return _accepted(instance_id)


async def restart_instance(call: ApiCall) -> Response:
    instance_id = call.args.required_text("instance_id")
    started = await operations.restart(
        call.client, instance_id, new_instance_id=call.args.flag("newInstanceId")
    )
    return _started(call.request, started)


async def purge_instance(call: ApiCall) -> Response:
    purged = await operations.purge(call.client, call.args.required_text("instance_id"))
    return SafeJSONResponse({"instancesDeleted": purged})


_PURGE_FILTERS = ("createdTimeFrom", "createdTimeTo", "completedTimeTo", "runtimeStatus")


async def purge_instances(call: ApiCall) -> Response:
    args = call.args
    if not args.given(*_PURGE_FILTERS):
        raise bad_request(
            f"give at least one filter ({', '.join(_PURGE_FILTERS)}); "
            "a bulk purge without one would delete every finished instance"
        )
    purged = await call.client.purge_orchestrations(
        created_from=args.time("createdTimeFrom"),
        created_before=args.time("createdTimeTo"),
        completed_before=args.time("completedTimeTo"),
        statuses=args.statuses("runtimeStatus"),
    )
    return SafeJSONResponse({"instancesDeleted": purged})


async def get_counts(call: ApiCall) -> Response:
    args = call.args
    counts = await call.client.count_orchestrations(
        name=args.text("name"),
        instance_id_prefix=args.text("instanceIdPrefix"),
        created_from=args.time("createdTimeFrom"),
        created_to=args.time("createdTimeTo"),
        top_level_only=args.flag("topLevelOnly"),
        custom_status_contains=args.text("customStatusContains"),
    )
    return SafeJSONResponse({status_name(status): n for status, n in counts.items()})


def entity_json(entity: EntityMetadata) -> dict[str, Any]:
    """An entity as the API returns it."""
    return {
        "entityId": entity.entity_id,
        "name": entity.name,
        "key": entity.key,
        "lastModifiedTime": iso(entity.last_modified_at),
        "lockedBy": entity.locked_by,
        "backlog": entity.backlog,
        "state": payload_value(entity.serialized_state),
    }


async def list_entities(call: ApiCall) -> Response:
    args = call.args
    page = await call.client.query_entities(
        name=args.text("name"),
        entity_id_prefix=args.text("entityIdPrefix"),
        last_modified_from=args.time("lastModifiedFrom"),
        last_modified_to=args.time("lastModifiedTo"),
        include_state=args.flag("includeState"),
        page_size=args.integer("top"),
        continuation_token=args.text(CONTINUATION_HEADER) or args.text("continuationToken"),
    )
    headers = {}
    if page.continuation_token is not None:
        headers[CONTINUATION_HEADER] = page.continuation_token
    return SafeJSONResponse([entity_json(e) for e in page.entities], headers=headers)


async def get_entity(call: ApiCall) -> Response:
    entity_id = call.args.required_text("entity_id")
    found = await call.client.get_entity(entity_id)
    if found is None:
        raise HttpError(404, "not_found", f"no entity {entity_id!r} (or it has no state)")
    return SafeJSONResponse(entity_json(found))


async def signal_entity(call: ApiCall) -> Response:
    entity_id = call.args.required_text("entity_id")
    data = await _json_body(call, "the request body (the operation's input)")
    await call.client.signal_entity(
        entity_id, call.args.required_text("op"), data, signal_time=call.args.time("signalTime")
    )
    return SafeJSONResponse({"entityId": entity_id}, status_code=202)


async def clean_entities(call: ApiCall) -> Response:
    result = await call.client.clean_entity_storage()
    return SafeJSONResponse(
        {
            "emptyEntitiesRemoved": result.empty_entities_removed,
            "orphanedLocksReleased": result.orphaned_locks_released,
        }
    )


# -- the route table -----------------------------------------------------------------------

_ID = Param("instance_id", "path", "string", "The instance id.", required=True, max_length=256)
_REASON = Param("reason", "query", "string", "Why (recorded with the request).")
_NAME = Param("name", "query", "string", "Only instances of this orchestration name.")
_PREFIX = Param("instanceIdPrefix", "query", "string", "Only ids starting with this.")
_FROM = Param(
    "createdTimeFrom", "query", "datetime", "Created at or after (ISO 8601; no offset = UTC)."
)
_TO = Param("createdTimeTo", "query", "datetime", "Created before (ISO 8601; no offset = UTC).")
_STATUSES = Param(
    "runtimeStatus",
    "query",
    "statuses",
    "Only these statuses; repeat the parameter or give a comma-separated list. Names in "
    "any case, Durable Functions style (Running) or duratask style (RUNNING).",
)
_SHOW_INPUT = Param("showInput", "query", "boolean", "Include the input.", default=True)
_TOP_LEVEL = Param(
    "topLevelOnly", "query", "boolean", "Leave sub-orchestrations out.", default=False
)
_CUSTOM_TEXT = Param(
    "customStatusContains",
    "query",
    "string",
    "Only instances whose custom status (compact JSON text) contains this.",
)

_STATUS = {"$ref": "#/components/schemas/InstanceStatus"}
_ENTITY = {"$ref": "#/components/schemas/Entity"}
_ENTITY_ID = Param(
    "entity_id", "path", "string", "The entity id, @name@key.", required=True, max_length=512
)
_ERROR = {"$ref": "#/components/schemas/Error"}
_URLS = {"$ref": "#/components/schemas/ManagementUrls"}
_ACCEPTED = {"$ref": "#/components/schemas/Accepted"}
_PURGED = {"$ref": "#/components/schemas/PurgeResult"}
_ANY_JSON: dict[str, Any] = {"description": "Any JSON value."}

_BAD = Reply("Bad parameters or body.", _ERROR)
_MISSING = Reply("No instance with this id.", _ERROR)
_GONE = Reply("The instance has already finished.", _ERROR)
_CONFLICT = Reply("The operation does not apply to the instance in its state.", _ERROR)
_LOCATION = (("Location", "The status URL of the instance."),)


def _signal_route(path: str, operation_id: str, summary: str, handler: Any) -> ApiRoute:
    return ApiRoute(
        "POST",
        f"/api/instances/{{instance_id:path}}/{path}",
        operation_id,
        summary,
        handler,
        params=(_ID, _REASON),
        replies={
            202: Reply("Accepted; a worker acts on it when it next runs the instance.", _ACCEPTED),
            400: _BAD,
            404: _MISSING,
            410: _GONE,
        },
    )


API_ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute(
        "POST",
        "/api/orchestrations/{name}",
        "startOrchestration",
        "Start a new orchestration instance.",
        start_orchestration,
        params=(
            Param("name", "path", "string", "The orchestration's registered name.", required=True),
            Param(
                "instance_id", "query", "string", "The id to use (default: random).", max_length=256
            ),
            Param("start_at", "query", "datetime", "Do not start before this time (ISO 8601)."),
            Param("version", "query", "string", "The orchestration version to run."),
            Param("task_queue", "query", "string", "The task queue to run it on (default)."),
        ),
        body=Body("The orchestration's input (any JSON value; empty means null).", _ANY_JSON),
        replies={
            202: Reply("Scheduled. Location is the status URL.", _URLS, _LOCATION),
            400: _BAD,
            409: Reply("A live instance with this id exists.", _ERROR),
            413: Reply("The input is too large.", _ERROR),
        },
        tag="orchestrations",
    ),
    ApiRoute(
        "GET",
        "/api/instances",
        "listInstances",
        "List instances (oldest first unless sortBy/descending say otherwise), a page at a time.",
        list_instances,
        params=(
            _STATUSES,
            _NAME,
            _PREFIX,
            _FROM,
            _TO,
            Param("parentInstanceId", "query", "string", "Only sub-orchestrations of this one."),
            _TOP_LEVEL,
            _CUSTOM_TEXT,
            Param(
                "sortBy",
                "query",
                "string",
                "Order by this (ties by instance id).",
                default="created",
                choices=("created", "last_updated", "status", "name"),
            ),
            Param("descending", "query", "boolean", "Largest or newest first.", default=False),
            Param(
                "top",
                "query",
                "integer",
                "Page size.",
                default=100,
                minimum=1,
                maximum=MAX_PAGE_SIZE,
            ),
            Param("continuationToken", "query", "string", "Token of the next page."),
            Param(
                CONTINUATION_HEADER,
                "header",
                "string",
                "Token of the next page (as Durable Functions sends it).",
            ),
            _SHOW_INPUT,
        ),
        replies={
            200: Reply(
                f"One page. The {CONTINUATION_HEADER} header carries the token of the next "
                "page; it is absent on the last page.",
                {"type": "array", "items": _STATUS},
                ((CONTINUATION_HEADER, "Token of the next page."),),
            ),
            400: _BAD,
        },
    ),
    ApiRoute(
        "DELETE",
        "/api/instances",
        "purgeInstances",
        "Purge every finished instance matching the filters (at least one filter).",
        purge_instances,
        params=(
            _FROM,
            _TO,
            Param("completedTimeTo", "query", "datetime", "Finished before this time."),
            Param(
                "runtimeStatus",
                "query",
                "statuses",
                "Only these statuses (Completed, Failed, Terminated); repeat or comma-separate.",
            ),
        ),
        replies={200: Reply("Purged.", _PURGED), 400: _BAD},
    ),
    ApiRoute(
        "GET",
        "/api/workers",
        "listWorkers",
        "The workers connected to the hub, and the work waiting by orchestration and activity.",
        get_workers,
        params=(
            Param(
                "all", "query", "boolean", "Also workers not heard from for 30 s.", default=False
            ),
        ),
        replies={
            200: Reply("Workers and backlog.", {"$ref": "#/components/schemas/Workers"}),
            400: _BAD,
        },
        tag="workers",
    ),
    ApiRoute(
        "GET",
        "/api/counts",
        "countInstances",
        "Count instances by status.",
        get_counts,
        params=(_NAME, _PREFIX, _FROM, _TO, _TOP_LEVEL, _CUSTOM_TEXT),
        replies={
            200: Reply("Counts of every status.", {"$ref": "#/components/schemas/Counts"}),
            400: _BAD,
        },
    ),
    ApiRoute(
        "GET",
        "/api/instances/{instance_id:path}/history",
        "getHistory",
        "The history of the instance's current execution.",
        get_history,
        params=(_ID,),
        replies={
            200: Reply(
                "The events, oldest first.",
                {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEvent"}},
            ),
            400: _BAD,
            404: _MISSING,
        },
    ),
    ApiRoute(
        "GET",
        "/api/instances/{instance_id:path}/executions",
        "getExecutions",
        "The instance's earlier executions (continue-as-new rounds, or runs before it was "
        "started again), oldest first: one compact record each, as far as stored.",
        get_executions,
        params=(_ID,),
        replies={
            200: Reply(
                "The records, oldest first.",
                {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
            ),
            400: _BAD,
            404: _MISSING,
        },
    ),
    ApiRoute(
        "GET",
        "/api/instances/{instance_id:path}/takeovers",
        "getLeaseTakeovers",
        "When the instance lost its worker: each lease that ran out unreleased (the worker "
        "crashed or hung) or was broken, and when another worker took over.",
        get_takeovers,
        params=(_ID,),
        replies={
            200: Reply(
                "The takeovers, oldest first.",
                {"type": "array", "items": {"$ref": "#/components/schemas/LeaseTakeover"}},
            ),
            400: _BAD,
            404: _MISSING,
        },
    ),
    ApiRoute(
        "POST",
        "/api/instances/{instance_id:path}/raiseEvent/{event}",
        "raiseEvent",
        "Send an external event to a running instance.",
        raise_event,
        params=(
            _ID,
            Param("event", "path", "string", "The event name.", required=True, max_length=256),
        ),
        body=Body("The event's data (any JSON value; empty means null).", _ANY_JSON),
        replies={
            202: Reply("Accepted.", _ACCEPTED),
            400: _BAD,
            404: _MISSING,
            410: _GONE,
            413: Reply("The data is too large.", _ERROR),
        },
    ),
    _signal_route(
        "terminate", "terminateInstance", "Terminate a running instance.", terminate_instance
    ),
    _signal_route("suspend", "suspendInstance", "Suspend a running instance.", suspend_instance),
    _signal_route("resume", "resumeInstance", "Resume a suspended instance.", resume_instance),
    ApiRoute(
        "POST",
        "/api/instances/{instance_id:path}/rewind",
        "rewindInstance",
        "Run a FAILED instance again from its failed step.",
        rewind_instance,
        params=(_ID, _REASON),
        replies={
            202: Reply("Accepted.", _ACCEPTED),
            400: _BAD,
            404: _MISSING,
            409: Reply("The instance is not FAILED.", _ERROR),
        },
    ),
    ApiRoute(
        "POST",
        "/api/instances/{instance_id:path}/restart",
        "restartInstance",
        "Start the instance again from its original input.",
        restart_instance,
        params=(
            _ID,
            Param(
                "newInstanceId",
                "query",
                "boolean",
                "Start under a new random id (the old instance stays); otherwise the "
                "finished instance is replaced.",
                default=False,
            ),
        ),
        replies={
            202: Reply("Started. Location is the status URL.", _URLS, _LOCATION),
            400: _BAD,
            404: _MISSING,
            409: Reply("Same id asked but the instance is still running.", _ERROR),
        },
    ),
    ApiRoute(
        "GET",
        "/api/instances/{instance_id:path}",
        "getInstance",
        "The status of an instance.",
        get_instance,
        params=(
            _ID,
            Param("showHistory", "query", "boolean", "Include the history.", default=False),
            _SHOW_INPUT,
        ),
        replies={
            200: Reply("The instance has finished (Completed, Failed or Terminated).", _STATUS),
            202: Reply("The instance has not finished yet.", _STATUS, _LOCATION),
            400: _BAD,
            404: _MISSING,
        },
    ),
    ApiRoute(
        "GET",
        "/api/entities",
        "listEntities",
        "List entities with a state (or a lock holder), by id, one page at a time.",
        list_entities,
        params=(
            Param("name", "query", "string", "Only entities of this name."),
            Param("entityIdPrefix", "query", "string", "Only ids (@name@key) starting with this."),
            Param("lastModifiedFrom", "query", "datetime", "Changed at or after this time."),
            Param("lastModifiedTo", "query", "datetime", "Changed before this time."),
            Param("includeState", "query", "boolean", "Include each state.", default=True),
            Param(
                "top",
                "query",
                "integer",
                "Page size.",
                default=100,
                minimum=1,
                maximum=MAX_PAGE_SIZE,
            ),
            Param("continuationToken", "query", "string", "Token of the next page."),
            Param(CONTINUATION_HEADER, "header", "string", "Token of the next page."),
        ),
        replies={
            200: Reply(
                "The entities of the page.",
                {"type": "array", "items": _ENTITY},
                ((CONTINUATION_HEADER, "Token of the next page."),),
            ),
            400: _BAD,
        },
        tag="entities",
    ),
    ApiRoute(
        "POST",
        "/api/entities/clean",
        "cleanEntityStorage",
        "Release locks of orchestrations that no longer run; delete empty entities.",
        clean_entities,
        replies={200: Reply("Cleaned.", {"$ref": "#/components/schemas/CleanResult"})},
        tag="entities",
    ),
    ApiRoute(
        "GET",
        "/api/entities/{entity_id:path}",
        "getEntity",
        "An entity's state and metadata.",
        get_entity,
        params=(_ENTITY_ID,),
        replies={
            200: Reply("The entity.", _ENTITY),
            400: _BAD,
            404: Reply("No such entity, or it has no state.", _ERROR),
        },
        tag="entities",
    ),
    ApiRoute(
        "POST",
        "/api/entities/{entity_id:path}",
        "signalEntity",
        "Send an operation to an entity, one-way (the body is its input).",
        signal_entity,
        params=(
            _ENTITY_ID,
            Param("op", "query", "string", "The operation.", required=True, max_length=256),
            Param("signalTime", "query", "datetime", "Run it no earlier than this."),
        ),
        body=Body("The operation's input (any JSON value; empty means null).", _ANY_JSON),
        replies={
            202: Reply("Accepted.", {"$ref": "#/components/schemas/EntityAccepted"}),
            400: _BAD,
            413: Reply("The input is too large.", _ERROR),
        },
        tag="entities",
    ),
    ApiRoute(
        "DELETE",
        "/api/instances/{instance_id:path}",
        "purgeInstance",
        "Purge a finished instance, its history and its finished sub-orchestrations.",
        purge_instance,
        params=(_ID,),
        replies={
            200: Reply("Purged.", _PURGED),
            400: _BAD,
            404: _MISSING,
            409: Reply("The instance has not finished.", _ERROR),
        },
    ),
    *SCHEDULE_ROUTES,
)


def _endpoint(routes: list[ApiRoute], source: ClientSource) -> Any:
    """One endpoint for every method of a path (so a 405 lists them all in ``Allow``)."""
    by_method: dict[str, ApiRoute] = {route.method: route for route in routes}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def endpoint(request: Request) -> Response:
        route = by_method[request.method]
        try:
            call = ApiCall(request, source.client, read_args(request, route.params))
            return await route.handler(call)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            if error.status >= 500:
                _LOG.warning("%s %s: %s", request.method, request.url.path, error.message)
            return json_error(error)

    endpoint.__name__ = "_".join(route.operation_id for route in routes)
    return endpoint


def api_routes(source: ClientSource, routes: Sequence[ApiRoute] = API_ROUTES) -> list[Route]:
    """Starlette routes serving ``routes`` with the client of ``source``."""
    by_path: dict[str, list[ApiRoute]] = {}
    for route in routes:
        by_path.setdefault(route.path, []).append(route)
    return [
        Route(path, _endpoint(group, source), methods=[r.method for r in group])
        for path, group in by_path.items()
    ]


__all__ = ["API_ROUTES", "CONTINUATION_HEADER", "api_routes", "status_json"]
