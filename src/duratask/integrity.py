"""Integrity check of a task hub: does every instance's history make sense, and does its row
agree with it?

:func:`check_hub` reads every instance through the store protocol (``query_instances``,
``get_history``, ``get_instance``) or a client's public methods, and returns the problems it
finds; an empty list means the hub is consistent. :func:`check_instance` checks one
(row, history) pair without any I/O. The rules (:class:`IntegrityRule`):

- the history starts with ``ExecutionStarted`` naming the instance (after the
  ``OrchestratorStarted`` opening its episode), and holds only one;
- episodes are well formed: ``OrchestratorStarted`` and ``OrchestratorCompleted`` alternate,
  and every other event lies inside an episode;
- scheduling events (``TaskScheduled``, ``SubOrchestrationInstanceCreated``, ``TimerCreated``,
  ``EventSent``) carry distinct, non-negative ids;
- every result (``TaskCompleted``/``TaskFailed``, ``TimerFired``,
  ``SubOrchestrationInstanceCompleted``/``Failed``) answers an earlier scheduling event of its
  kind, and each id gets at most one result, except across a rewind: a failure delivered in
  the episode that ended the execution FAILED is forgotten by a later ``ExecutionRewound``,
  and that task may then get a new result;
- nothing follows the final ``ExecutionCompleted`` but the ``OrchestratorCompleted`` closing
  its episode, except that a FAILED execution may go on with an episode that opens with
  ``ExecutionRewound``;
- the row agrees with the history: its status is the one the events lead to (an empty
  history only for PENDING or CONTINUED_AS_NEW), its name, execution id, input, parent
  and task queue are those of ``ExecutionStarted``, and its output and failure details
  are those of the final ``ExecutionCompleted`` (none while the instance has not
  finished).

Entities (read through ``query_entities`` and ``get_entity``) follow two rules:

- an entity's stored state is JSON;
- an entity is locked only by an orchestration that can still release it: one that exists
  and has not finished, or whose release is still on its way (a message waits for the
  entity). A lock held by an instance that ended or is gone, with nothing waiting, would
  keep the entity from every other caller forever (``clean_entity_storage`` releases it).

A hub in use changes while it is read: an instance whose row changed while its history was
being read is read again, and skipped (counted in :attr:`IntegrityReport.instances_skipped`)
if it keeps changing or disappears; it is never reported as a problem for that.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from duratask import history as h
from duratask.backends import open_store
from duratask.backends.base import (
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    InstanceQuery,
    OrchestrationServiceClient,
    QueryPage,
)
from duratask.client import AsyncTaskHubClient, TaskHubClient
from duratask.errors import OrchestrationNotFoundError
from duratask.history import EventType, HistoryEvent
from duratask.state import OrchestrationState, OrchestrationStatus

__all__ = [
    "IntegrityProblem",
    "IntegrityReport",
    "IntegrityRule",
    "check_hub",
    "check_hub_sync",
    "check_instance",
    "scan_hub",
]

_PAGE_SIZE = 1000
_READ_ATTEMPTS = 3
_S = OrchestrationStatus


class IntegrityRule(StrEnum):
    """The rule a problem breaks (stable names, for scripts and filters)."""

    MISSING_START = "missing-start"
    START_NOT_FIRST = "start-not-first"
    START_NAMES_OTHER_INSTANCE = "start-names-other-instance"
    DUPLICATE_START = "duplicate-start"
    EPISODE_STRUCTURE = "episode-structure"
    BAD_SCHEDULING_ID = "bad-scheduling-id"
    DUPLICATE_SCHEDULING_ID = "duplicate-scheduling-id"
    ORPHAN_RESULT = "orphan-result"
    DUPLICATE_RESULT = "duplicate-result"
    EVENT_AFTER_COMPLETION = "event-after-completion"
    REWIND_WITHOUT_FAILURE = "rewind-without-failure"
    STATUS_MISMATCH = "status-mismatch"
    ROW_MISMATCH = "row-mismatch"
    OUTPUT_MISMATCH = "output-mismatch"
    ENTITY_STATE_NOT_JSON = "entity-state-not-json"
    ENTITY_LOCK_ORPHANED = "entity-lock-orphaned"


@dataclass(frozen=True, slots=True)
class IntegrityProblem:
    """One broken rule: which instance (or entity, as ``@name@key``), which rule, what is
    wrong, and at which event."""

    instance_id: str
    rule: IntegrityRule
    message: str
    # Position of the offending event in the instance's history (None: the row, or the
    # history as a whole).
    event_index: int | None = None
    event: HistoryEvent | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = ""
        if self.event_index is not None:
            kind = type(self.event).__name__ if self.event is not None else "event"
            where = f" (event #{self.event_index}, {kind})"
        return f"{self.instance_id}: [{self.rule}] {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the event as :meth:`HistoryEvent.to_dict`)."""
        return {
            "instance_id": self.instance_id,
            "rule": str(self.rule),
            "message": self.message,
            "event_index": self.event_index,
            "event": self.event.to_dict() if self.event is not None else None,
        }


