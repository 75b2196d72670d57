"""One entity work item, start to commit: which messages apply (deduplicated, in order, the
lock holder's only while locked), the lock requests and releases among them, the batch of
operations, and everything the batch sends."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from duratask import history as h
from duratask._registry import Registry
from duratask.backends.base import (
    ENTITY_CALL,
    ENTITY_LOCK,
    ENTITY_RECENT_REQUESTS,
    ENTITY_RELEASE,
    ENTITY_SIGNAL,
    EntityCommit,
    EntityMessage,
    EntityRecord,
    EntityWorkItem,
    OrchestrationMessage,
)
from duratask.converter import PayloadCodec
from duratask.entities._context import SignalAction
from duratask.entities._executor import (
    EntityBatchRequest,
    EntityBatchResult,
    OperationRequest,
    run_batch,
)
from duratask.state import FailureDetails


async def process_entity_batch(
    work_item: EntityWorkItem, registry: Registry, codec: PayloadCodec, now: datetime
) -> EntityCommit:
    """Run the work item's messages and say what to commit (no I/O)."""
    batch = plan_entity_batch(work_item, now)
    result = await run_batch(registry, codec, batch.request) if batch.request.operations else None
    return batch.commit(result)


@dataclass(slots=True)
class PlannedBatch:
    """An entity work item sorted out: the operations to run (``request``), and what the
    lock requests and releases among its messages already decided."""

    work_item: EntityWorkItem
    now: datetime
    request: EntityBatchRequest
    locked_by: str | None
    recent: list[str]
    consumed: list[int]
    operations: list[EntityMessage]
    to_entities: list[EntityMessage] = field(default_factory=list)
    to_orchestrations: list[OrchestrationMessage] = field(default_factory=list)

    def commit(self, result: EntityBatchResult | None) -> EntityCommit:
        """What to commit once the operations ran (``result`` None when there were none):
        the new state, the callers' answers, and the operations' signals and starts."""
        now, entity_id = self.now, self.work_item.entity_id
        to_entities, to_orchestrations = list(self.to_entities), list(self.to_orchestrations)
        state = self.work_item.record.state
        if result is not None:
            state = result.state
            for message, outcome in zip(self.operations, result.results, strict=True):
                if message.kind == ENTITY_CALL and message.source is not None:
                    to_orchestrations.append(_answer(message, outcome.result, outcome.failure, now))
            for action in result.actions:
                if isinstance(action, SignalAction):
                    to_entities.append(
                        EntityMessage(
                            entity_id=action.entity_id,
                            kind=ENTITY_SIGNAL,
                            request_id=action.request_id,
                            operation=action.operation,
                            input=action.input,
                            source=entity_id,
                            visible_at=action.signal_time,
                        )
                    )
                else:
                    start = h.ExecutionStarted(
                        timestamp=now,
                        name=action.name,
                        version=action.version,
                        input=action.input,
                        instance_id=action.instance_id,
                        execution_id=uuid.uuid4().hex,
                    )
                    to_orchestrations.append(OrchestrationMessage(action.instance_id, start))
        return EntityCommit(
            record=EntityRecord(
                state, self.locked_by, tuple(self.recent[-ENTITY_RECENT_REQUESTS:])
            ),
            consumed_message_ids=self.consumed,
            entity_messages=to_entities,
            messages=to_orchestrations,
        )


def plan_entity_batch(work_item: EntityWorkItem, now: datetime) -> PlannedBatch:
    """Which messages apply (deduplicated, in order, the lock holder's only while locked),
    the lock requests and releases among them, and the operations left to run."""
    record = work_item.record
    locked_by = record.locked_by
    recent = list(record.recent_requests)
    seen = set(recent)
    consumed: list[int] = []
    blocked: set[str | None] = set()  # senders whose earlier message had to wait
    operations: list[EntityMessage] = []
    to_entities: list[EntityMessage] = []
    to_orchestrations: list[OrchestrationMessage] = []
    for locked in work_item.messages:
        message = locked.message
        if message.source in blocked or (locked_by is not None and message.source != locked_by):
            blocked.add(message.source)  # waits for the lock to go, keeping its sender's order
            continue
        consumed.append(locked.message_id)
        if message.request_id in seen:
            continue  # delivered twice: applied once
        seen.add(message.request_id)
        recent.append(message.request_id)
        if message.kind == ENTITY_LOCK:
            if locked_by is None and message.source is not None:
                locked_by = message.source
                _pass_lock_on(message, to_entities, to_orchestrations, now)
        elif message.kind == ENTITY_RELEASE:
            if locked_by is not None and locked_by == message.source:
                locked_by = None
        elif message.kind in (ENTITY_SIGNAL, ENTITY_CALL):
            operations.append(message)
    request = EntityBatchRequest(
        work_item.entity_id,
        record.state,
        [OperationRequest(m.operation or "", m.request_id, m.input) for m in operations],
    )
    return PlannedBatch(
        work_item,
        now,
        request,
        locked_by,
        recent,
        consumed,
        operations,
        to_entities,
        to_orchestrations,
    )


def _pass_lock_on(
    message: EntityMessage,
    to_entities: list[EntityMessage],
    to_orchestrations: list[OrchestrationMessage],
    now: datetime,
) -> None:
    """Locked for ``message.source``: ask the next entity of the set, or, after the last,
    tell the orchestration its critical section holds every lock."""
    following = message.position + 1
    if following < len(message.lock_set):
        nxt = message.lock_set[following]
        to_entities.append(dataclasses.replace(message, entity_id=nxt, position=following))
        return
    assert message.source is not None
    granted = h.EntityLockGranted(
        timestamp=now, task_scheduled_id=message.task_id, critical_section_id=message.request_id
    )
    to_orchestrations.append(
        OrchestrationMessage(message.source, granted, message.source_execution_id)
    )


def _answer(
    message: EntityMessage,
    result: str | None,
    failure: FailureDetails | None,
    now: datetime,
) -> OrchestrationMessage:
    assert message.source is not None
    event: h.HistoryEvent
    if failure is None:
        event = h.EntityOperationCompleted(
            timestamp=now,
            task_scheduled_id=message.task_id,
            request_id=message.request_id,
            result=result,
        )
    else:
        event = h.EntityOperationFailed(
            timestamp=now,
            task_scheduled_id=message.task_id,
            request_id=message.request_id,
            failure_details=failure,
        )
    return OrchestrationMessage(message.source, event, message.source_execution_id)
