"""Trace contexts of activities this process scheduled, so running one needs no history read.

An activity work item does not carry the trace context of the span that scheduled it; that is
in the ``TaskScheduled`` event of the instance's history. The episode that schedules an
activity remembers the context here (bounded, oldest forgotten first); an activity run by
another process, or after this process forgot it, reads it from the history instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

_Key = tuple[str, str, int]


class ScheduledContexts:
    """A bounded, thread-safe map (instance id, execution id, task id) -> trace context."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[_Key, dict[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(
        self, instance_id: str, execution_id: str, task_id: int, carrier: dict[str, str]
    ) -> None:
        with self._lock:
            self._items[(instance_id, execution_id, task_id)] = carrier
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def take(self, instance_id: str, execution_id: str, task_id: int) -> dict[str, str] | None:
        with self._lock:
            return self._items.pop((instance_id, execution_id, task_id), None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


SCHEDULED = ScheduledContexts(10_000)