@dataclass(slots=True)
class IntegrityReport:
    """What a scan found: the problems, and how many instances it checked or skipped."""

    problems: list[IntegrityProblem] = field(default_factory=list)
    instances_checked: int = 0
    # Instances that vanished (purged) or kept changing while they were read.
    instances_skipped: int = 0
    entities_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# -- one instance ------------------------------------------------------------------------------
_SCHEDULING: tuple[type[HistoryEvent], ...] = (
    h.TaskScheduled,
    h.SubOrchestrationInstanceCreated,
    h.TimerCreated,
    h.EventSent,
)
# Each kind of result and the kind of scheduling event it answers.
_ANSWERS: dict[type[HistoryEvent], type[HistoryEvent]] = {
    h.TaskCompleted: h.TaskScheduled,
    h.TaskFailed: h.TaskScheduled,
    h.TimerFired: h.TimerCreated,
    h.SubOrchestrationInstanceCompleted: h.SubOrchestrationInstanceCreated,
    h.SubOrchestrationInstanceFailed: h.SubOrchestrationInstanceCreated,
}
_FAILURES = (h.TaskFailed, h.SubOrchestrationInstanceFailed)


def _answered_id(event: HistoryEvent) -> int:
    task_id = h.result_task_id(event)
    assert task_id is not None
    return task_id


def _is_rewind(event: HistoryEvent) -> bool:
    return event.event_type is EventType.EXECUTION_REWOUND


def _final_status(event: HistoryEvent) -> OrchestrationStatus | None:
    if isinstance(event, h.ExecutionCompleted):
        return event.status
    if isinstance(event, h.ContinueAsNew):
        return _S.CONTINUED_AS_NEW
    return None


