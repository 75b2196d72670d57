"""API routes described once: the table that both serves requests and writes ``/openapi.json``.

Each :class:`ApiRoute` names its parameters with their kinds; :func:`read_args` reads and
checks exactly those from a request, so the document cannot promise a parameter the server
ignores, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from duratask.dashboard.errors import bad_request
from duratask.dashboard.values import (
    ACCEPTED_STATUS_NAMES,
    parse_bool,
    parse_int,
    parse_statuses,
    parse_time,
)
from duratask.state import OrchestrationStatus

if TYPE_CHECKING:
    from duratask.client import AsyncTaskHubClient

ParamKind = Literal["string", "integer", "boolean", "datetime", "statuses"]
Location = Literal["path", "query", "header"]
MAX_TEXT = 1024


@dataclass(frozen=True, slots=True)
class Param:
    """One request parameter."""

    name: str
    location: Location
    kind: ParamKind
    description: str
    required: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int = MAX_TEXT
    choices: tuple[str, ...] = ()  # a string that must be one of these

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the parameter's value."""
        match self.kind:
            case "integer":
                schema: dict[str, Any] = {"type": "integer"}
                if self.minimum is not None:
                    schema["minimum"] = self.minimum
                if self.maximum is not None:
                    schema["maximum"] = self.maximum
            case "boolean":
                schema = {"type": "boolean"}
            case "datetime":
                schema = {"type": "string", "format": "date-time"}
            case "statuses":
                schema = {
                    "type": "array",
                    "items": {"type": "string", "enum": ACCEPTED_STATUS_NAMES},
                }
            case _ if self.choices:
                schema = {"type": "string", "enum": list(self.choices)}
            case _:
                schema = {"type": "string", "maxLength": self.max_length}
                if self.required:
                    schema["minLength"] = 1
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON request body."""

    description: str
    schema: dict[str, Any] = field(default_factory=dict)
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response."""

    description: str
    schema: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()


class Args:
    """The checked parameter values of one request, by name."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def text(self, name: str) -> str | None:
        value = self._values.get(name)
        assert value is None or isinstance(value, str)
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        assert value is not None
        return value

    def integer(self, name: str) -> int:
        value = self._values[name]
        assert isinstance(value, int)
        return value

    def flag(self, name: str) -> bool:
        value = self._values.get(name)
        assert isinstance(value, bool)
        return value

    def time(self, name: str) -> datetime | None:
        value = self._values.get(name)
        assert value is None or isinstance(value, datetime)
        return value

    def statuses(self, name: str) -> list[OrchestrationStatus] | None:
        value = self._values.get(name)
        assert value is None or isinstance(value, list)
        return value

    def given(self, *names: str) -> bool:
        """True if any of ``names`` was given."""
        return any(self._values.get(n) is not None for n in names)


@dataclass(frozen=True, slots=True)
class ApiCall:
    """What a route handler gets: the request, the client and the checked parameters."""

    request: Request
    client: AsyncTaskHubClient
    args: Args


Handler = Callable[[ApiCall], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One API operation: method, path, parameters, body, responses and its handler."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str  # starlette form: ``{instance_id:path}``
    operation_id: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    body: Body | None = None
    replies: dict[int, Reply] = field(default_factory=dict)
    tag: str = "instances"

    @property
    def openapi_path(self) -> str:
        """The path in OpenAPI form (``{instance_id}``)."""
        return self.path.replace(":path}", "}")

    @property
    def mutating(self) -> bool:
        return self.method != "GET"


def _raw_values(request: Request, param: Param) -> list[str]:
    match param.location:
        case "path":
            value = request.path_params.get(param.name)
            return [] if value is None else [str(value)]
        case "header":
            value = request.headers.get(param.name)
            return [] if value is None else [value]
        case _:
            return request.query_params.getlist(param.name)


def read_args(request: Request, params: tuple[Param, ...]) -> Args:
    """Read and check the route's parameters; 400 naming the first bad one."""
    values: dict[str, Any] = {}
    for param in params:
        raw = _raw_values(request, param)
        what = f"{param.location} parameter {param.name!r}"
        if param.kind == "statuses":
            values[param.name] = parse_statuses(raw, what)
            continue
        if len(raw) > 1:
            raise bad_request(f"{what} is given {len(raw)} times; give it once")
        if not raw or (raw[0] == "" and param.kind == "string" and not param.required):
            if param.required:
                raise bad_request(f"{what} is required")
            values[param.name] = param.default
            continue
        text = raw[0]
        match param.kind:
            case "integer":
                values[param.name] = parse_int(
                    text,
                    what,
                    minimum=param.minimum if param.minimum is not None else -(2**63),
                    maximum=param.maximum if param.maximum is not None else 2**63 - 1,
                )
            case "boolean":
                values[param.name] = parse_bool(text, what)
            case "datetime":
                values[param.name] = parse_time(text, what)
            case _:
                if len(text) > param.max_length:
                    raise bad_request(f"{what} is longer than {param.max_length} characters")
                if param.required and not text:
                    raise bad_request(f"{what} must not be empty")
                if param.choices and text not in param.choices:
                    raise bad_request(f"{what} must be one of {', '.join(param.choices)}")
                values[param.name] = text
    return Args(values)
