"""The timeline model: history events paired into bars, and their layout."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from duratask import history as h
from duratask.backends.base import LeaseTakeover
from duratask.dashboard.gantt import Bar, build_bars, format_duration, layout
from duratask.state import FailureDetails, OrchestrationStatus

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def started(name: str = "flow") -> h.ExecutionStarted:
    return h.ExecutionStarted(
        timestamp=at(0), name=name, instance_id="i1", execution_id="e1", input="1"
    )


def episode(ms: int, *events: h.HistoryEvent) -> list[h.HistoryEvent]:
    return [
        h.OrchestratorStarted(timestamp=at(ms)),
        *events,
        h.OrchestratorCompleted(timestamp=at(ms)),
    ]


def by_label(bars: list[Bar]) -> dict[str, Bar]:
    return {b.label: b for b in bars}


def test_scheduled_and_completed_events_pair_into_bars() -> None:
    events = [
        *episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="charge")),
        *episode(
            120,
            h.TaskCompleted(timestamp=at(110), task_scheduled_id=0, result="2"),
            h.TimerCreated(event_id=1, timestamp=at(120), fire_at=at(620)),
        ),
        *episode(
            625,
            h.TimerFired(timestamp=at(620), timer_id=1, fire_at=at(620)),
            h.SubOrchestrationInstanceCreated(
                event_id=2, timestamp=at(625), name="notify", instance_id="i1:notify"
            ),
        ),
        *episode(
            900,
            h.SubOrchestrationInstanceCompleted(timestamp=at(890), task_scheduled_id=2),
            h.ExecutionCompleted(timestamp=at(900), status=OrchestrationStatus.COMPLETED),
        ),
    ]
    bars = build_bars(events, OrchestrationStatus.COMPLETED, now=at(5000))
    assert bars[0].kind == "orchestration" and bars[0].label == "orchestration flow"
    assert (bars[0].start, bars[0].end, bars[0].outcome) == (at(0), at(900), "completed")
    named = by_label(bars)
    assert (named["activity charge"].start, named["activity charge"].end) == (at(0), at(110))
    assert (named["timer"].start, named["timer"].end) == (at(120), at(620))
    sub = named["sub-orchestration notify"]
    assert (sub.start, sub.end, sub.instance_id) == (at(625), at(890), "i1:notify")
    assert [b.kind for b in bars] == ["orchestration", "activity", "timer", "sub-orchestration"]


def test_an_event_wait_runs_from_the_previous_step_to_the_arrival() -> None:
    events = [
        *episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="a")),
        *episode(50, h.TaskCompleted(timestamp=at(40), task_scheduled_id=0)),
        *episode(3000, h.EventRaised(timestamp=at(2990), name="approve", input='"bob"')),
    ]
    bars = build_bars(events, OrchestrationStatus.RUNNING, now=at(4000))
    wait = by_label(bars)["event approve"]
    assert (wait.kind, wait.start, wait.end) == ("event", at(50), at(2990))


def test_failures_and_unfinished_work_are_marked() -> None:
    failure = FailureDetails("ValueError", "bad card")
    events = [
        *episode(
            0,
            started(),
            h.TaskScheduled(event_id=0, timestamp=at(0), name="charge"),
            h.TimerCreated(event_id=1, timestamp=at(0), fire_at=at(10_000)),
        ),
        *episode(
            200,
            h.TaskFailed(timestamp=at(190), task_scheduled_id=0, failure_details=failure),
            h.ExecutionCompleted(
                timestamp=at(200), status=OrchestrationStatus.FAILED, failure_details=failure
            ),
        ),
    ]
    bars = by_label(build_bars(events, OrchestrationStatus.FAILED, now=at(300)))
    assert bars["activity charge"].outcome == "failed"
    assert "ValueError: bad card" in bars["activity charge"].detail
    # the timer never fired: it ends with the execution, cancelled
    assert (bars["timer"].end, bars["timer"].outcome) == (at(200), "cancelled")
    assert bars["orchestration flow"].outcome == "failed"


def test_a_running_instance_shows_what_is_still_open() -> None:
    events = [*episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="slow"))]
    bars = by_label(build_bars(events, OrchestrationStatus.RUNNING, now=at(700)))
    assert bars["activity slow"].end is None and bars["activity slow"].outcome == "running"
    assert "waiting" not in bars


def test_a_running_instance_with_nothing_open_is_waiting() -> None:
    events = [*episode(5, started())]
    bars = by_label(build_bars(events, OrchestrationStatus.RUNNING, now=at(700)))
    assert bars["waiting"].start == at(5) and bars["waiting"].end is None
    chart = layout(list(bars.values()), now=at(700))
    assert chart is not None
    waiting = next(r for r in chart.rows if r.bar.kind == "waiting")
    assert waiting.duration.endswith("so far")


def test_suspension_is_a_bar() -> None:
    events = [
        *episode(0, started()),
        *episode(100, h.ExecutionSuspended(timestamp=at(100), reason="maintenance")),
        *episode(400, h.ExecutionResumed(timestamp=at(400))),
    ]
    bars = by_label(build_bars(events, OrchestrationStatus.RUNNING, now=at(500)))
    assert (bars["suspended"].start, bars["suspended"].end) == (at(100), at(400))


def test_layout_places_bars_on_a_shared_axis() -> None:
    events = [
        *episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="a")),
        *episode(
            1000,
            h.TaskCompleted(timestamp=at(500), task_scheduled_id=0),
            h.ExecutionCompleted(timestamp=at(1000), status=OrchestrationStatus.COMPLETED),
        ),
    ]
    chart = layout(build_bars(events, OrchestrationStatus.COMPLETED, at(2000)), at(2000))
    assert chart is not None
    whole, activity = chart.rows
    plot = chart.plot_right - chart.plot_left
    assert whole.x == chart.plot_left and abs(whole.width - plot) < 0.01
    assert activity.x == chart.plot_left and abs(activity.width - plot / 2) < 0.01
    assert activity.y > whole.y
    labels = [t.label for t in chart.ticks]
    assert labels == ["+0 ms", "+200 ms", "+400 ms", "+600 ms", "+800 ms", "+1 s"]


def test_ticks_fall_on_round_values_whatever_the_span() -> None:
    events = [
        *episode(0, started()),
        *episode(
            1370, h.ExecutionCompleted(timestamp=at(1370), status=OrchestrationStatus.COMPLETED)
        ),
    ]
    chart = layout(build_bars(events, OrchestrationStatus.COMPLETED, at(2000)), at(2000))
    assert chart is not None
    assert [t.label for t in chart.ticks] == ["+0 ms", "+500 ms", "+1 s"]
    assert all(chart.plot_left <= t.x <= chart.plot_right for t in chart.ticks)


def test_the_tries_of_a_retried_activity_share_a_row() -> None:
    failure = FailureDetails("IOError", "flaky")
    events = [
        *episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="charge")),
        *episode(
            100,
            h.TaskFailed(timestamp=at(100), task_scheduled_id=0, failure_details=failure),
            h.TimerCreated(event_id=1, timestamp=at(100), fire_at=at(200)),
        ),
        *episode(
            200,
            h.TimerFired(timestamp=at(200), timer_id=1, fire_at=at(200)),
            h.TaskScheduled(event_id=2, timestamp=at(200), name="charge", attempt=2),
        ),
        *episode(300, h.TaskCompleted(timestamp=at(300), task_scheduled_id=2)),
        *episode(400, h.TaskScheduled(event_id=3, timestamp=at(400), name="charge")),
        *episode(500, h.TaskCompleted(timestamp=at(500), task_scheduled_id=3)),
    ]
    chart = layout(build_bars(events, OrchestrationStatus.RUNNING, at(600)), at(600))
    assert chart is not None
    tries = [r for r in chart.rows if r.bar.kind == "activity"]
    assert [(r.bar.attempt, r.bar.outcome) for r in tries] == [
        (1, "failed"),
        (2, "completed"),
        (1, "completed"),
    ]
    first, second, separate = tries
    assert first.y == second.y != separate.y  # a new call (attempt 1) gets its own row
    assert first.label == "activity charge (2 tries)" and first.first_of_row
    assert not second.first_of_row and second.last_of_row and not first.last_of_row
    assert separate.label == "activity charge"


def test_a_timer_that_never_fired_and_a_rewind_are_marked() -> None:
    events = [
        *episode(
            0,
            started(),
            h.TimerCreated(event_id=0, timestamp=at(0), fire_at=at(10_000)),
            h.TaskScheduled(event_id=1, timestamp=at(0), name="a"),
        ),
        *episode(
            100,
            h.TaskCompleted(timestamp=at(100), task_scheduled_id=1),
            h.ExecutionCompleted(timestamp=at(100), status=OrchestrationStatus.COMPLETED),
        ),
        h.ExecutionRewound(timestamp=at(150), reason="try again"),
    ]
    bars = build_bars(events, OrchestrationStatus.COMPLETED, at(200))
    (timer,) = [b for b in bars if b.kind == "timer"]
    assert timer.outcome == "cancelled" and "never fired" in timer.detail
    (mark,) = [b for b in bars if b.label == "rewound"]
    assert mark.kind == "mark" and mark.detail == "try again"


def test_no_history_means_no_chart() -> None:
    assert build_bars([], None, at(0)) == []
    assert layout([], at(0)) is None


def test_durations_read_well() -> None:
    assert format_duration(timedelta(milliseconds=850)) == "850 ms"
    assert format_duration(timedelta(seconds=12.34)) == "12.3 s"
    assert format_duration(timedelta(seconds=245)) == "4m 05s"
    assert format_duration(timedelta(hours=2, minutes=3)) == "2h 03m"
    assert format_duration(timedelta(days=3, hours=4)) == "3d 04h"


def test_a_lost_worker_is_the_gap_from_the_last_step_until_the_takeover() -> None:
    events = [
        *episode(0, started(), h.TaskScheduled(event_id=0, timestamp=at(0), name="charge")),
        *episode(
            5_000,
            h.TaskCompleted(timestamp=at(100), task_scheduled_id=0, result="2"),
            h.ExecutionCompleted(timestamp=at(5_000), status=OrchestrationStatus.COMPLETED),
        ),
    ]
    lost = LeaseTakeover("i1", "e1", "w1", lease_expired_at=at(4_000), taken_at=at(4_900))
    lost = dataclasses.replace(lost, taken_by="w2")
    broken = LeaseTakeover("i1", "e1", "w2", lease_expired_at=at(4_950), taken_at=at(4_950))
    older = LeaseTakeover("i1", "e0", "w0", lease_expired_at=at(10), taken_at=at(20))
    bars = build_bars(events, OrchestrationStatus.COMPLETED, at(6_000), [lost, broken, older])
    gaps = [b for b in bars if b.kind == "lost"]
    assert [(g.start, g.end) for g in gaps] == [(at(100), at(4_900)), (at(100), at(4_950))]
    assert gaps[0].label == "worker lost" and gaps[0].outcome == "lost"
    assert "lease of w1 ran out unreleased" in gaps[0].detail and "by w2" in gaps[0].detail
    assert "broken" in gaps[1].detail, "a broken lease says so"
