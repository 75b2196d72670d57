"""The orchestration cache: live cursors of recently active instances, kept between episodes.

A cached cursor lets the next episode feed the orchestration only its new events, so no
history is re-read or replayed (DTFx calls this extended sessions). An entry is trusted only
when the stored history is exactly what the cursor has seen: same execution, same length.
Within one execution the history only grows, and every history reset (continue-as-new,
restart) starts a new execution id, so (execution id, length) identifies it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

from duratask._engine import OrchestrationCursor
from duratask.backends.base import HistoryMark
from duratask.state import OrchestrationState

_Entry = tuple[HistoryMark, OrchestrationCursor, OrchestrationState | None]


class OrchestrationCache:
    """An LRU of cursors by instance id, bounded by instances and by cached history events."""

    def __init__(self, max_instances: int = 1000, max_events: int = 1_000_000) -> None:
        self.max_instances = max_instances
        self.max_events = max_events
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._marks: dict[str, HistoryMark] = {}
        self._marks_view = MappingProxyType(self._marks)
        self._events = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_instances > 0

    def marks(self) -> Mapping[str, HistoryMark]:
        """A live read-only view of what each cached cursor has seen (the store reads it to
        skip loading histories the worker already has)."""
        return self._marks_view

    def take(self, instance_id: str, mark: HistoryMark) -> OrchestrationCursor | None:
        """Remove and return the cursor if it is in step with ``mark``; None otherwise."""
        entry = self._entries.pop(instance_id, None)
        self._marks.pop(instance_id, None)
        if entry is None:
            self.misses += 1
            return None
        cached_mark, cursor, _ = entry
        self._events -= cached_mark.length
        if cached_mark != mark:
            self.misses += 1
            return None
        self.hits += 1
        return cursor

    def take_current(
        self, instance_id: str
    ) -> tuple[HistoryMark, OrchestrationCursor, OrchestrationState] | None:
        """Remove and return the entry with the instance row it committed last, to run its
        next episode without a lease (the store then checks the mark); None if not cached."""
        entry = self._entries.get(instance_id)
        if entry is None or entry[2] is None:
            return None
        self.evict(instance_id)
        self.hits += 1
        return entry[0], entry[1], entry[2]

    def put(
        self,
        instance_id: str,
        mark: HistoryMark,
        cursor: OrchestrationCursor,
        state: OrchestrationState | None = None,
    ) -> None:
        """Keep a cursor that is in step with ``mark`` (the history as just committed), with
        the instance row as committed (``state``) when known."""
        if not self.enabled:
            return
        self.evict(instance_id)
        self._entries[instance_id] = (mark, cursor, state)
        self._marks[instance_id] = mark
        self._events += mark.length
        while self._entries and (
            len(self._entries) > self.max_instances or self._events > self.max_events
        ):
            old_id, (old_mark, _, _) = self._entries.popitem(last=False)
            del self._marks[old_id]
            self._events -= old_mark.length

    def awaits_only(self, instance_id: str, task_id: int) -> bool:
        """Whether the cached instance waits for this task and nothing else, so its result
        alone lets it take the next step (a fan-in is better left to gather its results)."""
        entry = self._entries.get(instance_id)
        return entry is not None and entry[1].ctx.awaits_only(task_id)

    def evict(self, instance_id: str) -> None:
        entry = self._entries.pop(instance_id, None)
        self._marks.pop(instance_id, None)
        if entry is not None:
            self._events -= entry[0].length

    def __len__(self) -> int:
        return len(self._entries)
