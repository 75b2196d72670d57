"""The eager path: an activity's result goes straight into its instance's next episode.

A worker that ran an activity often has the instance in its cache, waiting for that result
alone. Then it runs the next episode on the result at once, from the cached cursor, and
commits the activity's completion with the episode in one transaction, fenced by
:class:`InstanceUnchanged`: the store accepts it only while nobody holds the instance, its
history is still the one the cursor saw and no other message waits. Otherwise (or when the
instance is not cached, or awaits more than this result) the result is stored as a message
and a fetch delivers it as usual.

A worker at its limit keeps the chain going: the result waits for an orchestration slot
rather than take the longer way through the store, and the finished activity's slot goes to
the next activity the episode schedules.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime

from duratask._engine import OrchestrationExecutor
from duratask.backends.base import (
    ActivityWorkItem,
    InstanceUnchanged,
    OrchestrationMessage,
    OrchestrationService,
    OrchestrationWorkItem,
)
from duratask.errors import InstanceBusyError, LeaseLostError
from duratask.tracing._episode import TRACING
from duratask.worker._code_runner import EpisodeOverBudget, OrchestrationCodeRunner
from duratask.worker._dispatcher import Dispatcher, Permit
from duratask.worker._episode import Defer, EpisodeInput, plan_episode
from duratask.worker._episodes import EpisodeCommitter
from duratask.worker._orchestration_cache import OrchestrationCache

_LOG = logging.getLogger("duratask.worker")


class ActivityResults:
    """Hands each finished activity's result to its instance, eagerly when it can."""

    def __init__(
        self,
        store: OrchestrationService,
        cache: OrchestrationCache,
        executor: OrchestrationExecutor,
        episodes: EpisodeCommitter,
        orchestrations: Dispatcher[OrchestrationWorkItem],
        clock: Callable[[], datetime],
        code: OrchestrationCodeRunner,
    ) -> None:
        self._store = store
        self._code = code
        self._cache = cache
        self._executor = executor
        self._episodes = episodes
        self._orchestrations = orchestrations
        self._clock = clock

    async def deliver(
        self,
        work_item: ActivityWorkItem,
        result: OrchestrationMessage,
        running: Permit[ActivityWorkItem] | None,
    ) -> None:
        """Commit the activity's result: with the instance's next episode when it can run
        here, else as a message. :class:`LeaseLostError` if the activity's lease was lost."""
        request = work_item.request
        if self._cache.awaits_only(request.instance_id, request.task_id):
            # Waiting is safe: an episode never waits for an activity slot. Storing the
            # result instead would cost two more store calls (a lease and a commit).
            slot = await self._orchestrations.reserve()
            if slot is not None:
                try:  # the slot counts against the orchestration limit while the episode runs
                    if await self._continue_here(work_item, result, running):
                        return
                finally:
                    slot.release()
        await self._store.complete_activity_work_item(work_item, result)
        self._orchestrations.wake()

    async def _continue_here(
        self,
        work_item: ActivityWorkItem,
        result: OrchestrationMessage,
        running: Permit[ActivityWorkItem] | None,
    ) -> bool:
        """Run the cached instance's next episode on the result and commit both together;
        False (nothing committed) when the instance is not cached, busy or changed."""
        instance_id = work_item.request.instance_id
        cached = self._cache.take_current(instance_id)
        if cached is None:
            return False
        mark, cursor, state = cached
        source = EpisodeInput(instance_id, state, [], mark.length, result=result)
        try:
            planned, live_cursor = await self._code.run(
                functools.partial(
                    plan_episode,
                    source,
                    self._executor,
                    self._clock(),
                    cursor=cursor,
                    observer=TRACING,
                )
            )
            if isinstance(planned, Defer):
                return False
            fence = InstanceUnchanged(mark.execution_id, mark.length)
            commit = await self._episodes.commit(
                fence, planned, finished=work_item, running=running
            )
        except InstanceBusyError:
            return False
        except EpisodeOverBudget:
            _LOG.warning(
                "instance %r: its orchestration code ran past the episode budget on an "
                "activity result; the result is stored for a later episode",
                instance_id,
                extra={"event": "duratask.orchestration.over_budget", "instance_id": instance_id},
            )
            return False
        except LeaseLostError:
            raise
        except Exception:
            _LOG.exception(
                "instance %r: running its episode on an activity result failed; the result "
                "is stored for a later episode",
                instance_id,
                extra={
                    "event": "duratask.orchestration.episode_failed",
                    "instance_id": instance_id,
                },
            )
            return False
        self._episodes.after(instance_id, mark.length, commit, live_cursor)
        return True
