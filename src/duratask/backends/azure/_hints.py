"""Hints in the control and work-item queues: queued after a write, read and deleted by
workers, never trusted (a worker reads the rows a hint points at); when to read a queue;
and when to sweep the rows instead, for work whose hint was lost or is not due yet.

A queue is read at once when this process queued a hint to it since the store object last
read it (a client or worker of the same process, on the same hub, made the work); otherwise
it is read again only after an idle interval that doubles while the queue holds nothing
but this process's own hints, from ``_IDLE_FIRST`` to ``_IDLE_MAX`` seconds, and drops back
once a read finds hints other processes queued (or a full read). Hints queued by other
processes are then seen within ``_IDLE_MAX`` seconds, and the sweep of the rows (every
``_SWEEP_EVERY`` seconds) finds their work even sooner or when a hint is lost: polling an
idle hub costs a few requests a second, not one per fetch.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import datetime
from typing import Any

from duratask.backends._wakeups import ACTIVITY, ORCHESTRATION
from duratask.backends.azure._core import StoreCore
from duratask.backends.azure._rows import (
    _HINT_HIDDEN,
    _LOG,
    _MAX_HINT_DELAY,
    _SWEEP_EVERY,
)

_HINTS_READ = 32  # hints one read takes at most (the queue service's limit)
_IDLE_FIRST = 0.05  # seconds before an empty queue is read again
_IDLE_MAX = 2.0  # seconds between two reads of a queue that stays empty, at most

# Undelayed hints this process queued, by hub and queue: how many so far.
_QUEUED: Counter[tuple[str, str]] = Counter()


class HintStore(StoreCore):
    """Hints in the queues, when to read a queue, and when to sweep the rows."""

    async def _hint(self, queue: str, body: str, delay: float = 0.0) -> None:
        """Queue a hint; a hint lost is found by the sweep, so failures are only logged."""
        if not self._wall_clock:
            return
        hidden = max(0, min(math.ceil(delay), _MAX_HINT_DELAY))
        try:
            await (
                self._c()
                .queues[queue]
                .send_message(body, visibility_timeout=hidden, time_to_live=-1)
            )
        except Exception as exc:
            _LOG.debug("hint to %s not queued: %s", queue, exc)
            return
        if not hidden:
            _QUEUED[(self._hub_key, queue)] += 1
            # Wake this process's workers now that the hint is there to read (the wake-up
            # of the write itself may have come before it).
            self._changed([ACTIVITY if queue == self._workitems_name else ORCHESTRATION])

    def _hinted_here(self, queue: str) -> bool:
        """Whether this process queued a hint to ``queue`` since this store object last
        read it."""
        return _QUEUED[(self._hub_key, queue)] != self._queue_seen.get(queue, 0)

    def _queue_due(self, queue: str) -> bool:
        """Whether to read ``queue`` now (see the module docstring)."""
        return self._hinted_here(queue) or time.monotonic() >= self._queue_next.get(queue, 0.0)

    def _sweep_due(self, kind: str) -> bool:
        """Whether to read the rows for work of ``kind`` now: at every poll on a test clock,
        else at most every ``_SWEEP_EVERY`` seconds (hints bring work in between)."""
        if not self._wall_clock:
            return True
        now = time.monotonic()
        soonest = self._soonest.get(kind)
        if soonest is not None and soonest <= self._now():
            del self._soonest[kind]
        elif now < self._next_sweep.get(kind, 0.0):
            return False
        self._next_sweep[kind] = now + _SWEEP_EVERY
        return True

    def _held_back(self, kind: str, due: datetime) -> None:
        """Note work of ``kind`` due later (see ``_soonest``)."""
        soonest = self._soonest.get(kind)
        if soonest is None or due < soonest:
            self._soonest[kind] = due

    async def _receive_hints(self, queue: str) -> list[tuple[str, Any, dict[str, Any]]]:
        """Up to ``_HINTS_READ`` hints of a queue, hidden for a while from other workers."""
        if not self._wall_clock:
            return []
        queued = _QUEUED[(self._hub_key, queue)]
        hints: list[tuple[str, Any, dict[str, Any]]] = []
        try:
            client = self._c().queues[queue]
            pages = client.receive_messages(
                messages_per_page=_HINTS_READ, visibility_timeout=_HINT_HIDDEN
            ).by_page()
            async for page in pages:
                hints = [(queue, m, json.loads(m.content)) async for m in page]
                break
        except Exception as exc:
            _LOG.debug("hints of %s not read: %s", queue, exc)
            queued = self._queue_seen.get(queue, 0)  # this process's hints: still unread
        own = queued - self._queue_seen.get(queue, 0)
        self._queue_seen[queue] = queued
        if len(hints) == _HINTS_READ:  # there may be more: read again at once
            self._queue_idle.pop(queue, None)
            self._queue_next.pop(queue, None)
        elif len(hints) > own:  # other processes hint this queue: look again soon
            self._queue_idle[queue] = _IDLE_FIRST
            self._queue_next[queue] = time.monotonic() + _IDLE_FIRST
        else:  # empty, or only this process's hints (it reads them as it queues them)
            idle = min(max(self._queue_idle.get(queue, 0.0) * 2, _IDLE_FIRST), _IDLE_MAX)
            self._queue_idle[queue] = idle
            self._queue_next[queue] = time.monotonic() + idle
        return hints

    async def _drop_hint(self, hint: tuple[str, Any, dict[str, Any]]) -> None:
        try:
            await self._c().queues[hint[0]].delete_message(hint[1])
        except Exception as exc:
            _LOG.debug("hint of %s not deleted: %s", hint[0], exc)
