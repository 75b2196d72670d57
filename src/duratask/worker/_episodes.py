"""Committing an episode the worker planned, and what follows the commit.

Both ways an episode runs go through here: on a work item the worker leased (fenced by
:class:`LeaseHeld`), and on an activity's result with the worker's own copy of the instance
(fenced by :class:`InstanceUnchanged`; see ``_eager``). The activities an episode schedules
that this worker has free slots for are leased to it in the same transaction and start at
once, with no fetch round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from duratask._engine import OrchestrationCursor
from duratask.backends.base import (
    ActivityWorkItem,
    EagerLease,
    EpisodeFence,
    HistoryMark,
    OrchestrationCommit,
    OrchestrationService,
    OrchestrationWorkItem,
    WorkFilter,
)
from duratask.history import TimerFired
from duratask.tracing._logs import log_commit
from duratask.worker._dispatcher import Dispatcher, Permit
from duratask.worker._orchestration_cache import OrchestrationCache


class EpisodeCommitter:
    """Commits episodes for one worker and keeps what follows in step: the cache of live
    orchestrations, the commit log, the wake-ups of the worker's own dispatchers."""

    def __init__(
        self,
        store: OrchestrationService,
        cache: OrchestrationCache,
        orchestrations: Dispatcher[OrchestrationWorkItem],
        activities: Dispatcher[ActivityWorkItem],
        *,
        owner: str,
        lease: timedelta,
        wake_at: Callable[[datetime, Dispatcher[OrchestrationWorkItem]], None],
        work_filter: Callable[[], WorkFilter | None] = lambda: None,
    ) -> None:
        self._store = store
        # What this worker may lease (None: anything): an eager lease takes nothing else.
        self._work_filter = work_filter
        self._cache = cache
        self._orchestrations = orchestrations
        self._activities = activities
        self._owner = owner
        self._lease = lease
        self._wake_at = wake_at

    async def commit(
        self,
        fence: EpisodeFence,
        planned: OrchestrationCommit,
        *,
        finished: ActivityWorkItem | None = None,
        running: Permit[ActivityWorkItem] | None = None,
    ) -> OrchestrationCommit:
        """Commit ``planned`` under ``fence`` (see the seam's ``commit_episode``); returns the
        commit as made. ``running`` is the slot of the activity whose result the episode
        consumed (``finished``): it goes to the first activity the episode schedules."""
        permits: list[Permit[ActivityWorkItem]] = []
        wanted = len(planned.activities)
        if wanted and (runs := self._work_filter()) is not None:
            # The store leases the first activities: stop at the first this worker cannot run.
            wanted = next(
                (
                    i
                    for i, a in enumerate(planned.activities)
                    if not runs.serves_queue(a.task_queue)
                    or (runs.activities is not None and a.name not in runs.activities)
                ),
                wanted,
            )
        if wanted:
            if running is not None:
                permits.append(running.hand_over())
            while len(permits) < wanted:
                permit = self._activities.try_reserve()
                if permit is None:
                    break
                permits.append(permit)
        commit = planned
        if finished is not None or permits:
            eager = EagerLease(self._owner, self._lease, len(permits)) if permits else None
            commit = _with_lease(planned, eager, finished)
        try:
            leased = await self._store.commit_episode(fence, commit)
        except BaseException:
            for permit in permits:
                permit.release()
            raise
        for permit, item in zip(permits, leased, strict=False):
            permit.submit(item)
        for permit in permits[len(leased) :]:
            permit.release()
        return commit

    def after(
        self,
        instance_id: str,
        history_length: int,
        commit: OrchestrationCommit,
        live_cursor: OrchestrationCursor | None,
    ) -> None:
        """After an episode committed on a history of ``history_length`` events: keep its
        cursor, log it, wake what it made ready."""
        execution_id = commit.state.execution_id
        if live_cursor is not None and execution_id is not None:
            live_cursor.committed()
            length = len(commit.new_events)
            if not commit.reset_history:
                length += history_length
            self._cache.put(
                instance_id, HistoryMark(execution_id, length), live_cursor, commit.state
            )
        log_commit(instance_id, commit)
        eager = commit.eager_activities.max_items if commit.eager_activities else 0
        if len(commit.activities) > eager:
            self._activities.wake()
        for message in commit.messages:
            if isinstance(message.event, TimerFired) and message.visible_at is not None:
                self._wake_at(message.visible_at, self._orchestrations)
            else:
                self._orchestrations.wake()


def _with_lease(
    commit: OrchestrationCommit, eager: EagerLease | None, finished: ActivityWorkItem | None
) -> OrchestrationCommit:
    """``commit`` with these eager activities and finished activity: what
    ``dataclasses.replace`` would make, built directly (this runs at every step, and
    replace costs three times as much; a test keeps the two equal)."""
    return OrchestrationCommit(
        state=commit.state,
        new_events=commit.new_events,
        consumed_message_ids=commit.consumed_message_ids,
        activities=commit.activities,
        messages=commit.messages,
        reset_history=commit.reset_history,
        eager_activities=eager,
        finished_activity=finished,
        entity_messages=commit.entity_messages,
        continued_executions=commit.continued_executions,
    )