class _InstanceCheck:
    """One pass over a history, collecting problems."""

    def __init__(self, state: OrchestrationState, history: Sequence[HistoryEvent]) -> None:
        self.state = state
        self.history = history
        self.problems: list[IntegrityProblem] = []

    def report(self, rule: IntegrityRule, message: str, index: int | None = None) -> None:
        event = self.history[index] if index is not None else None
        self.problems.append(IntegrityProblem(self.state.instance_id, rule, message, index, event))

    def run(self) -> list[IntegrityProblem]:
        if not self.history:
            self._check_empty()
            return self.problems
        self._check_start()
        self._check_episodes()
        final = self._check_events()
        self._check_row(final)
        return self.problems

    def _check_empty(self) -> None:
        status = self.state.runtime_status
        if status not in (_S.PENDING, _S.CONTINUED_AS_NEW):
            self.report(
                IntegrityRule.STATUS_MISMATCH,
                f"status is {status.value} but the history is empty "
                "(only PENDING or CONTINUED_AS_NEW instances have no history)",
            )
        self._check_unfinished_row()

    def _check_start(self) -> None:
        starts = [i for i, e in enumerate(self.history) if isinstance(e, h.ExecutionStarted)]
        if not starts:
            self.report(IntegrityRule.MISSING_START, "the history has no ExecutionStarted", 0)
            return
        first = starts[0]
        if any(not isinstance(e, h.OrchestratorStarted) for e in self.history[:first]):
            self.report(
                IntegrityRule.START_NOT_FIRST,
                "ExecutionStarted is not the first event of the first episode",
                first,
            )
        started = self.history[first]
        assert isinstance(started, h.ExecutionStarted)
        if started.instance_id != self.state.instance_id:
            self.report(
                IntegrityRule.START_NAMES_OTHER_INSTANCE,
                f"ExecutionStarted names instance {started.instance_id!r}",
                first,
            )
        for i in starts[1:]:
            self.report(IntegrityRule.DUPLICATE_START, "a second ExecutionStarted", i)
        self._check_row_identity(started, first)

    def _check_row_identity(self, started: h.ExecutionStarted, index: int) -> None:
        state = self.state
        parent = started.parent.instance_id if started.parent is not None else None
        pairs = [
            ("name", state.name, started.name),
            ("execution id", state.execution_id, started.execution_id),
            ("input", state.serialized_input, started.input),
            ("parent instance", state.parent_instance_id, parent),
            ("task queue", state.task_queue, started.task_queue),
        ]
        for what, row_value, event_value in pairs:
            if row_value != event_value:
                self.report(
                    IntegrityRule.ROW_MISMATCH,
                    f"the row's {what} is {_short(row_value)} but ExecutionStarted has "
                    f"{_short(event_value)}",
                    index,
                )

    def _check_episodes(self) -> None:
        open_at: int | None = None
        for i, event in enumerate(self.history):
            if isinstance(event, h.OrchestratorStarted):
                if open_at is not None:
                    self.report(
                        IntegrityRule.EPISODE_STRUCTURE,
                        f"an episode starts inside the episode opened at #{open_at}",
                        i,
                    )
                open_at = i
            elif isinstance(event, h.OrchestratorCompleted):
                if open_at is None:
                    self.report(IntegrityRule.EPISODE_STRUCTURE, "closes no episode", i)
                open_at = None
            elif open_at is None:
                self.report(IntegrityRule.EPISODE_STRUCTURE, "lies outside any episode", i)
        if open_at is not None:
            self.report(
                IntegrityRule.EPISODE_STRUCTURE, "the last episode is never closed", open_at
            )

    def _check_events(self) -> int | None:
        """Scheduling, results and completion; returns the final completion's position."""
        scheduled: dict[int, type[HistoryEvent]] = {}
        # Task id -> whether every result it got so far was a failure.
        answered: dict[int, bool] = {}
        reopened: set[int] = set()
        episode_failures: list[int] = []
        final: int | None = None
        failed_episode_failures: set[int] = set()
        after_final: str | None = None  # None, "closed" (episode closed) or "opened" (a new one)
        for i, event in enumerate(self.history):
            if isinstance(event, h.OrchestratorStarted):
                episode_failures = []
            if final is not None:
                status = _final_status(self.history[final])
                if isinstance(event, h.OrchestratorCompleted) and after_final is None:
                    after_final = "closed"
                    continue
                if (
                    status is _S.FAILED
                    and after_final == "closed"
                    and isinstance(event, h.OrchestratorStarted)
                ):
                    after_final = "opened"
                    continue
                if status is _S.FAILED and after_final == "opened" and _is_rewind(event):
                    final, after_final = None, None
                    reopened |= failed_episode_failures
                    continue
                self.report(
                    IntegrityRule.EVENT_AFTER_COMPLETION,
                    f"follows the final completion at #{final} ({_status_name(status)})",
                    i,
                )
                return final
            if _is_rewind(event):
                self.report(
                    IntegrityRule.REWIND_WITHOUT_FAILURE,
                    "ExecutionRewound, but the execution had not ended FAILED",
                    i,
                )
            elif isinstance(event, _SCHEDULING):
                if event.event_id < 0:
                    self.report(
                        IntegrityRule.BAD_SCHEDULING_ID, f"negative task id {event.event_id}", i
                    )
                elif event.event_id in scheduled:
                    self.report(
                        IntegrityRule.DUPLICATE_SCHEDULING_ID,
                        f"task id {event.event_id} is already used by a "
                        f"{scheduled[event.event_id].__name__}",
                        i,
                    )
                else:
                    scheduled[event.event_id] = type(event)
            elif type(event) in _ANSWERS:
                self._check_result(i, event, scheduled, answered, reopened)
                if isinstance(event, _FAILURES):
                    episode_failures.append(_answered_id(event))
            elif _final_status(event) is not None:
                final, after_final = i, None
                failed_episode_failures = set(episode_failures)
        return final

    def _check_result(
        self,
        index: int,
        event: HistoryEvent,
        scheduled: dict[int, type[HistoryEvent]],
        answered: dict[int, bool],
        reopened: set[int],
    ) -> None:
        task_id = _answered_id(event)
        wanted = _ANSWERS[type(event)]
        kind = scheduled.get(task_id)
        if kind is not wanted:
            found = f"a {kind.__name__}" if kind is not None else "nothing"
            self.report(
                IntegrityRule.ORPHAN_RESULT,
                f"answers task {task_id}, but no earlier {wanted.__name__} has that id "
                f"(it is {found})",
                index,
            )
            return
        failure = isinstance(event, _FAILURES)
        if task_id in answered:
            if task_id in reopened and answered[task_id]:
                reopened.discard(task_id)
            else:
                self.report(
                    IntegrityRule.DUPLICATE_RESULT, f"a second result for task {task_id}", index
                )
                return
        answered[task_id] = failure

    def _check_row(self, final: int | None) -> None:
        expected = _folded_status(self.history)
        status = self.state.runtime_status
        if expected is not None and status is not expected:
            where = f"the final completion at #{final}" if final is not None else "its events"
            self.report(
                IntegrityRule.STATUS_MISMATCH,
                f"status is {status.value} but {where} make it {expected.value}",
                final,
            )
        if final is None:
            self._check_unfinished_row()
            return
        completion = self.history[final]
        result = completion.result if isinstance(completion, h.ExecutionCompleted) else None
        failure = (
            completion.failure_details if isinstance(completion, h.ExecutionCompleted) else None
        )
        if isinstance(completion, h.ContinueAsNew):
            return  # the row then holds the next execution's input, and no output
        if self.state.serialized_output != result:
            self.report(
                IntegrityRule.OUTPUT_MISMATCH,
                f"the row's output is {_short(self.state.serialized_output)} but the "
                f"completion's is {_short(result)}",
                final,
            )
        if self.state.failure_details != failure:
            self.report(
                IntegrityRule.OUTPUT_MISMATCH,
                f"the row's failure details ({_failure(self.state.failure_details)}) differ "
                f"from the completion's ({_failure(failure)})",
                final,
            )
        if self.state.completed_at is None and status.is_terminal:
            self.report(IntegrityRule.OUTPUT_MISMATCH, "the row has no completion time", final)

    def _check_unfinished_row(self) -> None:
        state = self.state
        if state.runtime_status.is_terminal:
            return  # already reported as a status mismatch
        leftovers = [
            what
            for what, value in (
                ("an output", state.serialized_output),
                ("failure details", state.failure_details),
                ("a completion time", state.completed_at),
            )
            if value is not None
        ]
        if leftovers:
            self.report(
                IntegrityRule.OUTPUT_MISMATCH,
                f"the instance is {state.runtime_status.value} yet its row has "
                f"{', '.join(leftovers)}",
            )


