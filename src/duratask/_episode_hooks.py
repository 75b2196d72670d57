"""How something outside the worker observes the executions an episode runs (tracing).

The episode planner calls :meth:`EpisodeObserver.execution` around each execution it runs
(one per episode, or several when an execution continues as new at once); the observer may
give the start of a new execution a value of its own (a trace context) and stamp what the
execution decided before it is committed. Observers see values, never the planner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from duratask.backends.base import OrchestrationCommit
from duratask.history import ExecutionStarted, HistoryEvent


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """One execution as an episode runs it.

    ``new_start`` is its start when this episode starts it (None: it started earlier, and
    ``started`` is the stored start). ``history_length`` and ``replayed`` tell how much
    history it continues and how many events were replayed to rebuild it (0 when a live
    copy was continued). ``events`` are the new events it applies.
    """

    instance_id: str
    started: ExecutionStarted
    new_start: ExecutionStarted | None
    events: Sequence[HistoryEvent]
    history_length: int
    replayed: int
    now: datetime


class ExecutionObservation(Protocol):
    """What an observer may change of one execution while it is observed."""

    def start(self, start: ExecutionStarted) -> ExecutionStarted:
        """The start to record for a new execution (``start`` itself, or a copy)."""
        ...

    def finish(self, commit: OrchestrationCommit) -> OrchestrationCommit:
        """The commit to make of what the execution decided (``commit``, or a copy)."""
        ...


class EpisodeObserver(Protocol):
    """Sees every execution an episode runs."""

    @property
    def watching(self) -> bool:
        """Whether it observes anything now (the planner skips it otherwise)."""
        ...

    def execution(self, info: ExecutionInfo) -> AbstractContextManager[ExecutionObservation]:
        """Observe one execution: entered before it runs, left after its commit is made."""
        ...


class _Unchanged:
    def start(self, start: ExecutionStarted) -> ExecutionStarted:
        return start

    def finish(self, commit: OrchestrationCommit) -> OrchestrationCommit:
        return commit


UNCHANGED = _Unchanged()


class NoObserver:
    """Observes nothing."""

    watching = False

    @contextlib.contextmanager
    def execution(self, info: ExecutionInfo) -> Iterator[ExecutionObservation]:
        yield UNCHANGED


NO_OBSERVER = NoObserver()
