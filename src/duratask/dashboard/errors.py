"""Errors the dashboard answers with: an HTTP status, a short type name and a message.

API routes send them as ``{"error": {"type": ..., "message": ...}}``; pages render them.
:func:`from_exception` maps what the client raises onto them, so bad input never becomes a
server error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from duratask.dashboard.responses import SafeJSONResponse
from duratask.errors import (
    InvalidInstanceIdError,
    InvalidOperationError,
    InvalidScheduleError,
    InvalidTextError,
    OrchestrationAlreadyExistsError,
    OrchestrationFinishedError,
    OrchestrationNotFoundError,
    PayloadTooLargeError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    SerializationError,
    StoreError,
)


class HttpError(Exception):
    """A request that cannot be served, with the status and error type to answer with."""

    def __init__(
        self, status: int, type: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> HttpError:
    """400: the request itself is malformed (a parameter, the JSON body, a time...)."""
    return HttpError(400, "bad_request", message)


def from_exception(exc: BaseException) -> HttpError | None:
    """The HTTP error for an exception raised while serving a request, or None."""
    match exc:
        case HttpError():
            return exc
        case OrchestrationNotFoundError() | ScheduleNotFoundError():
            return HttpError(404, "not_found", str(exc))
        case OrchestrationAlreadyExistsError() | ScheduleAlreadyExistsError():
            return HttpError(409, "already_exists", str(exc))
        case OrchestrationFinishedError():
            return HttpError(410, "instance_finished", str(exc))
        case InvalidOperationError():
            return HttpError(409, "invalid_operation", str(exc))
        case PayloadTooLargeError():
            return HttpError(413, "payload_too_large", str(exc))
        case InvalidInstanceIdError():
            return HttpError(400, "invalid_instance_id", str(exc))
        case InvalidTextError():
            return HttpError(400, "invalid_text", str(exc))
        case InvalidScheduleError():
            return HttpError(400, "invalid_schedule", str(exc))
        case SerializationError():
            return HttpError(400, "invalid_payload", str(exc))
        case StoreError():
            return HttpError(503, "store_unavailable", f"the task hub store failed: {exc}")
        case ValueError() | TypeError():
            # The client validates its arguments with these (times, sizes, tokens, statuses).
            return bad_request(str(exc))
    return None


def error_body(error: HttpError) -> dict[str, Any]:
    """The JSON body of an API error."""
    return {"error": {"type": error.type, "message": error.message}}


def json_error(error: HttpError) -> SafeJSONResponse:
    """An API error response."""
    return SafeJSONResponse(error_body(error), status_code=error.status, headers=error.headers)