def _folded_status(history: Sequence[HistoryEvent]) -> OrchestrationStatus | None:
    """The status the events lead to (None if they name none: no start, no completion)."""
    status: OrchestrationStatus | None = None
    for event in history:
        if isinstance(event, h.ExecutionStarted | h.ExecutionResumed) or _is_rewind(event):
            status = _S.RUNNING
        elif isinstance(event, h.ExecutionSuspended):
            status = _S.SUSPENDED
        else:
            status = _final_status(event) or status
    return status


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _failure(details: object) -> str:
    if details is None:
        return "none"
    return _short(f"{getattr(details, 'error_type', '?')}: {getattr(details, 'message', '?')}")


def _status_name(status: OrchestrationStatus | None) -> str:
    return status.value if status is not None else "?"


def check_instance(
    state: OrchestrationState, history: Sequence[HistoryEvent]
) -> list[IntegrityProblem]:
    """The problems of one instance, from its row and its current execution's history."""
    return _InstanceCheck(state, history).run()


# -- a whole hub -------------------------------------------------------------------------------
class _Source(Protocol):
    async def page(self, token: str | None) -> QueryPage: ...

    async def entity_page(self, token: str | None) -> EntityQueryPage: ...

    async def entity(self, entity_id: str) -> EntityMetadata | None: ...

    async def state(self, instance_id: str) -> OrchestrationState | None: ...

    async def history(self, instance_id: str) -> list[HistoryEvent]: ...


