"""Where an instance's time went: history events paired into bars, laid out as an SVG chart.

Scheduled and finished events are paired by their sequence number: an activity runs from
``TaskScheduled`` to ``TaskCompleted``/``TaskFailed``, a timer from ``TimerCreated`` to
``TimerFired``, a sub-orchestration from its creation to its result. A wait for an external
event leaves no mark when it starts, so its bar runs from the end of the orchestration's
previous step to the event's arrival. A running instance with nothing outstanding is shown
waiting (for an event, or for a worker) since its last step.

The tries of one retried activity share a row (``group``), each try its own bar. A timer that
never fired (its execution ended first) is drawn apart. Rewinds and termination requests are
marks. A worker lost while it held the instance (its lease ran out unreleased, or was broken)
is a "worker lost" bar: from the instance's last recorded step before the lease ran out until
another worker took it over. Axis ticks fall on round durations (1, 2 or 5 times a power of
ten of a unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from duratask import history as h
from duratask.backends.base import LeaseTakeover
from duratask.state import OrchestrationStatus

MAX_BARS = 400
_LABEL_LENGTH = 38


@dataclass(frozen=True, slots=True)
class Bar:
    """One span of the instance's life."""

    # orchestration, activity, sub-orchestration, timer, event, waiting, suspended, mark, lost
    kind: str
    label: str
    start: datetime
    end: datetime | None  # None: still going
    outcome: str  # completed, failed, running, waiting, cancelled, info
    detail: str = ""
    instance_id: str | None = None  # the sub-orchestration a bar stands for
    group: str | None = None  # bars of one group (the tries of an activity) share a row
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Row:
    """A bar placed on the chart; bars of one group share ``y``, and only the first shows
    the label and only the last the duration."""

    bar: Bar
    y: float
    x: float
    width: float
    duration: str
    label: str
    first_of_row: bool = True
    last_of_row: bool = True


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """The laid-out chart: rows, axis ticks, sizes (SVG user units)."""

    rows: list[Row]
    ticks: list[Tick]
    width: int
    height: int
    plot_left: int
    plot_right: int
    hidden: int  # bars left out beyond MAX_BARS
    start: datetime
    end: datetime


