"""The trace-context fields of history events: JSON round trip and older histories."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from duratask import history as h

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CARRIER = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=value",
}

TRACED = [
    h.ExecutionStarted(
        timestamp=NOW, name="o", instance_id="i", execution_id="e", trace_context=CARRIER
    ),
    h.TaskScheduled(event_id=3, timestamp=NOW, name="a", input="1", trace_context=CARRIER),
    h.TimerFired(
        timestamp=NOW + timedelta(minutes=5),
        timer_id=4,
        fire_at=NOW + timedelta(minutes=5),
        trace_context=CARRIER,
        created_at=NOW,
    ),
]


@pytest.mark.parametrize("event", TRACED, ids=lambda e: type(e).__name__)
def test_trace_fields_survive_the_storage_format(event: h.HistoryEvent) -> None:
    assert h.event_from_json(h.event_to_json(event)) == event
    assert h.history_from_json(h.history_to_json([event])) == [event]


def test_untraced_events_are_stored_as_before() -> None:
    started = h.ExecutionStarted(timestamp=NOW, name="o", instance_id="i", execution_id="e")
    fired = h.TimerFired(timestamp=NOW, timer_id=1, fire_at=NOW)
    for event in (started, fired):
        stored = json.loads(h.event_to_json(event))
        assert "trace_context" not in stored and "created_at" not in stored
    assert json.loads(h.event_to_json(started))["tags"] is None, "other fields are kept"


def test_histories_written_before_the_fields_existed_still_read() -> None:
    old = (
        '[{"type": "TIMER_FIRED", "event_id": -1, "timestamp": "2024-05-01T12:05:00+00:00",'
        ' "timer_id": 4, "fire_at": "2024-05-01T12:05:00+00:00"},'
        ' {"type": "TASK_SCHEDULED", "event_id": 3, "timestamp": "2024-05-01T12:00:00+00:00",'
        ' "name": "a", "version": null, "input": "1"}]'
    )
    fired, scheduled = h.history_from_json(old)
    assert isinstance(fired, h.TimerFired) and fired.trace_context is None
    assert fired.created_at is None
    assert isinstance(scheduled, h.TaskScheduled) and scheduled.trace_context is None
