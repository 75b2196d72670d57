"""Schedules: one row each in the Schedules table, updated under its ETag."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from duratask.backends._shared import as_utc
from duratask.backends._wakeups import SCHEDULE
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._core import StoreCore
from duratask.backends.azure._rows import (
    Row,
    _etag,
    _if_match,
)
from duratask.backends.base import ScheduleRecord
from duratask.errors import ScheduleAlreadyExistsError

_REUSE_READ = 0.5  # seconds a read of the schedules serves the next question of when one is due


class ScheduleStore(StoreCore):
    """Schedules."""

    # The last read of the schedules in which none was due, and when (monotonic seconds).
    _schedules_read: tuple[float, list[ScheduleRecord]] | None = None

    def _schedule_row(self, record: ScheduleRecord) -> Row:
        return {
            "PartitionKey": "schedule",
            "RowKey": codec.table_key(record.schedule_id),
            "Id": record.schedule_id,
            "Definition": record.definition,
            "State": record.state,
            "Due": codec.opt_text(record.next_due_at),
            "ClaimedBy": record.claimed_by or "",
            "Revision": record.revision,
            "Created": codec.to_text(record.created_at),
            "Updated": codec.to_text(record.updated_at),
        }

    @staticmethod
    def _schedule(row: Any) -> ScheduleRecord:
        return ScheduleRecord(
            schedule_id=row["Id"],
            definition=row["Definition"],
            state=row["State"],
            next_due_at=codec.opt_time(row["Due"]),
            claimed_by=row["ClaimedBy"] or None,
            revision=int(row["Revision"]),
            created_at=codec.from_text(row["Created"]),
            updated_at=codec.from_text(row["Updated"]),
        )

    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""
        try:
            await self._table("schedules").create_entity(self._schedule_row(record))
        except ResourceExistsError:
            raise ScheduleAlreadyExistsError(record.schedule_id) from None
        self._changed([SCHEDULE])

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""
        row = await self._get("schedules", "schedule", codec.table_key(schedule_id))
        return None if row is None else self._schedule(row)

    async def _schedules(self) -> list[ScheduleRecord]:
        rows = await self._query("schedules", "PartitionKey eq @pk", {"pk": "schedule"})
        return [self._schedule(row) for row in rows]

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules whose id starts with ``prefix``, by id."""
        found = [r for r in await self._schedules() if r.schedule_id.startswith(prefix or "")]
        return sorted(found, key=lambda r: r.schedule_id)

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write the schedule if its stored revision is still ``record.revision`` (a write
        conditional on the row's ETag)."""
        row = await self._get("schedules", "schedule", codec.table_key(record.schedule_id))
        if row is None or int(row["Revision"]) != record.revision:
            return False
        updated = self._schedule_row(dataclasses.replace(record, revision=record.revision + 1))
        try:
            await self._table("schedules").update_entity(
                updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
            )
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return False
            raise
        self._changed([SCHEDULE])
        return True

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        if await self.get_schedule(schedule_id) is None:
            return False
        try:
            await self._table("schedules").delete_entity("schedule", codec.table_key(schedule_id))
        except ResourceNotFoundError:
            return False
        self._changed([SCHEDULE])
        return True

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules due at ``now``, soonest first."""
        now = as_utc(now)
        records = await self._schedules()
        due = [r for r in records if r.next_due_at is not None and r.next_due_at <= now]
        due.sort(key=lambda r: (r.next_due_at, r.schedule_id))
        if not due:  # what the next call of next_schedule_due_at may reuse
            self._schedules_read = (time.monotonic(), records)
        return due[:limit]

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest time a schedule is due (the schedules a look that found none due
        read a moment ago, else read now: a poll for due schedules costs one request)."""
        read, self._schedules_read = self._schedules_read, None
        if read is not None and time.monotonic() - read[0] < _REUSE_READ:
            records = read[1]
        else:
            records = await self._schedules()
        times = [r.next_due_at for r in records if r.next_due_at is not None]
        return min(times, default=None)
