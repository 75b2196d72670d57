"""Parsing of times, JSON arguments and statuses; URL masking; timeline rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from duratask import history as h
from duratask.cli.errors import CliError, ExitCode
from duratask.cli.parsing import parse_json_argument, parse_statuses, parse_time
from duratask.cli.store import mask_url
from duratask.cli.timeline_rows import excerpt, format_duration, timeline_rows
from duratask.state import FailureDetails, OrchestrationStatus

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _at(text: str) -> datetime:
    return parse_time(text, "--since", now=lambda: NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("-2h", NOW - timedelta(hours=2)),
        ("-30m", NOW - timedelta(minutes=30)),
        ("-7d", NOW - timedelta(days=7)),
        ("-1w", NOW - timedelta(weeks=1)),
        ("+10s", NOW + timedelta(seconds=10)),
        ("-1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = _at(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "2h", "-2x", "--2h", "2024-02-30", ""])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(CliError) as caught:
        _at(text)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.message.startswith(f"--since: cannot read {text!r} as a time")


def test_parse_time_offsets_from_a_timezone_stay_correct() -> None:
    east = timezone(timedelta(hours=5))
    assert parse_time("now", "--until", now=lambda: NOW.astimezone(east)) == NOW


def test_parse_json_inline_file_and_errors(tmp_path: Path) -> None:
    assert parse_json_argument('{"a": [1, null]}', "--input") == {"a": [1, None]}
    assert parse_json_argument("3.5", "--input") == 3.5
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"k": "v"}))
    assert parse_json_argument(f"@{path}", "--data") == {"k": "v"}

    with pytest.raises(CliError) as bad:
        parse_json_argument("[1,\n 2,,]", "--data")
    assert bad.value.exit_code == ExitCode.USAGE
    assert bad.value.message == (
        "invalid JSON in --data: Expecting value at line 2 column 4 (character 7)"
    )
    with pytest.raises(CliError) as missing:
        parse_json_argument(f"@{tmp_path / 'none.json'}", "--input")
    assert "cannot read --input file" in missing.value.message
    assert "No such file or directory" in missing.value.message


def test_parse_statuses() -> None:
    assert parse_statuses(["failed", "Completed,RUNNING", "FAILED"]) == [
        OrchestrationStatus.FAILED,
        OrchestrationStatus.COMPLETED,
        OrchestrationStatus.RUNNING,
    ]
    assert parse_statuses([]) == []
    with pytest.raises(CliError) as caught:
        parse_statuses(["done"])
    assert "unknown status 'done'; use one of RUNNING, COMPLETED" in caught.value.message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("sqlite:////abs/hub.db", "sqlite:////abs/hub.db"),
        ("sqlite:///rel/hub.db", "sqlite:///rel/hub.db"),
        ("memory://x", "memory://x"),
        ("postgresql://app@db:5432/x?schema=h", "postgresql://app@db:5432/x?schema=h"),
        ("postgresql://app:pw@db:5432/x?schema=h", "postgresql://app:***@db:5432/x?schema=h"),
        ("postgres://app:p%40ss@db/x", "postgres://app:***@db/x"),
        ("postgresql://db/x?user=a&password=pw", "postgresql://db/x?user=a&password=***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_excerpt_and_durations() -> None:
    assert excerpt(None) == ""
    assert excerpt('{"a":\n 1}') == '{"a": 1}'
    long = "x" * 100
    assert excerpt(long) == "x" * 59 + "…"
    assert format_duration(None) == ""
    assert format_duration(timedelta(milliseconds=7)) == "7 ms"
    assert format_duration(timedelta(seconds=12.34)) == "12.3 s"
    assert format_duration(timedelta(minutes=4, seconds=5)) == "4m 05s"
    assert format_duration(timedelta(hours=2, minutes=10)) == "2h 10m"
    assert format_duration(timedelta(days=3, hours=4)) == "3d 4h"


def test_timeline_rows_pair_completions_and_waits() -> None:
    t = [NOW + timedelta(seconds=s) for s in range(20)]
    failure = FailureDetails("ValueError", "bad")
    events: list[h.HistoryEvent] = [
        h.OrchestratorStarted(timestamp=t[0]),
        h.ExecutionStarted(
            timestamp=t[0],
            name="flow",
            version="2",
            input='"in"',
            instance_id="i",
            execution_id="e",
        ),
        h.TaskScheduled(timestamp=t[0], event_id=0, name="work", input="1"),
        h.TimerCreated(timestamp=t[0], event_id=1, fire_at=t[5]),
        h.OrchestratorCompleted(timestamp=t[1]),
        h.OrchestratorStarted(timestamp=t[3]),
        h.TaskFailed(timestamp=t[3], task_scheduled_id=0, failure_details=failure),
        h.OrchestratorCompleted(timestamp=t[3]),
        h.OrchestratorStarted(timestamp=t[5]),
        h.TimerFired(timestamp=t[5], timer_id=1, fire_at=t[5]),
        h.SubOrchestrationInstanceCreated(
            timestamp=t[5], event_id=2, name="child", instance_id="i:c", input=None
        ),
        h.OrchestratorCompleted(timestamp=t[6]),
        h.OrchestratorStarted(timestamp=t[9]),
        h.SubOrchestrationInstanceCompleted(timestamp=t[9], task_scheduled_id=2, result='"ok"'),
        h.EventRaised(timestamp=t[8], name="go", input='{"x":1}'),
        h.ExecutionCompleted(timestamp=t[10], status=OrchestrationStatus.COMPLETED, result="7"),
        h.OrchestratorCompleted(timestamp=t[10]),
    ]
    rows = timeline_rows(events)
    got = [(r.event, r.subject, r.payload, r.duration, r.failed) for r in rows]
    sec = timedelta(seconds=1)
    assert got == [
        ("ExecutionStarted", "flow v2", '"in"', None, False),
        ("TaskScheduled", "#0 work", "1", None, False),
        ("TimerCreated", "#1 timer", "fires after 5.0 s", None, False),
        ("TaskFailed", "#0 work", "ValueError: bad", 3 * sec, True),
        ("TimerFired", "#1 timer", "", 5 * sec, False),
        ("SubOrchestrationInstanceCreated", "#2 child (i:c)", "", None, False),
        ("SubOrchestrationInstanceCompleted", "#2 child", '"ok"', 4 * sec, False),
        # Waited from the end of the previous step (t6) to the event's arrival (t8).
        ("EventRaised", "go", '{"x":1}', 2 * sec, False),
        ("ExecutionCompleted", "COMPLETED", "7", 10 * sec, False),
    ]
    assert [r.offset for r in rows][-1] == 10 * sec
    assert timeline_rows([]) == []


def test_timeline_marks_a_failed_execution() -> None:
    failure = FailureDetails("Boom", "it broke")
    rows = timeline_rows(
        [
            h.ExecutionStarted(timestamp=NOW, name="f", instance_id="i", execution_id="e"),
            h.ExecutionCompleted(
                timestamp=NOW, status=OrchestrationStatus.FAILED, failure_details=failure
            ),
        ]
    )
    assert (rows[1].subject, rows[1].payload, rows[1].failed) == ("FAILED", "Boom: it broke", True)
