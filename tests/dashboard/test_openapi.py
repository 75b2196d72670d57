"""The OpenAPI document: valid, complete, and true to the server (checked by schemathesis)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.routing import Route

from duratask.dashboard import create_app
from duratask.dashboard.api import API_ROUTES

APP = create_app(f"memory://openapi-{uuid.uuid4().hex}")
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)


def served_api_operations() -> set[tuple[str, str]]:
    operations = set()
    for route in APP.routes:
        if isinstance(route, Route) and route.path.startswith("/api/"):
            for method in route.methods or ():
                if method != "HEAD":
                    operations.add((method.lower(), route.path.replace(":path}", "}")))
    return operations


def test_the_document_is_valid_openapi() -> None:
    SCHEMA.validate()
    assert SCHEMA.raw_schema["openapi"] == "3.1.0"


def test_every_api_route_is_documented_and_nothing_else() -> None:
    documented = {
        (method, path)
        for path, operations in SCHEMA.raw_schema["paths"].items()
        for method in operations
    }
    assert documented == served_api_operations()
    assert len(documented) == 28
    ids = [op["operationId"] for ops in SCHEMA.raw_schema["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_every_parameter_the_server_reads_is_documented() -> None:
    paths = SCHEMA.raw_schema["paths"]
    for route in API_ROUTES:
        operation = paths[route.openapi_path][route.method.lower()]
        documented = {(p["name"], p["in"]) for p in operation["parameters"]}
        assert documented == {(p.name, p.location) for p in route.params}, route.operation_id
        path_names = {p.name for p in route.params if p.location == "path"}
        assert all(f"{{{name}}}" in route.openapi_path for name in path_names)
        assert ("requestBody" in operation) == (route.body is not None)
        assert all(200 <= int(code) < 600 for code in operation["responses"])


@pytest.mark.parametrize(
    "path, method, status",
    [
        ("/api/orchestrations/{name}", "post", "202"),
        ("/api/instances/{instance_id}", "get", "202"),
        ("/api/instances/{instance_id}", "delete", "409"),
        ("/api/instances", "get", "200"),
        ("/api/instances/{instance_id}/raiseEvent/{event}", "post", "410"),
        ("/api/instances/{instance_id}/rewind", "post", "409"),
    ],
)
def test_key_responses_are_documented(path: str, method: str, status: str) -> None:
    responses = SCHEMA.raw_schema["paths"][path][method]["responses"]
    assert status in responses
    assert "415" in responses or method == "get"


@SCHEMA.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_the_promises_of_its_schema(case: schemathesis.Case[Any]) -> None:
    # Mutating calls must say they send JSON (see the security notes). Every check applies
    # but one: a request the schema allows may still be refused with 400 or 410 for what no
    # schema can state (an opaque continuation token that is not one of ours, an event for
    # an instance that has finished), so "schema-valid means accepted" cannot hold.
    case.call_and_validate(
        headers={"Content-Type": "application/json"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
