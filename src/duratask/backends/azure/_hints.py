"""Hints in the control and work-item queues: queued after a write, read and deleted by
workers, never trusted (a worker reads the rows a hint points at); and when to sweep the
rows instead, for work whose hint was lost or is not due yet."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any

from duratask.backends.azure._core import StoreCore
from duratask.backends.azure._rows import (
    _HINT_HIDDEN,
    _LOG,
    _MAX_HINT_DELAY,
    _SWEEP_EVERY,
)


class HintStore(StoreCore):
    """Hints in the queues, and when to sweep the rows."""

    async def _hint(self, queue: str, body: str, delay: float = 0.0) -> None:
        """Queue a hint; a hint lost is found by the sweep, so failures are only logged."""
        if not self._wall_clock:
            return
        try:
            await (
                self._c()
                .queues[queue]
                .send_message(
                    body,
                    visibility_timeout=max(0, min(math.ceil(delay), _MAX_HINT_DELAY)),
                    time_to_live=-1,
                )
            )
        except Exception as exc:
            _LOG.debug("hint to %s not queued: %s", queue, exc)

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
        """Up to 32 hints of a queue, hidden for a while from other workers."""
        if not self._wall_clock:
            return []
        try:
            client = self._c().queues[queue]
            pages = client.receive_messages(
                messages_per_page=32, visibility_timeout=_HINT_HIDDEN
            ).by_page()
            async for page in pages:
                return [(queue, m, json.loads(m.content)) async for m in page]
        except Exception as exc:
            _LOG.debug("hints of %s not read: %s", queue, exc)
        return []

    async def _drop_hint(self, hint: tuple[str, Any, dict[str, Any]]) -> None:
        try:
            await self._c().queues[hint[0]].delete_message(hint[1])
        except Exception as exc:
            _LOG.debug("hint of %s not deleted: %s", hint[0], exc)
