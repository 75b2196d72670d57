"""The OpenAPI 3.1 document of the management API, written from the route table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duratask.dashboard.schedules_api import SCHEDULE_SCHEMAS
from duratask.dashboard.spec import ApiRoute
from duratask.dashboard.values import STATUS_NAMES
from duratask.history import EVENT_NAMES

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "description": "A short machine-readable kind."},
                    "message": {"type": "string", "description": "What is wrong, for people."},
                },
            }
        },
    },
    "FailureDetails": {
        "type": "object",
        "required": [
            "errorType",
            "errorMessage",
            "stackTrace",
            "innerFailure",
            "isNonRetriable",
            "errorTypes",
        ],
        "additionalProperties": False,
        "properties": {
            "errorType": {"type": "string"},
            "errorMessage": {"type": "string"},
            "stackTrace": _NULLABLE_STRING,
            "innerFailure": {
                "anyOf": [{"$ref": "#/components/schemas/FailureDetails"}, {"type": "null"}]
            },
            "isNonRetriable": {"type": "boolean"},
            "errorTypes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The error's class and base classes, by qualified name "
                "(empty for failures recorded without them).",
            },
        },
    },
    "HistoryEvent": {
        "type": "object",
        "description": "One history event as duratask exports it (payloads are JSON text).",
        "required": ["type", "event_id", "timestamp"],
        "additionalProperties": True,
        "properties": {
            "type": {"type": "string", "enum": list(EVENT_NAMES)},
            "event_id": {"type": "integer"},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    },
    "InstanceStatus": {
        "type": "object",
        "required": [
            "instanceId",
            "name",
            "version",
            "runtimeStatus",
            "createdTime",
            "lastUpdatedTime",
            "completedTime",
            "scheduledStartTime",
            "executionId",
            "parentInstanceId",
            "taskQueue",
            "output",
            "customStatus",
            "failureDetails",
        ],
        "additionalProperties": False,
        "properties": {
            "instanceId": {"type": "string"},
            "name": {"type": "string"},
            "version": _NULLABLE_STRING,
            "runtimeStatus": {"type": "string", "enum": list(STATUS_NAMES.values())},
            "createdTime": {"type": "string", "format": "date-time"},
            "lastUpdatedTime": {"type": "string", "format": "date-time"},
            "completedTime": _NULLABLE_TIME,
            "scheduledStartTime": _NULLABLE_TIME,
            "executionId": _NULLABLE_STRING,
            "parentInstanceId": _NULLABLE_STRING,
            "taskQueue": {"type": "string"},
            "input": {"description": "The input (JSON); left out when showInput=false."},
            "output": {"description": "The output (JSON), null until the instance finishes."},
            "customStatus": {"description": "The custom status the orchestration set (JSON)."},
            "failureDetails": {
                "anyOf": [{"$ref": "#/components/schemas/FailureDetails"}, {"type": "null"}]
            },
            "historyEvents": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/HistoryEvent"},
                "description": "The current execution's history; only with showHistory=true.",
            },
            "waiting": {
                **_NULLABLE_STRING,
                "description": (
                    "Why no connected worker can move the instance on (none registered its "
                    "orchestration, its version or an activity it awaits); only on "
                    "GET /api/instances/{instanceId}, null when some worker can."
                ),
            },
            "waitingFor": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/OpenItem"},
                "description": (
                    "What a running instance waits on (activities, timers, "
                    "sub-orchestrations); only on GET /api/instances/{instanceId}."
                ),
            },
        },
    },
    "OpenItem": {
        "type": "object",
        "required": ["kind", "taskId", "name", "since", "attempt", "due", "instanceId"],
        "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["activity", "timer", "sub-orchestration"]},
            "taskId": {"type": "integer"},
            "name": {"type": "string"},
            "since": {"type": "string", "format": "date-time"},
            "attempt": {"type": ["integer", "null"], "description": "An activity's retry try."},
            "due": {**_NULLABLE_TIME, "description": "When a timer fires."},
            "instanceId": {**_NULLABLE_STRING, "description": "A sub-orchestration's id."},
        },
    },
    "LeaseTakeover": {
        "type": "object",
        "required": ["execution_id", "previous_owner", "lease_expired_at", "taken_at", "taken_by"],
        "additionalProperties": False,
        "properties": {
            "execution_id": _NULLABLE_STRING,
            "previous_owner": {**_NULLABLE_STRING, "description": "The worker that was lost."},
            "lease_expired_at": {
                "type": "string",
                "format": "date-time",
                "description": "When its lease ran out (or was broken).",
            },
            "taken_at": {
                "type": "string",
                "format": "date-time",
                "description": "When another worker leased the instance (or the lease broke).",
            },
            "taken_by": {**_NULLABLE_STRING, "description": "Null for a broken lease."},
        },
    },
    "Execution": {
        "type": "object",
        "required": [
            "generation",
            "execution_id",
            "name",
            "version",
            "started_at",
            "ended_at",
            "status",
            "input_summary",
            "output_summary",
        ],
        "additionalProperties": False,
        "properties": {
            "generation": {"type": "integer", "description": "The round: 1 for the first."},
            "execution_id": _NULLABLE_STRING,
            "name": {"type": "string"},
            "version": _NULLABLE_STRING,
            "started_at": {"type": "string", "format": "date-time"},
            "ended_at": {"type": "string", "format": "date-time"},
            "status": {
                "type": "string",
                "description": "CONTINUED_AS_NEW, or COMPLETED, FAILED or TERMINATED.",
            },
            "input_summary": {**_NULLABLE_STRING, "description": "Its input, cut short."},
            "output_summary": {
                **_NULLABLE_STRING,
                "description": "What it handed on (or its output), cut short.",
            },
        },
    },
    "Workers": {
        "type": "object",
        "required": ["workers", "backlog"],
        "additionalProperties": False,
        "properties": {
            "workers": {"type": "array", "items": {"$ref": "#/components/schemas/Worker"}},
            "backlog": {"type": "array", "items": {"$ref": "#/components/schemas/BacklogEntry"}},
        },
    },
    "Worker": {
        "type": "object",
        "required": [
            "worker_id",
            "host",
            "pid",
            "started_at",
            "heartbeat_at",
            "seconds_since_heartbeat",
            "orchestrations",
            "activities",
            "task_queues",
            "in_flight",
        ],
        "additionalProperties": False,
        "properties": {
            "worker_id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "started_at": {"type": "string", "format": "date-time"},
            "heartbeat_at": {"type": "string", "format": "date-time"},
            "seconds_since_heartbeat": {"type": "number"},
            "orchestrations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "version"],
                    "properties": {"name": {"type": "string"}, "version": _NULLABLE_STRING},
                },
            },
            "activities": {"type": "array", "items": {"type": "string"}},
            "task_queues": {"type": "array", "items": {"type": "string"}},
            "in_flight": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "BacklogEntry": {
        "type": "object",
        "required": ["kind", "name", "ready", "later", "leased"],
        "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["orchestration", "activity"]},
            "name": {"type": "string"},
            "ready": {"type": "integer", "minimum": 0},
            "later": {"type": "integer", "minimum": 0},
            "leased": {"type": "integer", "minimum": 0},
        },
    },
    "ManagementUrls": {
        "type": "object",
        "description": "The new instance's id and where to manage it (absolute URLs).",
        "required": [
            "id",
            "statusQueryGetUri",
            "sendEventPostUri",
            "terminatePostUri",
            "suspendPostUri",
            "resumePostUri",
            "rewindPostUri",
            "restartPostUri",
            "purgeHistoryDeleteUri",
            "dashboardUri",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "statusQueryGetUri": {"type": "string"},
            "sendEventPostUri": {"type": "string", "description": "Replace {eventName}."},
            "terminatePostUri": {"type": "string", "description": "Replace {text}."},
            "suspendPostUri": {"type": "string", "description": "Replace {text}."},
            "resumePostUri": {"type": "string", "description": "Replace {text}."},
            "rewindPostUri": {"type": "string", "description": "Replace {text}."},
            "restartPostUri": {"type": "string"},
            "purgeHistoryDeleteUri": {"type": "string"},
            "dashboardUri": {"type": "string"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["instanceId"],
        "additionalProperties": False,
        "properties": {"instanceId": {"type": "string"}},
    },
    "PurgeResult": {
        "type": "object",
        "required": ["instancesDeleted"],
        "additionalProperties": False,
        "properties": {"instancesDeleted": {"type": "integer", "minimum": 0}},
    },
    "Entity": {
        "type": "object",
        "required": ["entityId", "name", "key", "lastModifiedTime", "lockedBy", "backlog"],
        "properties": {
            "entityId": {"type": "string", "description": "@name@key"},
            "name": {"type": "string"},
            "key": {"type": "string"},
            "lastModifiedTime": {"type": "string", "format": "date-time"},
            "lockedBy": {
                "type": ["string", "null"],
                "description": "The orchestration whose critical section holds it.",
            },
            "backlog": {"type": "integer", "minimum": 0, "description": "Messages waiting."},
            "state": {"description": "Its state (any JSON value; null when not asked for)."},
        },
    },
    "EntityAccepted": {
        "type": "object",
        "required": ["entityId"],
        "additionalProperties": False,
        "properties": {"entityId": {"type": "string"}},
    },
    "CleanResult": {
        "type": "object",
        "required": ["emptyEntitiesRemoved", "orphanedLocksReleased"],
        "additionalProperties": False,
        "properties": {
            "emptyEntitiesRemoved": {"type": "integer", "minimum": 0},
            "orphanedLocksReleased": {"type": "integer", "minimum": 0},
        },
    },
    "Counts": {
        "type": "object",
        "description": "How many instances are in each status.",
        "required": list(STATUS_NAMES.values()),
        "additionalProperties": False,
        "properties": {name: {"type": "integer", "minimum": 0} for name in STATUS_NAMES.values()},
    },
}

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _operation(route: ApiRoute, *, token: bool, read_only: bool) -> dict[str, Any]:
    parameters = []
    for param in route.params:
        entry: dict[str, Any] = {
            "name": param.name,
            "in": param.location,
            "description": param.description,
            "required": param.required or param.location == "path",
            "schema": param.schema(),
        }
        if param.kind == "statuses":
            entry["style"] = "form"
            entry["explode"] = True
        parameters.append(entry)
    responses: dict[str, Any] = {}
    for status, reply in sorted(route.replies.items()):
        response: dict[str, Any] = {"description": reply.description}
        if reply.schema is not None:
            response["content"] = {"application/json": {"schema": reply.schema}}
        if reply.headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in reply.headers
            }
        responses[str(status)] = response
    extra: dict[int, str] = {}
    if token:
        extra[401] = "No valid token: send Authorization: Bearer <token>."
        extra[429] = "Too many wrong tokens from this address: wait Retry-After seconds."
    if route.mutating:
        if read_only:
            extra[403] = "The dashboard is read-only."
        extra[415] = "The request's Content-Type is not application/json."
    if route.body is not None:
        extra[413] = "The request body is too large."
    for status, text in extra.items():
        responses.setdefault(str(status), {"description": text, "content": _ERROR_CONTENT})
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": dict(sorted(responses.items())),
    }
    if route.body is not None:
        operation["requestBody"] = {
            "description": route.body.description,
            "required": route.body.required,
            "content": {"application/json": {"schema": route.body.schema}},
        }
    return operation


def build_document(
    routes: Sequence[ApiRoute], *, version: str, token: bool, read_only: bool
) -> dict[str, Any]:
    """The OpenAPI document for ``routes`` as this app is configured (token, read-only)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(
            route, token=token, read_only=read_only
        )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "duratask management API",
            "version": version,
            "description": (
                "Start, inspect and manage orchestration instances of a duratask task hub. "
                "Shaped like the Durable Functions HTTP API. Every POST and DELETE must send "
                "Content-Type: application/json (an empty body is fine): browsers cannot send "
                "that to another site without a CORS preflight, which this server never "
                "approves, so no web page can trigger these calls."
            ),
        },
        "paths": paths,
        "components": {"schemas": {**SCHEMAS, **SCHEDULE_SCHEMAS}},
    }
    if token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
