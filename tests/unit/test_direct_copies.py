"""The hot path builds some values directly instead of with ``dataclasses.replace``; these
tests keep each such copy equal to what replace makes, for values whose every field is set,
so a field added later cannot be forgotten."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    EagerLease,
    OrchestrationCommit,
    OrchestrationMessage,
)
from duratask.converter import JsonDataConverter
from duratask.history import EventRaised
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus
from duratask.worker._episodes import _with_lease
from duratask.worker._instance_state import touched

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def every_field_set(cls: type, **given: Any) -> Any:
    """An instance of ``cls`` whose every field differs from its default."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in given:
            values[field.name] = given[field.name]
        elif "datetime" in str(field.type):
            values[field.name] = T0 + timedelta(minutes=len(values))
        elif "bool" in str(field.type):
            values[field.name] = True
        else:
            values[field.name] = f"{field.name}-value"
    return cls(**values)


def test_touched_state_is_what_replace_makes() -> None:
    state = every_field_set(
        OrchestrationState,
        runtime_status=OrchestrationStatus.FAILED,
        failure_details=FailureDetails("E", "m"),
        converter=JsonDataConverter(),
    )
    later = T0 + timedelta(days=1)
    expected = dataclasses.replace(state, last_updated_at=later, serialized_custom_status='"x"')
    made = touched(state, later, '"x"')
    assert made == expected
    assert made.converter is state.converter  # not compared by ==


def test_a_commit_with_a_lease_is_what_replace_makes() -> None:
    state = every_field_set(OrchestrationState, runtime_status=OrchestrationStatus.RUNNING)
    request = ActivityRequest("a", "e", 1, "act")
    finished = ActivityWorkItem(7, request, "token", T0)
    commit = every_field_set(
        OrchestrationCommit,
        state=state,
        new_events=(EventRaised(timestamp=T0, name="x"),),
        consumed_message_ids=(1, 2),
        activities=(request,),
        messages=(OrchestrationMessage("a", EventRaised(timestamp=T0, name="y")),),
        eager_activities=EagerLease("other", timedelta(seconds=1), 1),
        finished_activity=None,
    )
    eager = EagerLease("w", timedelta(seconds=30), 1)
    expected = dataclasses.replace(commit, eager_activities=eager, finished_activity=finished)
    assert _with_lease(commit, eager, finished) == expected