class _StoreSource:
    def __init__(self, store: OrchestrationServiceClient) -> None:
        self._store = store

    async def page(self, token: str | None) -> QueryPage:
        query = InstanceQuery(page_size=_PAGE_SIZE, continuation_token=token)
        return await self._store.query_instances(query)

    async def entity_page(self, token: str | None) -> EntityQueryPage:
        query = EntityQuery(page_size=_PAGE_SIZE, continuation_token=token)
        return await self._store.query_entities(query)

    async def entity(self, entity_id: str) -> EntityMetadata | None:
        return await self._store.get_entity(entity_id)

    async def state(self, instance_id: str) -> OrchestrationState | None:
        return await self._store.get_instance(instance_id)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        return await self._store.get_history(instance_id)


class _AsyncClientSource:
    def __init__(self, client: AsyncTaskHubClient) -> None:
        self._client = client

    async def page(self, token: str | None) -> QueryPage:
        return await self._client.query_orchestrations(
            page_size=_PAGE_SIZE, continuation_token=token
        )

    async def entity_page(self, token: str | None) -> EntityQueryPage:
        return await self._client.query_entities(page_size=_PAGE_SIZE, continuation_token=token)

    async def entity(self, entity_id: str) -> EntityMetadata | None:
        return await self._client.get_entity(entity_id)

    async def state(self, instance_id: str) -> OrchestrationState | None:
        return await self._client.get_orchestration_state(instance_id)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        try:
            return await self._client.get_orchestration_history(instance_id)
        except OrchestrationNotFoundError:
            return []


class _SyncClientSource:
    """A synchronous client's calls block, but only the private loop of :func:`check_hub_sync`."""

    def __init__(self, client: TaskHubClient) -> None:
        self._client = client

    async def page(self, token: str | None) -> QueryPage:
        return self._client.query_orchestrations(page_size=_PAGE_SIZE, continuation_token=token)

    async def entity_page(self, token: str | None) -> EntityQueryPage:
        return self._client.query_entities(page_size=_PAGE_SIZE, continuation_token=token)

    async def entity(self, entity_id: str) -> EntityMetadata | None:
        return self._client.get_entity(entity_id)

    async def state(self, instance_id: str) -> OrchestrationState | None:
        return self._client.get_orchestration_state(instance_id)

    async def history(self, instance_id: str) -> list[HistoryEvent]:
        try:
            return self._client.get_orchestration_history(instance_id)
        except OrchestrationNotFoundError:
            return []


async def _check_one(source: _Source, state: OrchestrationState) -> list[IntegrityProblem] | None:
    """Problems of one instance, from a history read between two equal reads of its row
    (commits change both together); None if it vanished or kept changing."""
    before: OrchestrationState | None = state
    for _ in range(_READ_ATTEMPTS):
        if before is None:
            return None
        history = await source.history(before.instance_id)
        after = await source.state(before.instance_id)
        # (A client's converter is not part of the row: == leaves it out.)
        if after is not None and before == after:
            return check_instance(after, history)
        before = after
    return None


