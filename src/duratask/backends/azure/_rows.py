"""Rows of the History table and the small helpers every part of the Azure store uses:
the conditions of a conditional write, the rows of one instance's partition, limits."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from duratask.backends._shared import as_utc
from duratask.backends.base import OrchestrationMessage

_LOG = logging.getLogger("duratask.backends.azure")

_BATCH = 100  # rows one entity-group transaction may hold
_BATCH_BYTES = 3_000_000  # below the 4 MiB a transaction may carry
_SCAN_CANDIDATES = 16  # instances one lock attempt tries at most
_SWEEP_EVERY = 1.0  # seconds between two reads of the rows for work, while hints are quiet
_MAX_HINT_DELAY = 6 * 24 * 3600  # below the 7 days a queue message may stay hidden
_RETRIES = 20  # reads and conditional writes of one row before giving up
_REMEMBERED_ROWS = 50_000  # rows (with their ETags) a store object keeps in mind at most
_HINT_HIDDEN = 30  # seconds a hint read by one worker is hidden from the others


Row = dict[str, Any]


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


class _Stale(Exception):
    """A remembered row was no longer current: read it and try again."""


@dataclass(slots=True)
class _Partition:
    """The rows of one instance's partition a worker reads: sentinel, inbox and outbox."""

    sentinel: Row | None
    etag: str
    messages: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)


_REPLACE = {"mode": UpdateMode.REPLACE}


def _if_match(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def _size(ops: Sequence[tuple[Any, ...]]) -> int:
    return sum(len(v) * 2 if isinstance(v, str) else 8 for op in ops for v in op[1].values())


async def _ignore_missing(call: Any) -> None:
    try:
        await call
    except ResourceNotFoundError:
        pass


def _normalized_message(message: OrchestrationMessage) -> OrchestrationMessage:
    if message.visible_at is None:
        return message
    return dataclasses.replace(message, visible_at=as_utc(message.visible_at))
