"""A clock that moves only when told: the time source of a time-skipping test hub."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


class VirtualClock:
    """A callable clock (``clock()`` is the current time, aware UTC) that stands still until
    :meth:`advance` or :meth:`advance_to` moves it forward. It never goes back.

    Pass it as ``clock=`` to a worker, a client and a memory store to make them share one
    virtual time; :class:`~duratask.testing.TimeSkippingHub` does that for you.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware_utc(start, "start") if start is not None else datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        """The current virtual time."""
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` (not negative); return the new time."""
        if delta < timedelta(0):
            raise ValueError(f"the clock cannot go back: advance by {delta} is negative")
        with self._lock:
            self._now += delta
            return self._now

    def advance_to(self, when: datetime) -> datetime:
        """Move forward to ``when`` (aware, not earlier than now); return the new time."""
        target = _aware_utc(when, "when")
        with self._lock:
            if target < self._now:
                raise ValueError(
                    f"the clock cannot go back: {target.isoformat()} is before the current "
                    f"virtual time {self._now.isoformat()}"
                )
            self._now = target
            return self._now

    def __repr__(self) -> str:
        return f"VirtualClock({self._now.isoformat()})"
