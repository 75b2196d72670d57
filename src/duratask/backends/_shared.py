"""Small helpers every task hub store uses: UTC time, lock tokens, new instance rows."""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.backends._wakeups import ACTIVITY, ENTITY, ORCHESTRATION
from duratask.backends.base import (
    ENTITY_RECENT_REQUESTS,
    EXECUTION_SUMMARY_LENGTH,
    ActivityRequest,
    ActivityWorkItem,
    BacklogEntry,
    EntityRecord,
    ExecutionRecord,
    HistoryMark,
    InstanceQuery,
    LeaseTakeover,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    ScheduleRecord,
    WorkerInfo,
    WorkFilter,
)
from duratask.history import ExecutionStarted
from duratask.state import (
    DEFAULT_TASK_QUEUE,
    FailureDetails,
    OrchestrationState,
    OrchestrationStatus,
)


def utc_now() -> datetime:
    """The default store clock: timezone-aware UTC now."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; ValueError for a naive datetime (its instant is unknown)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given to a store; use aware UTC")
    return value.astimezone(UTC)


def as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def rest_expiry(retry_at: datetime) -> datetime:
    """When the lease standing for an abandoned instance's rest expires: just before
    ``retry_at``, so the instance is free at ``retry_at`` (a lease is live through its
    expiry instant)."""
    return as_utc(retry_at) - timedelta(microseconds=1)


def new_lock_token() -> str:
    """A fresh lease token, unique among all workers' (128 random bits).

    A token fences the holder of a lease; it is never a secret, so it comes from the
    process's random generator (seeded from the OS, and again in a forked child) rather
    than a system call per token."""
    return f"{random.getrandbits(128):032x}"


def leased_activities(
    rows: Iterable[Mapping[str, Any]],
    token: str,
    locked_until: datetime,
    to_duration: Callable[[Any], timedelta],
) -> list[ActivityWorkItem]:
    """Work items for activity rows leased together under ``token``, oldest first
    (``to_duration`` reads a stored timeout)."""
    return [
        ActivityWorkItem(
            work_item_id=row["id"],
            request=ActivityRequest(
                instance_id=row["instance_id"],
                execution_id=row["execution_id"],
                task_id=row["task_id"],
                name=row["name"],
                version=row["version"],
                input=row["input"],
                attempt=row["attempt"],
                timeout=_duration(to_duration, row["timeout"]),
                heartbeat_timeout=_duration(to_duration, row["heartbeat_timeout"]),
                heartbeat_details=row["heartbeat_details"],
                task_queue=row["task_queue"],
            ),
            lock_token=token,
            locked_until=locked_until,
            dequeue_count=row["dequeue_count"],
        )
        for row in sorted(rows, key=lambda row: int(row["id"]))
    ]


def _duration(to_duration: Callable[[Any], timedelta], value: Any) -> timedelta | None:
    return None if value is None else to_duration(value)


def worker_registrations(worker: WorkerInfo) -> str:
    """What a worker registered, as the JSON the SQL stores keep."""
    return json.dumps(
        {
            "orchestrations": sorted(([n, v] for n, v in worker.orchestrations), key=str),
            "activities": sorted(worker.activities),
            "task_queues": sorted(worker.task_queues),
        }
    )


def worker_from_row(row: Mapping[str, Any], to_time: Callable[[Any], datetime]) -> WorkerInfo:
    """A worker from a row of a SQL store's ``workers`` table."""
    registrations = _json(row["registrations"])
    status = _json(row["status"])
    return WorkerInfo(
        worker_id=row["worker_id"],
        host=row["host"],
        pid=row["pid"],
        started_at=to_time(row["started_at"]),
        heartbeat_at=to_time(row["heartbeat_at"]),
        orchestrations=frozenset((n, v) for n, v in registrations.get("orchestrations", [])),
        activities=frozenset(registrations.get("activities", [])),
        task_queues=frozenset(registrations.get("task_queues", [DEFAULT_TASK_QUEUE])),
        in_flight={str(k): int(v) for k, v in status.get("in_flight", {}).items()},
    )


