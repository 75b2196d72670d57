"""What this server last committed for each running instance, so that the next episode an
activity's result starts needs no store read.

After an episode commits, the server knows the instance's row and history exactly: the row
it wrote (or the one it leased, when the commit left the row alone) and the history it
read plus the events it appended. The straight-through path plans the next episode on that
and commits it fenced on the instance being unchanged (same execution, same history length,
no lease, no message waiting), so an entry that went stale (another server or worker moved
the instance on, a client sent it something) costs a refused commit, never a wrong one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from durabletask.internal import orchestrator_service_pb2 as pb

from duratask import history as h
from duratask.backends.base import OrchestrationCommit
from duratask.serve.protocol import event_to_pb
from duratask.state import OrchestrationState, OrchestrationStatus


@dataclass(slots=True)
class KnownHistory:
    """An instance's stored row and history, and the protocol form of a prefix of it."""

    state: OrchestrationState
    history: list[h.HistoryEvent]
    converted: list[pb.HistoryEvent]


class KnownHistories:
    """An LRU of :class:`KnownHistory` by instance id, bounded by instances and by events."""

    def __init__(self, max_instances: int = 1000, max_events: int = 200_000) -> None:
        self.max_instances = max_instances
        self.max_events = max_events
        self._entries: OrderedDict[str, KnownHistory] = OrderedDict()
        self._events = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, instance_id: str) -> KnownHistory | None:
        entry = self._entries.get(instance_id)
        if entry is not None:
            self._entries.move_to_end(instance_id)
        return entry

    def forget(self, instance_id: str) -> None:
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._events -= len(entry.history)

    def committed(
        self,
        state: OrchestrationState | None,
        history: list[h.HistoryEvent],
        history_length: int,
        commit: OrchestrationCommit,
    ) -> None:
        """Record what ``commit`` left stored, when the episode ran on ``state`` and the
        whole stored ``history``; an instance that ended, was reset or was given a partial
        history is forgotten."""
        instance_id = commit.state.instance_id
        after = commit.state if commit.changes_instance else state
        if (
            after is None
            or after.runtime_status is not OrchestrationStatus.RUNNING
            or commit.reset_history
            or len(history) != history_length
        ):
            self.forget(instance_id)
            return
        previous = self._entries.get(instance_id)
        converted = previous.converted if previous is not None else []
        if previous is None or previous.history is not history:
            converted = []
        self.forget(instance_id)
        entry = KnownHistory(after, [*history, *commit.new_events], converted)
        self._entries[instance_id] = entry
        self._events += len(entry.history)
        while self._entries and (
            len(self._entries) > self.max_instances or self._events > self.max_events
        ):
            _, evicted = self._entries.popitem(last=False)
            self._events -= len(evicted.history)

    def to_pb(self, instance_id: str, events: Sequence[h.HistoryEvent]) -> list[pb.HistoryEvent]:
        """``events`` in the protocol's form, reusing what was converted before for the
        part that is the known history's own events."""
        entry = self._entries.get(instance_id)
        if entry is None:
            return [event_to_pb(e) for e in events]
        known, converted = entry.history, entry.converted
        out: list[pb.HistoryEvent] = []
        for i, event in enumerate(events):
            if i < len(converted) and known[i] is event:
                out.append(converted[i])
                continue
            message = event_to_pb(event)
            if i == len(converted) and i < len(known) and known[i] is event:
                converted.append(message)
            out.append(message)
        return out


__all__ = ["KnownHistories", "KnownHistory"]
