"""Keyset paging of instance queries: a page ends at its last row's sort key, and the
continuation token carries that key (opaque to callers, base64 of JSON).

A token of the default order (created, oldest first) keeps the original two-value form, so
tokens handed out before other orders existed still work.

SQL stores resume a page with ``(column, instance_id) > (value, id)`` (``<`` descending) and
order by the same pair. By creation and by last update, that pair is an index
(``instances_by_created_at``, ``instances_by_last_updated_at``), so a page reads only its own
rows however deep it is: the list newest-updated first holds with many instances.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from duratask.backends._shared import as_utc
from duratask.backends.base import (
    InstanceQuery,
    InstanceSort,
    QueryPage,
    decode_continuation_token,
    encode_continuation_token,
)
from duratask.state import OrchestrationState

SortValue = datetime | str
_TIME_SORTS = (InstanceSort.CREATED, InstanceSort.LAST_UPDATED)


def sort_value(state: OrchestrationState, sort: InstanceSort) -> SortValue:
    """The value ``state`` is ordered by under ``sort``."""
    if sort is InstanceSort.CREATED:
        return state.created_at
    if sort is InstanceSort.LAST_UPDATED:
        return state.last_updated_at
    if sort is InstanceSort.STATUS:
        return state.runtime_status.value
    return state.name


def _is_default(query: InstanceQuery) -> bool:
    return query.sort is InstanceSort.CREATED and not query.descending


def next_token(query: InstanceQuery, last: OrchestrationState) -> str:
    """The token that resumes ``query`` after ``last``, the final row of a full page."""
    if _is_default(query):
        return encode_continuation_token(last.created_at, last.instance_id)
    value = sort_value(last, query.sort)
    key = value.isoformat() if isinstance(value, datetime) else value
    direction = "desc" if query.descending else "asc"
    raw = json.dumps([query.sort.value, direction, key, last.instance_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def resume_after(query: InstanceQuery) -> tuple[SortValue, str] | None:
    """The (sort value, instance id) ``query``'s token resumes after (None: first page);
    ValueError naming what is wrong with a malformed token or one of another order."""
    token = query.continuation_token
    if token is None:
        return None
    value: SortValue
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
        if len(fields) == 2:  # the default order's form
            created, instance_id = decode_continuation_token(token)
            order, direction, value = InstanceSort.CREATED, "asc", _utc(created, token)
        else:
            sort, direction, key, instance_id = fields
            order = InstanceSort(sort)
            if direction not in ("asc", "desc"):
                raise ValueError(direction)
            value = _utc(datetime.fromisoformat(key), token) if order in _TIME_SORTS else str(key)
    except (ValueError, TypeError) as exc:
        if "out of range" in str(exc):
            raise
        raise ValueError(
            f"malformed continuation token {token!r}: pass back the token a page returned, "
            "with the same sort and direction"
        ) from exc
    if order is not query.sort or direction != ("desc" if query.descending else "asc"):
        raise ValueError(
            f"continuation token {token!r} belongs to a query sorted by {order.value} "
            f"({'descending' if direction == 'desc' else 'ascending'}): pass it back with "
            "that sort and direction"
        )
    return value, str(instance_id)


def _utc(value: datetime, token: str) -> datetime:
    try:
        return as_utc(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(
            f"malformed continuation token {token!r}: its time {value.isoformat()} is out of "
            "range (pass back the token a page returned)"
        ) from exc


def page_in_memory(
    query: InstanceQuery,
    states: Iterable[OrchestrationState],
    matches: Callable[[OrchestrationState], bool],
) -> QueryPage:
    """The page of ``states`` that ``query`` asks for, for stores that filter and sort in
    Python: those ``matches`` keeps, in the query's order (ties by instance id), after the
    continuation token's row."""
    after = resume_after(query)

    def key(s: OrchestrationState) -> tuple[Any, str]:
        return (sort_value(s, query.sort), s.instance_id)

    def beyond(s: OrchestrationState) -> bool:
        if after is None:
            return True
        return key(s) < after if query.descending else key(s) > after

    rows = sorted(
        (s for s in states if matches(s) and beyond(s)), key=key, reverse=query.descending
    )
    page, token = page_of(query, rows[: query.page_size + 1])
    return QueryPage(states=page, continuation_token=token)


def page_of(query: InstanceQuery, rows: list[OrchestrationState]) -> tuple[list[Any], str | None]:
    """Cut ``rows`` (up to ``page_size + 1`` in order) to a page and its next token."""
    page = rows[: query.page_size]
    token = next_token(query, page[-1]) if len(rows) > query.page_size else None
    return page, token