def ended_executions(
    stored: OrchestrationState | None,
    commit: OrchestrationCommit,
    previous: tuple[int, datetime] | None,
    now: datetime,
) -> list[ExecutionRecord]:
    """The records a commit adds: of the stored execution its reset ends (``stored``, the
    instance row before the commit; None when the stored history was empty), then of the
    executions it ran back to back (``commit.continued_executions``), numbered on from
    ``previous``, the generation and end of the latest record kept (None: none)."""
    records = []
    if stored is not None:
        records.append(ended_execution(stored, commit, previous, now))
    generation = records[-1].generation if records else previous[0] if previous else 0
    for n, ran in enumerate(commit.continued_executions, start=generation + 1):
        records.append(
            replace(
                ran,
                generation=n,
                started_at=now,
                ended_at=now,
                input_summary=_summary(ran.input_summary),
                output_summary=_summary(ran.output_summary),
            )
        )
    return records


def ended_execution(
    stored: OrchestrationState,
    commit: OrchestrationCommit,
    previous: tuple[int, datetime] | None,
    now: datetime,
) -> ExecutionRecord:
    """The record of the execution a commit that resets the history ends: ``stored`` is the
    instance row before the commit, ``previous`` the generation and end of the record
    before it (None: none)."""
    continued = commit.state.runtime_status is OrchestrationStatus.CONTINUED_AS_NEW
    if continued or not stored.runtime_status.is_terminal:
        status, output = OrchestrationStatus.CONTINUED_AS_NEW, handed_on_input(commit)
    else:
        status, output = stored.runtime_status, stored.serialized_output
    generation, started_at = previous if previous is not None else (0, stored.created_at)
    return ExecutionRecord(
        instance_id=stored.instance_id,
        generation=generation + 1,
        execution_id=stored.execution_id,
        name=stored.name,
        version=stored.version,
        started_at=started_at,
        ended_at=now,
        status=status,
        input_summary=_summary(stored.serialized_input),
        output_summary=_summary(output),
    )


def handed_on_input(commit: OrchestrationCommit) -> str | None:
    """The input an execution ended by continuing as new hands on to its successor: the
    input of the execution ``commit`` starts, or (ending it alone) of the row it writes."""
    if commit.continued_executions:  # the first of those it ran back to back
        return commit.continued_executions[0].input_summary
    if commit.state.runtime_status is not OrchestrationStatus.CONTINUED_AS_NEW:
        for event in commit.new_events:
            if isinstance(event, ExecutionStarted):
                return event.input
    return commit.state.serialized_input


def _summary(text: str | None) -> str | None:
    return None if text is None else text[:EXECUTION_SUMMARY_LENGTH]


def execution_from_row(
    row: Mapping[str, Any], to_time: Callable[[Any], datetime]
) -> ExecutionRecord:
    """An execution record from a row of a SQL store's ``executions`` table."""
    return ExecutionRecord(
        instance_id=row["instance_id"],
        generation=row["generation"],
        execution_id=row["execution_id"],
        name=row["name"],
        version=row["version"],
        started_at=to_time(row["started_at"]),
        ended_at=to_time(row["ended_at"]),
        status=OrchestrationStatus(row["status"]),
        input_summary=row["input"],
        output_summary=row["output"],
    )


