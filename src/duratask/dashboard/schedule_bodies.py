"""The bodies of ``POST /api/schedules/{id}`` (create) and ``PATCH /api/schedules/{id}``
(update), validated with pydantic: the definition part of the schedule JSON that
:mod:`duratask._schedules_json` writes (durations in seconds, times ISO 8601 with an offset).

A body that does not fit is refused with a 400 naming each field that is wrong; one that
fits but cannot work (an invalid cron expression, an unknown time zone, an end before the
start) is refused by the client with :class:`~duratask.errors.InvalidScheduleError`, a 400
too. Either way nothing is stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from duratask.dashboard.errors import HttpError
from duratask.dashboard.spec import MAX_TEXT
from duratask.schedules import CatchUp, Interval, Overlap, ScheduleSpec

# Durations beyond a century are surely mistakes (and would overflow timedelta far later).
_MAX_SECONDS = 100 * 366 * 86400.0
_NULLABLE_IN_CHANGES = frozenset({"input", "version", "run_limit"})


_M = TypeVar("_M", bound="_Body")


def _seconds(**constraints: Any) -> Any:
    return Field(allow_inf_nan=False, le=_MAX_SECONDS, **constraints)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleIntervalDefinition(_Body):
    """A fixed interval: a slot every ``every_s`` seconds, shifted by ``offset_s``."""

    every_s: float = _seconds(gt=0, description="The interval, in seconds.")
    offset_s: float = _seconds(default=0.0, ge=0, description="Where in it the slot falls.")


class ScheduleSpecDefinition(_Body):
    """When a schedule fires: cron expressions and/or intervals, within optional bounds."""

    cron: list[str] = Field(default_factory=list, max_length=100)
    intervals: list[ScheduleIntervalDefinition] = Field(default_factory=list, max_length=100)
    time_zone: str = Field(default="UTC", max_length=MAX_TEXT)
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    jitter_s: float = _seconds(default=0.0, ge=0)

    def to_spec(self) -> ScheduleSpec:
        """The client's :class:`~duratask.ScheduleSpec` (checked there)."""
        return ScheduleSpec(
            cron=tuple(self.cron),
            intervals=[
                Interval(timedelta(seconds=i.every_s), timedelta(seconds=i.offset_s))
                for i in self.intervals
            ],
            time_zone=self.time_zone,
            start_at=self.start_at,
            end_at=self.end_at,
            jitter=timedelta(seconds=self.jitter_s),
        )


class ScheduleDefinition(_Body):
    """A new schedule: what it starts, when, and its policies (as the CLI's options)."""

    orchestration: str = Field(min_length=1, max_length=MAX_TEXT)
    spec: ScheduleSpecDefinition
    input: Any = Field(default=None, description="Each run's input: any JSON value.")
    version: str | None = Field(default=None, max_length=MAX_TEXT)
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.WINDOW
    catch_up_window_s: float = _seconds(default=86400.0, gt=0)
    run_limit: int | None = Field(default=None, ge=1, le=2**31)
    paused: bool = False
    note: str | None = Field(default=None, max_length=MAX_TEXT)

    def create_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``create_schedule`` after the id."""
        return {
            "orchestration": self.orchestration,
            "spec": self.spec.to_spec(),
            "input": self.input,
            "version": self.version,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
            "catch_up_window": timedelta(seconds=self.catch_up_window_s),
            "run_limit": self.run_limit,
            "paused": self.paused,
            "note": self.note,
        }


class ScheduleChange(_Body):
    """A change to a schedule: only the fields given change (``input``, ``version`` and
    ``run_limit`` may be null: no input, no version, no limit). Pausing and resuming have
    routes of their own."""

    orchestration: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    spec: ScheduleSpecDefinition | None = None
    input: Any = Field(default=None, description="Each run's input: any JSON value.")
    version: str | None = Field(default=None, max_length=MAX_TEXT)
    overlap: Overlap | None = None
    catch_up: CatchUp | None = None
    catch_up_window_s: float | None = _seconds(default=None, gt=0)
    run_limit: int | None = Field(default=None, ge=1, le=2**31)

    def update_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``update_schedule`` after the id: the fields given."""
        given = self.model_fields_set
        if not given:
            raise HttpError(400, "invalid_schedule", "the change names no field to change")
        nulls = sorted(
            name
            for name in given
            if getattr(self, name) is None and name not in _NULLABLE_IN_CHANGES
        )
        if nulls:
            raise HttpError(
                400,
                "invalid_schedule",
                f"{', '.join(nulls)}: may not be null (leave a field out to keep it)",
            )
        changes: dict[str, Any] = {name: getattr(self, name) for name in given}
        if self.spec is not None and "spec" in given:
            changes["spec"] = self.spec.to_spec()
        if self.catch_up_window_s is not None and "catch_up_window_s" in given:
            del changes["catch_up_window_s"]
            changes["catch_up_window"] = timedelta(seconds=self.catch_up_window_s)
        return changes


def parse_body(model: type[_M], body: Any) -> _M:
    """``body`` (parsed JSON) validated as ``model``; a 400 naming what is wrong otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'the body'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise HttpError(400, "invalid_schedule", f"invalid schedule body: {shown}") from None


def body_schemas() -> dict[str, Any]:
    """The OpenAPI component schemas of the bodies (and of what they refer to)."""
    schemas: dict[str, Any] = {}
    for model in (ScheduleDefinition, ScheduleChange):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
