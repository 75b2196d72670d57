"""A schedule's slot times: the cron expressions (read with cronsim in a zoneinfo time zone)
and the intervals of a :class:`~duratask.schedules.ScheduleSpec`, merged, within its start
and end.

cronsim follows Debian cron across daylight saving changes for five-field expressions at a
fixed time of day (a time skipped by the change runs once, right after it; a time repeated
by it runs once); expressions that fire every minute or hour follow real elapsed time.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from duratask.errors import InvalidScheduleError

if TYPE_CHECKING:
    from duratask.schedules import Interval, ScheduleSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidScheduleError(
            f"{what} must be timezone-aware (e.g. datetime(..., tzinfo=UTC)), got {value!r}"
        )
    return value.astimezone(UTC)


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``, or :class:`InvalidScheduleError`."""
    if not isinstance(name, str) or not name:
        raise InvalidScheduleError(f"time_zone must be an IANA zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def _check_cron(expression: str, tz: ZoneInfo) -> None:
    if not isinstance(expression, str):
        raise InvalidScheduleError(f"a cron expression must be a str, got {expression!r}")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: it has {len(fields)} fields, expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (seconds first)"
        )
    try:
        next(CronSim(expression, datetime.now(tz)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidScheduleError(
            f"invalid cron expression {expression!r}: {exc or 'it never fires'} (expected 5 "
            "fields, minute hour day-of-month month day-of-week, or 6 with seconds first)"
        ) from None


def _check_interval(interval: Interval) -> None:
    from duratask.schedules import Interval

    if not isinstance(interval, Interval):
        raise InvalidScheduleError(f"intervals must be Interval objects, got {interval!r}")
    if not isinstance(interval.every, timedelta) or interval.every < _SECOND:
        raise InvalidScheduleError(
            f"an interval must be at least one second long, got every={interval.every!r}"
        )
    offset = interval.offset
    if not isinstance(offset, timedelta) or not timedelta(0) <= offset < interval.every:
        raise InvalidScheduleError(
            f"an interval's offset must be at least 0 and less than its period "
            f"({interval.every}), got {offset!r}"
        )


def normalized_spec_fields(spec: ScheduleSpec) -> tuple[tuple[str, ...], tuple[Interval, ...]]:
    """Check ``spec``; its cron expressions and intervals as tuples."""
    cron = (spec.cron,) if isinstance(spec.cron, str) else tuple(spec.cron)
    intervals = tuple(spec.intervals)
    if not cron and not intervals:
        raise InvalidScheduleError("a schedule needs at least one cron expression or interval")
    tz = zone(spec.time_zone)
    for expression in cron:
        _check_cron(expression, tz)
    for interval in intervals:
        _check_interval(interval)
    start = _aware(spec.start_at, "start_at")
    end = _aware(spec.end_at, "end_at")
    if start is not None and end is not None and end < start:
        raise InvalidScheduleError(
            f"end_at ({end.isoformat()}) is before start_at ({start.isoformat()})"
        )
    if not isinstance(spec.jitter, timedelta) or spec.jitter < timedelta(0):
        raise InvalidScheduleError(f"jitter must be a timedelta of 0 or more, got {spec.jitter!r}")
    return cron, intervals


def _micros(delta: timedelta) -> int:
    return delta // _MICRO


class SlotTimes:
    """The slot times of one spec (aware UTC), each at most once."""

    def __init__(self, spec: ScheduleSpec) -> None:
        self._zone = zone(spec.time_zone)
        self._cron: Sequence[str] = tuple(spec.cron)
        self._intervals: Sequence[Interval] = tuple(spec.intervals)
        self._start = _aware(spec.start_at, "start_at")
        self._end = _aware(spec.end_at, "end_at")

    def _raw_after(self, t: datetime) -> datetime | None:
        found: list[datetime] = []
        local = t.astimezone(self._zone)
        for expression in self._cron:
            try:
                found.append(next(CronSim(expression, local)).astimezone(UTC))
            except StopIteration:  # pragma: no cover - cronsim iterates forever
                pass
            except OverflowError:  # the next slot lies beyond the last representable time
                pass
        for interval in self._intervals:
            every, offset = _micros(interval.every), _micros(interval.offset)
            k = (_micros(t - _EPOCH) - offset) // every + 1
            with contextlib.suppress(OverflowError):  # beyond the last representable time
                found.append(_EPOCH + timedelta(microseconds=k * every + offset))
        return min(found, default=None)

    def _raw_at_or_before(self, t: datetime) -> datetime | None:
        found: list[datetime] = []
        # cronsim's reverse iteration starts strictly before its time, at whole seconds.
        local = (t + _SECOND).replace(microsecond=0).astimezone(self._zone)
        for expression in self._cron:
            try:
                candidate = next(CronSim(expression, local, reverse=True)).astimezone(UTC)
            except StopIteration:  # pragma: no cover
                continue
            if candidate > t:
                candidate = next(
                    CronSim(expression, candidate.astimezone(self._zone), reverse=True)
                ).astimezone(UTC)
            found.append(candidate)
        for interval in self._intervals:
            every, offset = _micros(interval.every), _micros(interval.offset)
            k = (_micros(t - _EPOCH) - offset) // every
            found.append(_EPOCH + timedelta(microseconds=k * every + offset))
        return max(found, default=None)

    def after(self, t: datetime) -> datetime | None:
        """The first slot strictly after ``t``, or None (past the end, or past the last time
        a datetime can hold: year 9999)."""
        if self._start is not None and t < self._start:
            t = self._start - _MICRO
        slot = self._raw_after(t)
        if slot is None or (self._end is not None and slot > self._end):
            return None
        return slot

    def at_or_before(self, t: datetime) -> datetime | None:
        """The last slot at or before ``t`` (and not after the end), or None."""
        if self._end is not None and t > self._end:
            t = self._end
        slot = self._raw_at_or_before(t)
        if slot is None or (self._start is not None and slot < self._start):
            return None
        return slot

    def between(self, first: datetime, last: datetime) -> Iterator[datetime]:
        """The slots in ``[first, last]``, in order."""
        slot = self.after(first - _MICRO)
        while slot is not None and slot <= last:
            yield slot
            slot = self.after(slot)


def jitter_delay(schedule_id: str, slot: datetime, jitter: timedelta) -> timedelta:
    """The delay of one slot: fixed by the schedule id and the slot, below ``jitter``."""
    span = _micros(jitter)
    if span <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}\x1f{slot.isoformat()}".encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)


def slot_text(slot: datetime) -> str:
    """A slot time as it appears in run ids and tags: ISO 8601 in UTC with a ``Z``."""
    text = slot.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def run_instance_id(schedule_id: str, slot: datetime) -> str:
    """The id of the run a schedule starts for ``slot``."""
    return f"{schedule_id}@{slot_text(slot)}"
