"""Schedules: an orchestration started again and again, once per slot of a calendar.

A schedule lives in the task hub. Its :class:`ScheduleSpec` says when it fires (cron
expressions read in a time zone, fixed intervals, or both); each fire time is a *slot*. Every
slot that fires starts one ordinary orchestration instance whose id is the schedule id, ``@``
and the slot time in UTC (``nightly@2026-03-08T07:00:00Z``), so a slot runs at most once
whatever the number of workers and their crashes: the task hub refuses a second instance of
that id. The run carries the tags ``duratask.schedule`` and ``duratask.slot``.

Workers fire schedules (see :class:`~duratask.TaskHubWorker`); clients create and manage them
(:meth:`~duratask.AsyncTaskHubClient.create_schedule` and the methods after it).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from duratask.state import OrchestrationStatus

__all__ = [
    "CatchUp",
    "Interval",
    "Overlap",
    "ScheduleDescription",
    "ScheduleInfo",
    "ScheduleRun",
    "ScheduleSpec",
]

SCHEDULE_TAG = "duratask.schedule"
"""The tag naming the schedule that started a run."""
SLOT_TAG = "duratask.slot"
"""The tag holding the slot time (ISO 8601, UTC) a run was started for."""


class Overlap(enum.Enum):
    """What a slot does while the schedule's previous run is still running."""

    SKIP = "skip"
    """The slot is skipped (counted in ``skipped``)."""
    BUFFER_ONE = "buffer_one"
    """The slot waits and starts when the previous run ends; while one waits, further slots
    are skipped."""
    ALLOW_ALL = "allow_all"
    """The slot starts anyway: runs may overlap."""
    TERMINATE_PREVIOUS = "terminate_previous"
    """The previous run is terminated and the slot starts."""


class CatchUp(enum.Enum):
    """What happens to slots missed while no worker was firing (downtime, a long outage)."""

    WINDOW = "window"
    """Missed slots no older than the schedule's ``catch_up_window`` run, oldest first; older
    ones are skipped."""
    LATEST = "latest"
    """Only the most recent missed slot runs."""
    NONE = "none"
    """Missed slots are skipped: a slot runs only if a worker reaches it within a minute."""


@dataclass(frozen=True, slots=True)
class Interval:
    """Slots every ``every``, counted from the Unix epoch (UTC) plus ``offset``:
    ``Interval(timedelta(hours=1), offset=timedelta(minutes=5))`` fires at five past every
    hour.

    Attributes:
        every: The period (at least one second).
        offset: Where in the period the slot falls (0 <= offset < every).
    """

    every: timedelta
    offset: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a schedule fires: the union of its cron expressions and its intervals, between
    ``start_at`` and ``end_at``. Checked as it is built: an invalid one raises
    :class:`~duratask.errors.InvalidScheduleError`.

    Attributes:
        cron: Cron expressions (a string or several): five fields (minute hour day month
            weekday) or six (with seconds first), read in ``time_zone``. Across daylight
            saving changes a daily time that does not exist runs once, at the first valid time
            after the gap; one that exists twice runs once, at its first occurrence.
        intervals: Fixed intervals (:class:`Interval`), independent of time zones.
        time_zone: An IANA time zone name (``"Europe/Paris"``) for the cron expressions.
        start_at: No slot before this (timezone-aware).
        end_at: No slot after this (timezone-aware).
        jitter: Each slot starts up to this much later, by a delay fixed per slot (the
            same on every worker), to spread the load of many schedules.
    """

    cron: Sequence[str] | str = ()
    intervals: Sequence[Interval] = ()
    time_zone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        from duratask._schedule_times import normalized_spec_fields

        cron, intervals = normalized_spec_fields(self)
        object.__setattr__(self, "cron", cron)
        object.__setattr__(self, "intervals", intervals)


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """One run a schedule started (or a slot it skipped).

    Attributes:
        instance_id: The run's orchestration instance id.
        slot: The slot time it was started for (the trigger time for a manual run).
        kind: ``"scheduled"``, ``"triggered"``, ``"backfill"`` or ``"skipped"``.
        status: The run's status now (None: it no longer exists, or the slot was skipped).
    """

    instance_id: str
    slot: datetime
    kind: str
    status: OrchestrationStatus | None = None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as stored: what it starts, when, its policies and where it stands.

    Attributes:
        schedule_id: The schedule's id.
        orchestration: The name of the orchestration each run starts.
        version: The orchestration version asked for, if any.
        input: The input each run gets (decoded).
        spec: When it fires.
        overlap: What a slot does while the previous run still runs.
        catch_up: What happens to slots missed while no worker fired.
        catch_up_window: How old a missed slot may be and still run (``CatchUp.WINDOW``).
        run_limit: How many scheduled runs it starts at most (None: no limit).
        paused: Whether it is paused (slots reached while paused are skipped).
        note: Why it was paused or resumed, as the caller said.
        runs: How many runs its slots started so far (manual and backfilled runs not
            counted).
        skipped: How many slots its overlap policy skipped (slots missed while no worker
            fired and not caught up are not counted).
        next_fire_at: When its next slot is due (None: paused, or no slot left).
        created_at: When it was created.
        updated_at: When it last changed.
    """

    schedule_id: str
    orchestration: str
    version: str | None
    input: Any
    spec: ScheduleSpec
    overlap: Overlap
    catch_up: CatchUp
    catch_up_window: timedelta
    run_limit: int | None
    paused: bool
    note: str | None
    runs: int
    skipped: int
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """Whether no slot is left (the end time passed or the run limit was reached)."""
        return not self.paused and self.next_fire_at is None


@dataclass(frozen=True, slots=True)
class ScheduleDescription:
    """A schedule with its recent runs (newest first, with their status now) and its next fire
    times.

    Attributes:
        info: The schedule as stored.
        recent_runs: Its most recent runs and skipped slots, newest first.
        next_fire_times: The next slot times (with jitter: when they start), soonest first.
    """

    info: ScheduleInfo
    recent_runs: list[ScheduleRun] = field(default_factory=list)
    next_fire_times: list[datetime] = field(default_factory=list)
