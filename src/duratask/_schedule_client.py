"""The client's schedule operations: checked definitions in, :class:`ScheduleInfo` out.

Every change is a read, a change of the record and a write over the revision read; a change
made meanwhile (a worker firing the schedule) makes it read again. While a worker holds a
live claim on the schedule the change waits for the claim to end, so the worker's record of
what it started is not overwritten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask._registry import check_name, function_name
from duratask._schedule_codec import (
    RECENT_KEPT,
    Definition,
    RecentRun,
    State,
    definition_from_json,
    definition_to_json,
    state_from_json,
    state_to_json,
)
from duratask._schedule_plan import next_due_at, next_fire_times, run_message, start_run
from duratask._schedule_times import SlotTimes, run_instance_id, slot_text
from duratask.backends.base import OrchestrationServiceClient, ScheduleRecord
from duratask.converter import PayloadCodec, check_text
from duratask.errors import InvalidScheduleError, ScheduleNotFoundError
from duratask.schedules import (
    CatchUp,
    Overlap,
    ScheduleDescription,
    ScheduleInfo,
    ScheduleRun,
    ScheduleSpec,
)

MAX_SCHEDULE_ID_LENGTH = 200  # leaves room in run ids for "@" and the slot time
MAX_BACKFILL_SLOTS = 10_000
_CLAIM_WAIT = timedelta(seconds=60)  # longest wait for a worker's claim to end


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Leaves a field of :meth:`~duratask.AsyncTaskHubClient.update_schedule` as it is."""


def validate_schedule_id(schedule_id: str) -> str:
    """``schedule_id`` if usable, else :class:`InvalidScheduleError`."""
    if not isinstance(schedule_id, str) or not schedule_id:
        raise InvalidScheduleError(f"a schedule id must be a non-empty str, got {schedule_id!r}")
    if len(schedule_id) > MAX_SCHEDULE_ID_LENGTH:
        raise InvalidScheduleError(
            f"schedule id {schedule_id[:40]!r}... is {len(schedule_id)} characters long, over "
            f"the limit of {MAX_SCHEDULE_ID_LENGTH}"
        )
    if "@" in schedule_id or any(ord(c) < 32 or ord(c) == 127 for c in schedule_id):
        raise InvalidScheduleError(
            f"schedule id {schedule_id!r} must not contain '@' (it separates the schedule id "
            "from the slot in run ids) or control characters"
        )
    check_text(schedule_id, "a schedule id")
    return schedule_id


def _check_definition(definition: Definition) -> Definition:
    if not isinstance(definition.spec, ScheduleSpec):
        raise InvalidScheduleError(f"spec must be a ScheduleSpec, got {definition.spec!r}")
    if not isinstance(definition.overlap, Overlap):
        raise InvalidScheduleError(f"overlap must be an Overlap, got {definition.overlap!r}")
    if not isinstance(definition.catch_up, CatchUp):
        raise InvalidScheduleError(f"catch_up must be a CatchUp, got {definition.catch_up!r}")
    window = definition.catch_up_window
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise InvalidScheduleError(f"catch_up_window must be a positive timedelta, got {window!r}")
    limit = definition.run_limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidScheduleError(f"run_limit must be None or at least 1, got {limit!r}")
    try:
        check_name(definition.orchestration, "orchestration")
    except ValueError as exc:
        raise InvalidScheduleError(str(exc)) from None
    check_text(definition.version, "the orchestration version")
    return definition


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidScheduleError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