async def _scan(source: _Source, concurrency: int) -> IntegrityReport:
    report = IntegrityReport()
    limit = asyncio.Semaphore(concurrency)

    async def one(state: OrchestrationState) -> list[IntegrityProblem] | None:
        async with limit:
            return await _check_one(source, state)

    token: str | None = None
    while True:
        page = await source.page(token)
        results = await asyncio.gather(*(one(s) for s in page.states))
        for problems in results:
            if problems is None:
                report.instances_skipped += 1
            else:
                report.instances_checked += 1
                report.problems.extend(problems)
        token = page.continuation_token
        if token is None:
            break
    await _scan_entities(source, report)
    return report


async def _scan_entities(source: _Source, report: IntegrityReport) -> None:
    token: str | None = None
    while True:
        try:
            page = await source.entity_page(token)
        except NotImplementedError:  # a store without entities
            return
        for entity in page.entities:
            report.entities_checked += 1
            report.problems.extend(await _check_entity(source, entity))
        token = page.continuation_token
        if token is None:
            return


async def _check_entity(source: _Source, entity: EntityMetadata) -> list[IntegrityProblem]:
    problems = []
    if entity.serialized_state is not None:
        try:
            json.loads(entity.serialized_state)
        except ValueError as exc:
            problems.append(
                IntegrityProblem(
                    entity.entity_id,
                    IntegrityRule.ENTITY_STATE_NOT_JSON,
                    f"its state is not JSON ({exc}): {_short(entity.serialized_state)}",
                )
            )
    holder_id = entity.locked_by
    if holder_id is None or entity.backlog:
        return problems
    holder = await source.state(holder_id)
    if holder is not None and not holder.runtime_status.is_terminal:
        return problems
    # The holder ended (or is gone): its release may have been sent since the entity was
    # read; only a lock still held with nothing on its way is orphaned.
    again = await source.entity(entity.entity_id)
    if again is None or again.locked_by != holder_id or again.backlog:
        return problems
    why = "does not exist" if holder is None else f"ended {holder.runtime_status.value}"
    problems.append(
        IntegrityProblem(
            entity.entity_id,
            IntegrityRule.ENTITY_LOCK_ORPHANED,
            f"locked by orchestration {holder_id!r}, which {why}, and no release is on its "
            "way: no other caller can reach the entity (clean_entity_storage releases it)",
        )
    )
    return problems


async def scan_hub(
    target: str | OrchestrationServiceClient | AsyncTaskHubClient | TaskHubClient,
    *,
    concurrency: int = 16,
) -> IntegrityReport:
    """Check every instance of a task hub; see the module documentation for the rules.

    ``target`` is a store URL (opened and closed here), an opened store, or a client. A
    :class:`TaskHubClient` blocks the event loop while it is read: pass it only from
    :func:`check_hub_sync`, or use an :class:`AsyncTaskHubClient` in async code.
    ``concurrency`` bounds the instances read at the same time.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if isinstance(target, str):
        store = open_store(target)
        await store.open()
        try:
            return await _scan(_StoreSource(store), concurrency)
        finally:
            await store.close()
    if isinstance(target, AsyncTaskHubClient):
        return await _scan(_AsyncClientSource(target), concurrency)
    if isinstance(target, TaskHubClient):
        return await _scan(_SyncClientSource(target), 1)
    if isinstance(target, OrchestrationServiceClient):
        return await _scan(_StoreSource(target), concurrency)
    raise TypeError(
        "check_hub needs a store URL, a store or a task hub client, "
        f"not {type(target).__qualname__}"
    )


async def check_hub(
    target: str | OrchestrationServiceClient | AsyncTaskHubClient | TaskHubClient,
    *,
    concurrency: int = 16,
) -> list[IntegrityProblem]:
    """The integrity problems of every instance of a task hub (empty: consistent).

    See :func:`scan_hub` for ``target`` and ``concurrency``.
    """
    return (await scan_hub(target, concurrency=concurrency)).problems


def check_hub_sync(
    target: str | OrchestrationServiceClient | TaskHubClient,
    *,
    concurrency: int = 16,
) -> list[IntegrityProblem]:
    """:func:`check_hub` for synchronous code (on a private event loop)."""
    return asyncio.run(scan_hub(target, concurrency=concurrency)).problems
