"""Events as stored: the fast writer gives the very text of the standard one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from duratask import history as h
from duratask.state import FailureDetails, OrchestrationStatus


def standard_text(event: h.HistoryEvent) -> str:
    """The storage format as defined: the event's dict, compact JSON, ASCII-escaped."""
    return json.dumps(event.to_dict(), separators=(",", ":"))


texts = st.text()
optional_texts = st.none() | texts
ints = st.integers(min_value=-(2**70), max_value=2**70)
times = (
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(tzinfo=UTC)
    )
    | st.datetimes(timezones=st.just(timezone(timedelta(hours=5, minutes=30))))
    | st.datetimes()
)
durations = st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9))
contexts = st.none() | st.dictionaries(texts, texts, max_size=2)
common = {"event_id": ints, "timestamp": times}

events = st.one_of(
    st.builds(
        h.TaskScheduled,
        **common,
        name=texts,
        version=optional_texts,
        input=optional_texts,
        trace_context=contexts,
        attempt=ints,
        timeout=durations,
        heartbeat_timeout=durations,
        task_queue=st.sampled_from(["default", "other"]) | texts,
    ),
    st.builds(h.TaskCompleted, **common, task_scheduled_id=ints, result=optional_texts),
    st.builds(
        h.TaskFailed,
        **common,
        task_scheduled_id=ints,
        failure_details=st.builds(FailureDetails, error_type=texts, message=texts),
        heartbeat_details=optional_texts,
    ),
    st.builds(h.OrchestratorStarted, **common),
    st.builds(h.OrchestratorCompleted, **common),
    st.builds(
        h.ExecutionStarted,
        **common,
        name=texts,
        version=optional_texts,
        input=optional_texts,
        instance_id=texts,
        execution_id=texts,
        tags=st.none() | st.dictionaries(texts, texts, max_size=2),
        task_queue=texts,
    ),
    st.builds(
        h.ExecutionCompleted,
        **common,
        status=st.sampled_from(OrchestrationStatus),
        result=optional_texts,
    ),
    st.builds(h.TimerFired, **common, timer_id=ints, fire_at=times, created_at=st.none() | times),
    st.builds(h.EventRaised, **common, name=texts, input=optional_texts),
    st.builds(h.ExecutionTerminated, **common, input=optional_texts, recurse=st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(events)
def test_an_event_is_stored_as_the_standard_encoder_writes_it(event: h.HistoryEvent) -> None:
    assert h.event_to_json(event) == standard_text(event)
    assert h.event_from_json(h.event_to_json(event)) == event


def test_control_characters_and_other_scripts_are_escaped_as_before() -> None:
    for text in ["\x00\x1b\x1f\x7f", "tab\there", "naïve ☃ \U0001f600", 'q"\\/']:
        event = h.EventRaised(timestamp=datetime(2026, 1, 1, tzinfo=UTC), name=text, input=text)
        assert h.event_to_json(event) == standard_text(event)