class ScheduleOperations:
    """What the clients do with schedules, over one store."""

    def __init__(
        self,
        ready: Callable[[], Awaitable[OrchestrationServiceClient]],
        codec: PayloadCodec,
        now: Callable[[], datetime],
    ) -> None:
        self._ready = ready
        self._codec = codec
        self._now = now

    def info(self, record: ScheduleRecord) -> ScheduleInfo:
        """The public view of a stored schedule."""
        definition = definition_from_json(record.definition)
        state = state_from_json(record.state)
        upcoming = next_fire_times(record.schedule_id, definition, state, 1)
        return ScheduleInfo(
            schedule_id=record.schedule_id,
            orchestration=definition.orchestration,
            version=definition.version,
            input=self._codec.decode(definition.input),
            spec=definition.spec,
            overlap=definition.overlap,
            catch_up=definition.catch_up,
            catch_up_window=definition.catch_up_window,
            run_limit=definition.run_limit,
            paused=state.paused,
            note=state.note,
            runs=state.runs,
            skipped=state.skipped,
            next_fire_at=upcoming[0] if upcoming else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    async def create(
        self,
        schedule_id: str,
        orchestration: Callable[..., Any] | str,
        spec: ScheduleSpec,
        *,
        input: Any,
        version: str | None,
        overlap: Overlap,
        catch_up: CatchUp,
        catch_up_window: timedelta,
        run_limit: int | None,
        paused: bool,
        note: str | None,
    ) -> ScheduleInfo:
        """Check and store a new schedule."""
        validate_schedule_id(schedule_id)
        name = function_name(orchestration)
        definition = _check_definition(
            Definition(
                orchestration=name,
                version=version,
                input=self._codec.encode(input, f"input of schedule {schedule_id!r}"),
                spec=spec,
                overlap=overlap,
                catch_up=catch_up,
                catch_up_window=catch_up_window,
                run_limit=run_limit,
            )
        )
        check_text(note, "a schedule note")
        now = self._now()
        state = State(cursor=now, paused=paused, note=note)
        record = ScheduleRecord(
            schedule_id=schedule_id,
            definition=definition_to_json(definition),
            state=state_to_json(state),
            next_due_at=next_due_at(schedule_id, definition, state, now),
            claimed_by=None,
            revision=1,
            created_at=now,
            updated_at=now,
        )
        store = await self._ready()
        await store.create_schedule(record)
        return self.info(record)

    async def get(self, schedule_id: str) -> ScheduleRecord:
        """The stored schedule, or :class:`ScheduleNotFoundError`."""
        validate_schedule_id(schedule_id)
        store = await self._ready()
        record = await store.get_schedule(schedule_id)
        if record is None:
            raise ScheduleNotFoundError(schedule_id)
        return record

    async def describe(self, schedule_id: str, runs: int, fire_times: int) -> ScheduleDescription:
        """The schedule, its recent runs with their status now, and its next fire times."""
        record = await self.get(schedule_id)
        store = await self._ready()
        state = state_from_json(record.state)
        recent: list[ScheduleRun] = []
        for run in reversed(state.recent[-runs:] if runs > 0 else ()):
            status = None
            if run.kind != "skipped":
                found = await store.get_instance(run.instance_id)
                status = found.runtime_status if found is not None else None
            recent.append(ScheduleRun(run.instance_id, run.slot, run.kind, status))
        definition = definition_from_json(record.definition)
        upcoming = next_fire_times(schedule_id, definition, state, fire_times)
        return ScheduleDescription(self.info(record), recent, upcoming)

    async def list_all(self, prefix: str | None) -> list[ScheduleInfo]:
        """Every schedule (whose id starts with ``prefix``), by id."""
        store = await self._ready()
        return [self.info(r) for r in await store.list_schedules(prefix)]

    async def modify(
        self,
        schedule_id: str,
        change: Callable[[Definition, State, datetime], tuple[Definition, State]],
    ) -> ScheduleRecord:
        """Apply ``change`` to the stored schedule, over its revision; the record written."""
        store = await self._ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CLAIM_WAIT.total_seconds()
        delay = 0.001
        while True:
            record = await self.get(schedule_id)
            now = self._now()
            claimed = record.claimed_by is not None and (
                record.next_due_at is not None and record.next_due_at > now
            )
            if claimed and loop.time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            definition, state = change(
                definition_from_json(record.definition), state_from_json(record.state), now
            )
            written = replace(
                record,
                definition=definition_to_json(definition),
                state=state_to_json(state),
                next_due_at=next_due_at(schedule_id, definition, state, now),
                claimed_by=None,
                updated_at=now,
            )
            if await store.update_schedule(written):
                return replace(written, revision=record.revision + 1)

    async def update(self, schedule_id: str, changes: dict[str, Any]) -> ScheduleInfo:
        """Replace the given fields of the definition; slots before now are not caught up."""
        fields = {k: v for k, v in changes.items() if v is not UNSET}
        if "orchestration" in fields:
            fields["orchestration"] = function_name(fields["orchestration"])
        if "input" in fields:
            fields["input"] = self._codec.encode(
                fields["input"], f"input of schedule {schedule_id!r}"
            )

        def change(definition: Definition, state: State, now: datetime) -> tuple[Definition, State]:
            updated = _check_definition(replace(definition, **fields))
            return updated, replace(state, cursor=max(state.cursor, now))

        return self.info(await self.modify(schedule_id, change))

    async def pause(self, schedule_id: str, paused: bool, note: str | None) -> ScheduleInfo:
        """Pause or resume; slots reached while paused are skipped."""
        check_text(note, "a schedule note")

        def change(definition: Definition, state: State, now: datetime) -> tuple[Definition, State]:
            cursor = state.cursor if paused else max(state.cursor, now)
            return definition, replace(state, paused=paused, note=note, cursor=cursor)

        return self.info(await self.modify(schedule_id, change))

    async def trigger(self, schedule_id: str) -> str:
        """Start a run now, outside the calendar; its id."""
        record = await self.get(schedule_id)
        definition = definition_from_json(record.definition)
        now = self._now()
        run_id = f"{schedule_id}@{slot_text(now)}-manual"
        store = await self._ready()
        await start_run(store, run_message(schedule_id, definition, now, now, run_id))

        def change(definition: Definition, state: State, _: datetime) -> tuple[Definition, State]:
            state = replace(state, last_run=run_id)
            return definition, state.remember(RecentRun(run_id, now, "triggered"))

        await self.modify(schedule_id, change)
        return run_id

    async def backfill(self, schedule_id: str, start: datetime, end: datetime) -> list[str]:
        """Start the runs of the slots in ``[start, end]`` that have none; their ids."""
        first, last = _aware(start, "start"), _aware(end, "end")
        if last < first:
            raise InvalidScheduleError(
                f"backfill end ({last.isoformat()}) is before its start ({first.isoformat()})"
            )
        record = await self.get(schedule_id)
        definition = definition_from_json(record.definition)
        slots = []
        for slot in SlotTimes(definition.spec).between(first, last):
            slots.append(slot)
            if len(slots) > MAX_BACKFILL_SLOTS:
                raise InvalidScheduleError(
                    f"the range holds more than {MAX_BACKFILL_SLOTS} slots; backfill it in parts"
                )
        store = await self._ready()
        now = self._now()
        started: list[RecentRun] = []
        for slot in slots:
            run_id = run_instance_id(schedule_id, slot)
            if await start_run(store, run_message(schedule_id, definition, slot, now, run_id)):
                started.append(RecentRun(run_id, slot, "backfill"))

        def change(definition: Definition, state: State, _: datetime) -> tuple[Definition, State]:
            for run in started[-RECENT_KEPT:]:
                state = state.remember(run)
            return definition, state

        if started:
            await self.modify(schedule_id, change)
        return [run.instance_id for run in started]

    async def delete(self, schedule_id: str) -> None:
        """Delete the schedule (its runs stay)."""
        validate_schedule_id(schedule_id)
        store = await self._ready()
        if not await store.delete_schedule(schedule_id):
            raise ScheduleNotFoundError(schedule_id)
