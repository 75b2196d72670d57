"""What a schedule does when a worker looks at it: which slots are due, which run and which
are skipped (catch-up and overlap policies), what starts them, and when to look again.

Starting a run is idempotent (its id is fixed by the schedule and the slot, and the store
refuses a second instance of an id), so a slot whose run started before a crash is found and
counted, never started twice. Every decision is written with the schedule's revision: a
worker that lost its claim writes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from duratask._schedule_codec import Definition, RecentRun, State
from duratask._schedule_times import SlotTimes, jitter_delay, run_instance_id, slot_text
from duratask.backends.base import (
    OrchestrationMessage,
    OrchestrationServiceClient,
    TaskHubStore,
)
from duratask.errors import OrchestrationAlreadyExistsError
from duratask.history import ExecutionStarted, ExecutionTerminated
from duratask.schedules import SCHEDULE_TAG, SLOT_TAG, CatchUp, Overlap

ON_TIME = timedelta(minutes=1)  # how late a slot may be reached and not count as missed
MAX_SLOTS_PER_LOOK = 100  # slots one look deals with; the rest are due at once after
MAX_RECHECK = timedelta(seconds=60)  # longest wait between looks at a buffered slot's run


def run_message(
    schedule_id: str, definition: Definition, slot: datetime, now: datetime, instance_id: str
) -> OrchestrationMessage:
    """The start of the run ``instance_id`` for ``slot``."""
    event = ExecutionStarted(
        timestamp=now,
        name=definition.orchestration,
        version=definition.version,
        input=definition.input,
        instance_id=instance_id,
        execution_id=uuid.uuid4().hex,
        tags={SCHEDULE_TAG: schedule_id, SLOT_TAG: slot_text(slot)},
    )
    return OrchestrationMessage(instance_id, event)


async def start_run(store: OrchestrationServiceClient, message: OrchestrationMessage) -> bool:
    """Create the run; False if it already exists (started before, perhaps by another worker)."""
    try:
        await store.create_instance(message, replaceable=frozenset())
    except OrchestrationAlreadyExistsError:
        return False
    return True


def limit_reached(definition: Definition, state: State) -> bool:
    """Whether the schedule started all the runs it may."""
    return definition.run_limit is not None and state.runs >= definition.run_limit


def due_time(schedule_id: str, definition: Definition, slot: datetime) -> datetime:
    """When ``slot`` starts: the slot plus its jitter."""
    return slot + jitter_delay(schedule_id, slot, definition.spec.jitter)


def next_due_at(
    schedule_id: str, definition: Definition, state: State, now: datetime
) -> datetime | None:
    """When a worker must look at the schedule next (None: not until it changes)."""
    if state.paused:
        return None
    due: datetime | None = None
    if not limit_reached(definition, state):
        slot = SlotTimes(definition.spec).after(state.cursor)
        if slot is not None:
            try:
                due = due_time(schedule_id, definition, slot)
            except OverflowError:  # its jitter takes it beyond year 9999: it never comes
                due = None
    if state.buffered is not None:
        recheck = now + state.recheck
        due = recheck if due is None else min(due, recheck)
    return due


def next_fire_times(
    schedule_id: str, definition: Definition, state: State, count: int
) -> list[datetime]:
    """The next ``count`` times a slot starts (within the run limit), soonest first."""
    if state.paused or count <= 0:
        return []
    left = None if definition.run_limit is None else max(0, definition.run_limit - state.runs)
    times: list[datetime] = []
    slots = SlotTimes(definition.spec)
    slot = slots.after(state.cursor)
    while slot is not None and len(times) < count and (left is None or len(times) < left):
        try:
            times.append(due_time(schedule_id, definition, slot))
        except OverflowError:  # its jitter takes it beyond year 9999: it never comes
            break
        slot = slots.after(slot)
    return times


class Look:
    """One worker's look at one claimed schedule at ``now``: runs what is due and returns the
    new state."""

    def __init__(
        self,
        store: TaskHubStore,
        schedule_id: str,
        definition: Definition,
        state: State,
        now: datetime,
    ) -> None:
        self.store = store
        self.schedule_id = schedule_id
        self.definition = definition
        self.state = state
        self.now = now
        self.started: list[str] = []
        self.slots = SlotTimes(definition.spec)

    def _is_due(self, slot: datetime) -> bool:
        return due_time(self.schedule_id, self.definition, slot) <= self.now

    def due_slots(self) -> list[datetime]:
        """The due slots to deal with, in order, after the catch-up policy dropped the missed
        ones it does not run."""
        state, definition, now = self.state, self.definition, self.now
        if definition.catch_up is CatchUp.WINDOW:
            due: list[datetime] = []
            slot = self.slots.after(max(state.cursor, now - definition.catch_up_window))
            while slot is not None and self._is_due(slot) and len(due) < MAX_SLOTS_PER_LOOK:
                due.append(slot)
                slot = self.slots.after(slot)
            return due
        latest = self.slots.at_or_before(now)
        while latest is not None and latest > state.cursor and not self._is_due(latest):
            latest = self.slots.at_or_before(latest - timedelta(microseconds=1))
        if latest is None or latest <= state.cursor:
            return []
        late = now - due_time(self.schedule_id, definition, latest)
        if definition.catch_up is CatchUp.NONE and late > ON_TIME:
            self._advance_cursor(latest)  # missed: dropped, not run
            return []
        return [latest]

    async def run(self) -> State:
        """Deal with the buffered slot and the due slots; the state to write."""
        await self._start_buffered()
        due = self.due_slots()
        for slot in due:
            if limit_reached(self.definition, self.state):
                break
            await self._fire(slot)
        if self.definition.catch_up is CatchUp.WINDOW and len(due) < MAX_SLOTS_PER_LOOK:
            self._advance_cursor(self._settled_until())
        return self.state

    def _settled_until(self) -> datetime:
        """The time up to which every slot is dealt with: now, unless a slot at or before now
        still waits for its jitter."""
        start = max(self.state.cursor, self.now - self.definition.catch_up_window)
        slot = self.slots.after(start)
        while slot is not None and slot <= self.now:
            if not self._is_due(slot):
                return slot - timedelta(microseconds=1)
            slot = self.slots.after(slot)
        return self.now

    def _advance_cursor(self, cursor: datetime) -> None:
        if cursor > self.state.cursor:
            self.state = replace(self.state, cursor=cursor)

    def _skip(self, slot: datetime) -> None:
        run_id = run_instance_id(self.schedule_id, slot)
        self.state = replace(self.state, skipped=self.state.skipped + 1, cursor=slot).remember(
            RecentRun(run_id, slot, "skipped")
        )

    async def _previous_running(self) -> bool:
        last = self.state.last_run
        if last is None:
            return False
        previous = await self.store.get_instance(last)
        return previous is not None and not previous.runtime_status.is_terminal

    async def _start(self, slot: datetime, *, counted: bool) -> None:
        run_id = run_instance_id(self.schedule_id, slot)
        message = run_message(self.schedule_id, self.definition, slot, self.now, run_id)
        if await start_run(self.store, message):
            self.started.append(run_id)
        self.state = replace(
            self.state, last_run=run_id, runs=self.state.runs + (1 if counted else 0)
        ).remember(RecentRun(run_id, slot, "scheduled"))

    async def _start_buffered(self) -> None:
        buffered = self.state.buffered
        if buffered is None:
            return
        if await self._previous_running():
            recheck = min(self.state.recheck * 2, MAX_RECHECK)
            self.state = replace(self.state, recheck=recheck)
            return
        self.state = replace(self.state, buffered=None, recheck=timedelta(seconds=1))
        await self._start(buffered, counted=True)

    async def _fire(self, slot: datetime) -> None:
        self._advance_cursor(slot)
        run_id = run_instance_id(self.schedule_id, slot)
        if await self.store.get_instance(run_id) is not None:
            # Started by a look that did not get to record it (a crash, a lost claim).
            self.state = replace(self.state, last_run=run_id, runs=self.state.runs + 1)
            self.state = self.state.remember(RecentRun(run_id, slot, "scheduled"))
            return
        overlap = self.definition.overlap
        if overlap is not Overlap.ALLOW_ALL and await self._previous_running():
            if overlap is Overlap.SKIP:
                self._skip(slot)
                return
            if overlap is Overlap.BUFFER_ONE:
                if self.state.buffered is None:
                    self.state = replace(self.state, buffered=slot, recheck=timedelta(seconds=1))
                else:
                    self._skip(slot)
                return
            assert self.state.last_run is not None
            terminate = ExecutionTerminated(timestamp=self.now, input=None, recurse=True)
            await self.store.send_message(OrchestrationMessage(self.state.last_run, terminate))
        await self._start(slot, counted=True)
