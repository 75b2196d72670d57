"""A schedule's definition and state as the JSON a store keeps (never pickled), and back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from duratask.schedules import CatchUp, Interval, Overlap, ScheduleSpec

RECENT_KEPT = 20  # runs and skipped slots a schedule remembers, newest last


@dataclass(frozen=True, slots=True)
class Definition:
    """What a schedule starts and when (the stored ``definition``)."""

    orchestration: str
    version: str | None
    input: str | None  # as encoded by the client's converter
    spec: ScheduleSpec
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.WINDOW
    catch_up_window: timedelta = timedelta(days=1)
    run_limit: int | None = None


@dataclass(frozen=True, slots=True)
class RecentRun:
    """A run started, or a slot skipped: (instance id, slot, kind)."""

    instance_id: str
    slot: datetime
    kind: str


@dataclass(frozen=True, slots=True)
class State:
    """Where a schedule's firing stands (the stored ``state``).

    ``cursor``: every slot at or before it has been dealt with (run or skipped).
    ``last_run``: the run the overlap policy looks at. ``buffered``: a slot waiting for
    ``last_run`` to end (``Overlap.BUFFER_ONE``), looked at again after ``recheck``.
    """

    cursor: datetime
    paused: bool = False
    note: str | None = None
    runs: int = 0
    skipped: int = 0
    last_run: str | None = None
    buffered: datetime | None = None
    recheck: timedelta = timedelta(seconds=1)
    recent: tuple[RecentRun, ...] = field(default_factory=tuple)

    def remember(self, run: RecentRun) -> State:
        """This state with ``run`` added to the recent ones."""
        return replace(self, recent=(*self.recent, run)[-RECENT_KEPT:])


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).astimezone(UTC)


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _delta(us: int) -> timedelta:
    return timedelta(microseconds=us)


def spec_to_json(spec: ScheduleSpec) -> dict[str, Any]:
    """A spec as JSON-ready values."""
    return {
        "cron": list(spec.cron),
        "intervals": [[_us(i.every), _us(i.offset)] for i in spec.intervals],
        "time_zone": spec.time_zone,
        "start_at": _time(spec.start_at),
        "end_at": _time(spec.end_at),
        "jitter_us": _us(spec.jitter),
    }


def spec_from_json(data: dict[str, Any]) -> ScheduleSpec:
    """Inverse of :func:`spec_to_json`."""
    return ScheduleSpec(
        cron=tuple(data["cron"]),
        intervals=tuple(Interval(_delta(e), _delta(o)) for e, o in data["intervals"]),
        time_zone=data["time_zone"],
        start_at=_parse_time(data["start_at"]),
        end_at=_parse_time(data["end_at"]),
        jitter=_delta(data["jitter_us"]),
    )


def definition_to_json(definition: Definition) -> str:
    """The stored text of a definition."""
    return json.dumps(
        {
            "orchestration": definition.orchestration,
            "version": definition.version,
            "input": definition.input,
            "spec": spec_to_json(definition.spec),
            "overlap": definition.overlap.value,
            "catch_up": definition.catch_up.value,
            "catch_up_window_us": _us(definition.catch_up_window),
            "run_limit": definition.run_limit,
        },
        separators=(",", ":"),
    )


def definition_from_json(text: str) -> Definition:
    """Inverse of :func:`definition_to_json`."""
    data = json.loads(text)
    return Definition(
        orchestration=data["orchestration"],
        version=data["version"],
        input=data["input"],
        spec=spec_from_json(data["spec"]),
        overlap=Overlap(data["overlap"]),
        catch_up=CatchUp(data["catch_up"]),
        catch_up_window=_delta(data["catch_up_window_us"]),
        run_limit=data["run_limit"],
    )


def state_to_json(state: State) -> str:
    """The stored text of a state."""
    return json.dumps(
        {
            "cursor": _time(state.cursor),
            "paused": state.paused,
            "note": state.note,
            "runs": state.runs,
            "skipped": state.skipped,
            "last_run": state.last_run,
            "buffered": _time(state.buffered),
            "recheck_us": _us(state.recheck),
            "recent": [[r.instance_id, _time(r.slot), r.kind] for r in state.recent],
        },
        separators=(",", ":"),
    )


def state_from_json(text: str) -> State:
    """Inverse of :func:`state_to_json`."""
    data = json.loads(text)
    cursor = _parse_time(data["cursor"])
    assert cursor is not None
    return State(
        cursor=cursor,
        paused=data["paused"],
        note=data["note"],
        runs=data["runs"],
        skipped=data["skipped"],
        last_run=data["last_run"],
        buffered=_parse_time(data["buffered"]),
        recheck=_delta(data["recheck_us"]),
        recent=tuple(
            RecentRun(run_id, _parse_time(slot) or cursor, kind)
            for run_id, slot, kind in data["recent"]
        ),
    )
