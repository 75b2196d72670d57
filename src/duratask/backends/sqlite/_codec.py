"""Conversions between store values and SQLite column values."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.backends._shared import as_utc
from duratask.backends._shared import state_from_row as shared_state_from_row
from duratask.backends._sql import Dialect
from duratask.backends._sql import state_params as shared_state_params
from duratask.backends.base import LockedMessage, OrchestrationMessage
from duratask.history import event_from_json
from duratask.state import OrchestrationState

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch; ValueError for a naive datetime."""
    if value.tzinfo is not UTC:  # the usual case, UTC already, needs no check
        value = as_utc(value)
    return (value - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def from_micros_or_none(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def _in_list(column: str, values: list[object]) -> tuple[str, list[object]]:
    return f"{column} IN ({', '.join('?' * len(values))})", values


def _starts_with(column: str, prefix: str) -> tuple[str, list[object]]:
    # substr avoids LIKE wildcards; the range test lets the primary key index help.
    return f"{column} >= ? AND substr({column}, 1, ?) = ?", [prefix, len(prefix), prefix]


def _contains(column: str, text: str) -> tuple[str, list[object]]:
    return f"instr({column}, ?) > 0", [text]


DIALECT = Dialect(
    placeholder="?",
    instances="instances",
    to_time=to_micros,
    from_time=from_micros,
    in_list=_in_list,
    starts_with=_starts_with,
    contains=_contains,
    later=lambda micros, delta: micros + delta // _MICROSECOND,
)


def state_params(state: OrchestrationState) -> dict[str, Any]:
    """Named parameters for the instance columns of ``state``."""
    return shared_state_params(state, DIALECT)


def state_from_row(row: sqlite3.Row) -> OrchestrationState:
    """Rebuild a state from a row of the instance columns."""
    return shared_state_from_row(row, from_micros)


def locked_message_from_row(row: sqlite3.Row) -> LockedMessage:
    """Rebuild a leased message from a row of ``queries.SELECT_VISIBLE_MESSAGES``."""
    message = OrchestrationMessage(
        instance_id=row["instance_id"],
        event=event_from_json(row["event"]),
        execution_id=row["execution_id"],
        visible_at=from_micros_or_none(row["visible_at"]),
    )
    return LockedMessage(row["message_id"], message, row["dequeue_count"])
