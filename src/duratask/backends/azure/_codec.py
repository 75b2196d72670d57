"""How the Azure store writes values into table rows: keys, times, instance rows, messages
and activities, as strings and integers (properties every table service keeps exactly)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

from duratask.backends._shared import as_utc
from duratask.backends.base import (
    ActivityRequest,
    ExecutionRecord,
    LeaseTakeover,
    OrchestrationMessage,
    StatusChange,
)
from duratask.history import event_from_json, event_to_json
from duratask.state import (
    DEFAULT_TASK_QUEUE,
    FailureDetails,
    OrchestrationState,
    OrchestrationStatus,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Row keys, by kind of row in an instance's partition of the History table.
SENTINEL = "sentinel"
HISTORY = "h-"
MESSAGE = "m-"
ACTIVITY = "a-"
OUTBOX = "o-"
DELIVERED = "d-"
ID_DIGITS = 20
# A string property longer than this goes to a blob, gzipped (a table property holds 64 KiB).
PROPERTY_LIMIT = 30_000
BLOB_PREFIX = "@blob:"  # no JSON text starts with '@'


def table_key(text: str) -> str:
    """``text`` made fit for a partition or row key: the characters keys cannot hold
    (``/ \\ # ?``, control characters) and ``%`` are percent-encoded."""
    return "".join(
        f"%{ord(c):02X}" if c in "/\\#?%" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c
        for c in text
    )


def untable_key(key: str) -> str:
    """Inverse of :func:`table_key`."""
    out: list[str] = []
    i = 0
    while i < len(key):
        if key[i] == "%":
            out.append(chr(int(key[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(key[i])
            i += 1
    return "".join(out)


def row_key(prefix: str, number: int) -> str:
    """The row key of message, activity, outbox or marker ``number``."""
    return f"{prefix}{number:0{ID_DIGITS}d}"


def row_number(key: str) -> int:
    """Inverse of :func:`row_key`."""
    return int(key[2:])


def history_key(history_id: str, sequence: int) -> str:
    """The row key of event ``sequence`` of the history ``history_id`` (a new id at every
    reset of an instance's history)."""
    return f"{HISTORY}{table_key(history_id)}-{sequence:08d}"


def history_range(history_id: str) -> tuple[str, str]:
    """The row keys of one history: at or after the first, before the second."""
    stem = f"{HISTORY}{table_key(history_id)}-"
    return stem, stem[:-1] + "."


def to_text(value: datetime) -> str:
    """A time as 17 zero-padded digits of microseconds since the epoch (sorts as it reads)."""
    return f"{(as_utc(value) - _EPOCH) // _MICROSECOND:017d}"


def from_text(value: str) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def opt_text(value: datetime | None) -> str:
    return "" if value is None else to_text(value)


def opt_time(value: str | None) -> datetime | None:
    return from_text(value) if value else None


def state_to_json(state: OrchestrationState) -> str:
    failure = state.failure_details
    return json.dumps(
        {
            "id": state.instance_id,
            "name": state.name,
            "version": state.version,
            "status": state.runtime_status.value,
            "created": to_text(state.created_at),
            "updated": to_text(state.last_updated_at),
            "completed": opt_text(state.completed_at),
            "execution": state.execution_id,
            "input": state.serialized_input,
            "output": state.serialized_output,
            "custom": state.serialized_custom_status,
            "failure": failure.to_dict() if failure is not None else None,
            "parent": state.parent_instance_id,
            "scheduled": opt_text(state.scheduled_start_at),
            "queue": state.task_queue,
        },
        separators=(",", ":"),
    )


def state_from_json(text: str) -> OrchestrationState:
    data = json.loads(text)
    failure = data["failure"]
    return OrchestrationState(
        instance_id=data["id"],
        name=data["name"],
        version=data["version"],
        runtime_status=OrchestrationStatus(data["status"]),
        created_at=from_text(data["created"]),
        last_updated_at=from_text(data["updated"]),
        completed_at=opt_time(data["completed"]),
        execution_id=data["execution"],
        serialized_input=data["input"],
        serialized_output=data["output"],
        serialized_custom_status=data["custom"],
        failure_details=FailureDetails.from_dict(failure) if failure is not None else None,
        parent_instance_id=data["parent"],
        scheduled_start_at=opt_time(data["scheduled"]),
        task_queue=data.get("queue", DEFAULT_TASK_QUEUE),
    )


def message_to_json(message: OrchestrationMessage) -> str:
    change = message.status_change
    return json.dumps(
        {
            "to": message.instance_id,
            "event": event_to_json(message.event),
            "execution": message.execution_id,
            "visible": opt_text(message.visible_at),
            "change": None if change is None else [change.when.value, change.becomes.value],
        },
        separators=(",", ":"),
    )


def message_from_json(text: str) -> OrchestrationMessage:
    data = json.loads(text)
    change = data["change"]
    return OrchestrationMessage(
        instance_id=data["to"],
        event=event_from_json(data["event"]),
        execution_id=data["execution"],
        visible_at=opt_time(data["visible"]),
        status_change=None
        if change is None
        else StatusChange(OrchestrationStatus(change[0]), OrchestrationStatus(change[1])),
    )


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def request_to_json(request: ActivityRequest) -> str:
    return json.dumps(
        {
            "instance": request.instance_id,
            "execution": request.execution_id,
            "task": request.task_id,
            "name": request.name,
            "version": request.version,
            "input": request.input,
            "attempt": request.attempt,
            "timeout": _seconds(request.timeout),
            "heartbeat_timeout": _seconds(request.heartbeat_timeout),
            "heartbeat_details": request.heartbeat_details,
            "queue": request.task_queue,
        },
        separators=(",", ":"),
    )


def request_from_json(text: str) -> ActivityRequest:
    data = json.loads(text)

    def duration(value: float | None) -> timedelta | None:
        return None if value is None else timedelta(seconds=value)

    return ActivityRequest(
        instance_id=data["instance"],
        execution_id=data["execution"],
        task_id=data["task"],
        name=data["name"],
        version=data["version"],
        input=data["input"],
        attempt=data["attempt"],
        timeout=duration(data["timeout"]),
        heartbeat_timeout=duration(data["heartbeat_timeout"]),
        heartbeat_details=data["heartbeat_details"],
        task_queue=data.get("queue", DEFAULT_TASK_QUEUE),
    )


def gzip_text(text: str) -> bytes:
    return gzip.compress(text.encode(), 6)


def gunzip_text(data: bytes) -> str:
    return gzip.decompress(data).decode()


def executions_to_json(records: list[ExecutionRecord]) -> str:
    return json.dumps(
        [
            {
                "generation": r.generation,
                "execution": r.execution_id,
                "name": r.name,
                "version": r.version,
                "started": to_text(r.started_at),
                "ended": to_text(r.ended_at),
                "status": r.status.value,
                "input": r.input_summary,
                "output": r.output_summary,
            }
            for r in records
        ],
        separators=(",", ":"),
    )


def executions_from_json(instance_id: str, text: str | None) -> list[ExecutionRecord]:
    return [
        ExecutionRecord(
            instance_id=instance_id,
            generation=d["generation"],
            execution_id=d["execution"],
            name=d["name"],
            version=d["version"],
            started_at=from_text(d["started"]),
            ended_at=from_text(d["ended"]),
            status=OrchestrationStatus(d["status"]),
            input_summary=d["input"],
            output_summary=d["output"],
        )
        for d in json.loads(text or "[]")
    ]


def takeovers_to_json(records: list[LeaseTakeover]) -> str:
    return json.dumps(
        [
            {
                "execution": r.execution_id,
                "owner": r.previous_owner,
                "expired": to_text(r.lease_expired_at),
                "taken": to_text(r.taken_at),
                "by": r.taken_by,
            }
            for r in records
        ],
        separators=(",", ":"),
    )


def takeovers_from_json(instance_id: str, text: str | None) -> list[LeaseTakeover]:
    return [
        LeaseTakeover(
            instance_id=instance_id,
            execution_id=d["execution"],
            previous_owner=d["owner"],
            lease_expired_at=from_text(d["expired"]),
            taken_at=from_text(d["taken"]),
            taken_by=d["by"],
        )
        for d in json.loads(text or "[]")
    ]