def takeover_from_row(row: Mapping[str, Any], to_time: Callable[[Any], datetime]) -> LeaseTakeover:
    """A lease takeover from a row of a SQL store's ``lease_takeovers`` table."""
    return LeaseTakeover(
        instance_id=row["instance_id"],
        execution_id=row["execution_id"],
        previous_owner=row["previous_owner"],
        lease_expired_at=to_time(row["lease_expired_at"]),
        taken_at=to_time(row["taken_at"]),
        taken_by=row["taken_by"],
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def started_event(message: OrchestrationMessage) -> ExecutionStarted:
    """The :class:`ExecutionStarted` a create message must carry; TypeError otherwise."""
    if not isinstance(message.event, ExecutionStarted):
        raise TypeError(
            f"create_instance needs an ExecutionStarted message, got {type(message.event).__name__}"
        )
    return message.event


def pending_state(instance_id: str, event: ExecutionStarted) -> OrchestrationState:
    """The row of an instance that an :class:`ExecutionStarted` message brings into being."""
    created = as_utc(event.timestamp)
    return OrchestrationState(
        instance_id=instance_id,
        name=event.name,
        version=event.version,
        runtime_status=OrchestrationStatus.PENDING,
        created_at=created,
        last_updated_at=created,
        execution_id=event.execution_id,
        serialized_input=event.input,
        parent_instance_id=event.parent.instance_id if event.parent else None,
        scheduled_start_at=as_utc_or_none(event.scheduled_start_time),
        task_queue=event.task_queue,
    )


@dataclass(frozen=True, slots=True)
class StartLease:
    """A create's request to lease its new instance to ``owner`` for ``duration`` (see
    :class:`~duratask.backends.base.SupportsEagerStart`)."""

    owner: str
    duration: timedelta
    work_filter: WorkFilter | None

    def allows(self, message: OrchestrationMessage, now: datetime) -> bool:
        """Whether the new instance of ``message`` may be leased at ``now``: its start is
        due and the work filter names its orchestration and serves its task queue
        (replacing is the store's check)."""
        event = started_event(message)
        if message.visible_at is not None and as_utc(message.visible_at) > now:
            return False
        if event.scheduled_start_time is not None and as_utc(event.scheduled_start_time) > now:
            return False
        return self.work_filter is None or self.work_filter.runs_orchestration(
            event.name, event.version, event.task_queue
        )


class LeasedCreates(ABC):
    """``create_instance`` and ``create_and_lease_instance``
    (:class:`~duratask.backends.base.SupportsEagerStart`) over one store hook, ``_create``."""

    async def create_instance(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        """Create an instance, replacing an existing one whose status is ``replaceable``."""
        await self._create(message, replaceable, None)

    async def create_and_lease_instance(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        owner: str,
        lease: timedelta,
        work_filter: WorkFilter | None = None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        """Create an instance as :meth:`create_instance` does and lease it to ``owner`` in
        the same transaction, unless it replaced one, is not due yet or ``work_filter``
        leaves it out (then None); ``durable=False``: see
        :class:`~duratask.backends.base.SupportsEagerStart`."""
        start_lease = StartLease(owner, lease, work_filter)
        return await self._create(message, replaceable, start_lease, durable=durable)

    async def wait_durable(self, timeout: float) -> None:
        """Every write of this store is durable when it returns (a store whose commits are
        all durable returns at once)."""
        return

    @abstractmethod
    async def _create(
        self,
        message: OrchestrationMessage,
        replaceable: frozenset[OrchestrationStatus],
        start_lease: StartLease | None,
        *,
        durable: bool = True,
    ) -> OrchestrationWorkItem | None:
        """Create the instance; with ``start_lease``, lease it in the same transaction if
        the lease :meth:`~StartLease.allows` it and no instance was replaced. ``durable``
        False: the commit need not be durable yet (a store that cannot tell ignores it)."""


def started_work_item(
    message: OrchestrationMessage,
    message_id: int,
    token: str,
    locked_until: datetime,
) -> OrchestrationWorkItem:
    """The work item of an instance leased as it was created: no history, its start message
    delivered once."""
    delivered = OrchestrationMessage(
        message.instance_id, message.event, message.execution_id, as_utc_or_none(message.visible_at)
    )
    return OrchestrationWorkItem(
        instance_id=message.instance_id,
        lock_token=token,
        locked_until=locked_until,
        history=[],
        messages=[LockedMessage(message_id, delivered, 1)],
        state=pending_state(message.instance_id, started_event(message)),
        history_length=0,
    )


def normalized_state(state: OrchestrationState) -> OrchestrationState:
    """``state`` as a store keeps it: UTC datetimes, no data converter."""
    return OrchestrationState(
        instance_id=state.instance_id,
        name=state.name,
        version=state.version,
        runtime_status=state.runtime_status,
        created_at=as_utc(state.created_at),
        last_updated_at=as_utc(state.last_updated_at),
        completed_at=as_utc_or_none(state.completed_at),
        execution_id=state.execution_id,
        serialized_input=state.serialized_input,
        serialized_output=state.serialized_output,
        serialized_custom_status=state.serialized_custom_status,
        failure_details=state.failure_details,
        parent_instance_id=state.parent_instance_id,
        scheduled_start_at=as_utc_or_none(state.scheduled_start_at),
        task_queue=state.task_queue,
    )


def check_page_size(page_size: int) -> None:
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")


def history_is_known(
    known_histories: Mapping[str, HistoryMark] | None,
    instance_id: str,
    execution_id: str | None,
    length: int,
) -> bool:
    """True when the caller's copy of the history is the stored one (so it need not be read)."""
    if not known_histories or execution_id is None:
        return False
    return known_histories.get(instance_id) == HistoryMark(execution_id, length)


def work_kinds(commit: OrchestrationCommit) -> list[str]:
    """Which kinds of work an episode's commit may have made available."""
    kinds = [ACTIVITY] if commit.activities else []
    if commit.messages:
        kinds.append(ORCHESTRATION)
    if commit.entity_messages:
        kinds.append(ENTITY)
    return kinds


def state_from_row(row: Any, to_time: Callable[[Any], datetime]) -> OrchestrationState:
    """Rebuild a state from a row with the instance columns, converting stored times with
    ``to_time`` (each store stores time its own way)."""
    failure = row["failure_details"]
    return OrchestrationState(
        instance_id=row["instance_id"],
        name=row["name"],
        version=row["version"],
        runtime_status=OrchestrationStatus(row["runtime_status"]),
        created_at=to_time(row["created_at"]),
        last_updated_at=to_time(row["last_updated_at"]),
        completed_at=_or_none(to_time, row["completed_at"]),
        execution_id=row["execution_id"],
        serialized_input=row["input"],
        serialized_output=row["output"],
        serialized_custom_status=row["custom_status"],
        failure_details=FailureDetails.from_json(failure) if failure is not None else None,
        parent_instance_id=row["parent_instance_id"],
        scheduled_start_at=_or_none(to_time, row["scheduled_start_at"]),
        task_queue=row["task_queue"],
    )


def _or_none(to_time: Callable[[Any], datetime], value: Any) -> datetime | None:
    return None if value is None else to_time(value)


def backlog_from_row(row: Mapping[str, Any]) -> BacklogEntry:
    """A :class:`BacklogEntry` from a row of the stores' backlog query."""
    return BacklogEntry(
        row["kind"], row["name"], int(row["ready"]), int(row["later"]), int(row["leased"])
    )


def entity_record_json(record: EntityRecord) -> str:
    """The recent request ids of an entity record as stored (a JSON array)."""
    return json.dumps(list(record.recent_requests[-ENTITY_RECENT_REQUESTS:]))


def entity_recent_from_json(text: str | None) -> tuple[str, ...]:
    """Inverse of :func:`entity_record_json`."""
    return tuple(json.loads(text)) if text else ()


def orphaned_lock(holder: OrchestrationState | None) -> bool:
    """Whether an entity lock held by the orchestration ``holder`` is orphaned: the
    orchestration no longer exists or has ended (it can never release it)."""
    return holder is None or holder.runtime_status.is_terminal


def schedule_from_row(row: Mapping[str, Any], to_time: Callable[[Any], datetime]) -> ScheduleRecord:
    """A schedule from a row of a SQL store's ``schedules`` table."""
    due = row["next_due_at"]
    return ScheduleRecord(
        schedule_id=row["schedule_id"],
        definition=row["definition"],
        state=row["state"],
        next_due_at=None if due is None else to_time(due),
        claimed_by=row["claimed_by"],
        revision=row["revision"],
        created_at=to_time(row["created_at"]),
        updated_at=to_time(row["updated_at"]),
    )


def schedule_params(record: ScheduleRecord, from_time: Callable[[datetime], Any]) -> dict[str, Any]:
    """The column values of a schedule, for a SQL store's statements."""
    due = record.next_due_at
    return {
        "schedule_id": record.schedule_id,
        "definition": record.definition,
        "state": record.state,
        "next_due_at": None if due is None else from_time(due),
        "claimed_by": record.claimed_by,
        "revision": record.revision,
        "created_at": from_time(record.created_at),
        "updated_at": from_time(record.updated_at),
    }


def instance_filter(query: InstanceQuery) -> Callable[[OrchestrationState], bool]:
    """A predicate for ``query``'s filters (not its paging)."""
    created_from = as_utc_or_none(query.created_from)
    created_to = as_utc_or_none(query.created_to)

    def matches(s: OrchestrationState) -> bool:
        return (
            (query.statuses is None or s.runtime_status in query.statuses)
            and (created_from is None or s.created_at >= created_from)
            and (created_to is None or s.created_at < created_to)
            and (query.name is None or s.name == query.name)
            and (
                query.instance_id_prefix is None
                or s.instance_id.startswith(query.instance_id_prefix)
            )
            and (
                query.parent_instance_id is None or s.parent_instance_id == query.parent_instance_id
            )
            and (not query.top_level_only or s.parent_instance_id is None)
            and (
                query.custom_status_contains is None
                or query.custom_status_contains in (s.serialized_custom_status or "")
            )
        )

    return matches