def format_duration(delta: timedelta) -> str:
    """A short human duration: 850 ms, 12.3 s, 4m 05s, 2h 03m, 3d 04h."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


@dataclass(slots=True)
class _Open:
    kind: str
    label: str
    start: datetime
    detail: str
    instance_id: str | None = None
    group: str | None = None
    attempt: int = 1


def _close(item: _Open, end: datetime, outcome: str, detail: str = "") -> Bar:
    return Bar(
        item.kind,
        item.label,
        item.start,
        max(end, item.start),
        outcome,
        detail or item.detail,
        item.instance_id,
        item.group,
        item.attempt,
    )


def build_bars(
    events: Sequence[h.HistoryEvent],
    status: OrchestrationStatus | None,
    now: datetime,
    takeovers: Sequence[LeaseTakeover] = (),
) -> list[Bar]:
    """Pair the events of one execution into bars, the orchestration's own bar first; the
    ``takeovers`` of that execution become "worker lost" bars."""
    started = next((e for e in events if isinstance(e, h.ExecutionStarted)), None)
    if started is None:
        return []
    bars: list[Bar] = []
    open_items: dict[int, _Open] = {}
    previous_step_end = started.timestamp
    last_step_end = started.timestamp
    suspended_at: datetime | None = None
    finished: datetime | None = None
    retry_groups: dict[str, str] = {}  # activity name -> the group of its latest first try
    for event in events:
        match event:
            case h.OrchestratorStarted():
                previous_step_end = last_step_end
            case h.OrchestratorCompleted():
                last_step_end = event.timestamp
            case h.TaskScheduled():
                if event.attempt <= 1 or event.name not in retry_groups:
                    retry_groups[event.name] = f"activity-{event.event_id}"
                open_items[event.event_id] = _Open(
                    "activity",
                    f"activity {event.name}",
                    event.timestamp,
                    f"#{event.event_id} attempt {event.attempt}",
                    group=retry_groups[event.name],
                    attempt=event.attempt,
                )
            case h.SubOrchestrationInstanceCreated():
                open_items[event.event_id] = _Open(
                    "sub-orchestration",
                    f"sub-orchestration {event.name}",
                    event.timestamp,
                    f"#{event.event_id} {event.instance_id}",
                    event.instance_id,
                )
            case h.TimerCreated():
                open_items[event.event_id] = _Open(
                    "timer",
                    "timer",
                    event.timestamp,
                    f"#{event.event_id} until {event.fire_at.isoformat()}",
                )
            case h.TaskCompleted() | h.SubOrchestrationInstanceCompleted():
                item = open_items.pop(event.task_scheduled_id, None)
                if item is not None:
                    bars.append(_close(item, event.timestamp, "completed"))
            case h.TaskFailed() | h.SubOrchestrationInstanceFailed():
                item = open_items.pop(event.task_scheduled_id, None)
                if item is not None:
                    failure = event.failure_details
                    detail = f"{item.detail} {failure.error_type}: {failure.message}"
                    bars.append(_close(item, event.timestamp, "failed", detail))
            case h.TimerFired():
                item = open_items.pop(event.timer_id, None)
                if item is not None:
                    bars.append(_close(item, event.timestamp, "completed"))
            case h.EventRaised():
                begin = min(previous_step_end, event.timestamp)
                bars.append(
                    Bar(
                        "event",
                        f"event {event.name}",
                        begin,
                        event.timestamp,
                        "completed",
                        "waited from the previous step until the event arrived",
                    )
                )
            case h.EventSent():
                bars.append(
                    Bar(
                        "mark",
                        f"sent {event.name}",
                        event.timestamp,
                        event.timestamp,
                        "info",
                        f"to {event.instance_id}",
                    )
                )
            case h.ExecutionSuspended():
                suspended_at = event.timestamp
            case h.ExecutionResumed():
                if suspended_at is not None:
                    bars.append(
                        Bar(
                            "suspended",
                            "suspended",
                            suspended_at,
                            event.timestamp,
                            "completed",
                            event.reason or "",
                        )
                    )
                    suspended_at = None
            case h.ExecutionTerminated():
                bars.append(
                    Bar("mark", "terminate requested", event.timestamp, event.timestamp, "info")
                )
            case h.ExecutionRewound():
                bars.append(
                    Bar(
                        "mark",
                        "rewound",
                        event.timestamp,
                        event.timestamp,
                        "info",
                        event.reason or "run again from the failed step",
                    )
                )
            case h.ExecutionCompleted() | h.ContinueAsNew():
                finished = event.timestamp
    for item in open_items.values():
        if finished is not None:
            never = "never fired" if item.kind == "timer" else "never finished"
            bars.append(_close(item, finished, "cancelled", f"{item.detail} ({never})"))
        else:
            bars.append(
                Bar(
                    item.kind,
                    item.label,
                    item.start,
                    None,
                    "running",
                    item.detail,
                    item.instance_id,
                    item.group,
                    item.attempt,
                )
            )
    if suspended_at is not None:
        bars.append(Bar("suspended", "suspended", suspended_at, finished, "waiting"))
    elif finished is None and not open_items and status is OrchestrationStatus.RUNNING:
        bars.append(
            Bar(
                "waiting",
                "waiting",
                last_step_end,
                None,
                "waiting",
                "nothing outstanding: waiting for an external event (or for a worker)",
            )
        )
    bars.extend(
        _lost_worker(takeover, events)
        for takeover in takeovers
        if takeover.execution_id in (None, started.execution_id)
    )
    bars.sort(key=lambda b: b.start)
    outcome = _outcome(status, finished)
    own = Bar(
        "orchestration",
        f"orchestration {started.name}",
        started.timestamp,
        finished,
        outcome,
        started.instance_id,
    )
    return [own, *bars]


def _lost_worker(takeover: LeaseTakeover, events: Sequence[h.HistoryEvent]) -> Bar:
    """The gap a lost worker left: from the last step recorded before its lease ran out (when
    it was last seen making progress) until another worker took the instance over."""
    expired = takeover.lease_expired_at
    seen = [e.timestamp for e in events if e.timestamp <= expired]
    owner = takeover.previous_owner or "unknown worker"
    if takeover.taken_by is None:
        how = f"lease of {owner} broken at {expired.isoformat()} (worker known gone)"
    else:
        how = (
            f"lease of {owner} ran out unreleased at {expired.isoformat()}; "
            f"taken over by {takeover.taken_by} at {takeover.taken_at.isoformat()}"
        )
    return Bar(
        "lost",
        "worker lost",
        max(seen, default=expired),
        max(takeover.taken_at, expired),
        "lost",
        how,
    )


def _outcome(status: OrchestrationStatus | None, finished: datetime | None) -> str:
    if status is OrchestrationStatus.FAILED:
        return "failed"
    if status is OrchestrationStatus.TERMINATED:
        return "cancelled"
    if finished is not None:
        return "completed"
    return "running"


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_LENGTH else label[: _LABEL_LENGTH - 1] + "…"


def _nice_step(span: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten seconds) giving 3 to 8 ticks."""
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 0.001
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def layout(bars: Sequence[Bar], now: datetime, *, width: int = 960) -> Chart | None:
    """Place bars on a shared time axis (None if there is nothing to draw)."""
    if not bars:
        return None
    shown = list(bars[:MAX_BARS])
    start = min(b.start for b in shown)
    end = max(max(b.end or now for b in shown), start)
    span = max((end - start).total_seconds(), 0.001)
    plot_left, plot_right = 250, width - 90
    plot = plot_right - plot_left
    row_height, top = 22, 28
    row_of: dict[str, int] = {}
    last_in_group: dict[str, int] = {}
    placed: list[tuple[Bar, int]] = []
    for bar in shown:
        if bar.group is not None and bar.group in row_of:
            index = row_of[bar.group]
        else:
            index = len(row_of) + sum(1 for b, _ in placed if b.group is None)
            if bar.group is not None:
                row_of[bar.group] = index
        if bar.group is not None:
            last_in_group[bar.group] = len(placed)
        placed.append((bar, index))
    tries = {g: sum(1 for b, _ in placed if b.group == g) for g in row_of}
    rows = []
    seen_groups: set[str] = set()
    for position, (bar, index) in enumerate(placed):
        bar_end = bar.end or now
        x = plot_left + (bar.start - start).total_seconds() / span * plot
        w = max((bar_end - bar.start).total_seconds() / span * plot, 2.0)
        x = min(x, plot_right - 2.0)
        w = min(w, plot_right - x)
        duration = format_duration(bar_end - bar.start)
        if bar.end is None:
            duration += " so far"
        label = bar.label
        first = last = True
        if bar.group is not None:
            first = bar.group not in seen_groups
            seen_groups.add(bar.group)
            last = last_in_group[bar.group] == position
            if tries[bar.group] > 1:
                label = f"{bar.label} ({tries[bar.group]} tries)"
        rows.append(
            Row(
                bar,
                top + index * row_height,
                round(x, 2),
                round(w, 2),
                duration,
                _short(label),
                first,
                last,
            )
        )
    step = _nice_step(span)
    ticks = [
        Tick(
            round(plot_left + k * step / span * plot, 2),
            "+" + format_duration(timedelta(seconds=k * step)).replace(".0 s", " s"),
        )
        for k in range(int(span / step) + 1)
    ]
    row_count = max((index for _, index in placed), default=-1) + 1
    return Chart(
        rows=rows,
        ticks=ticks,
        width=width,
        height=top + row_count * row_height + 8,
        plot_left=plot_left,
        plot_right=plot_right,
        hidden=len(bars) - len(shown),
        start=start,
        end=end,
    )
