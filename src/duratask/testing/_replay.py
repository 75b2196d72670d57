"""Replay recorded histories against new orchestration code, before deploying it.

A running instance is resumed by replaying its history with whatever code the worker has
then. :func:`replay` does the same with the pure replay engine (no store, no worker, no
activity runs: results come from the history) and reports where the new code would take a
different step than the one recorded, as :class:`HistoryMismatchError`, a
:class:`~duratask.NonDeterminismError`. Export a history with ``duratask history ID
--output json`` (or :func:`duratask.history.history_to_json`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duratask import _actions as act
from duratask import history as h
from duratask._engine import OrchestrationCursor, OrchestrationExecutor, rewound_view
from duratask._registry import Registry, function_name
from duratask.converter import DataConverter, PayloadCodec
from duratask.errors import NonDeterminismError
from duratask.state import FailureDetails, OrchestrationStatus, decode_payload
from duratask.testing._history_input import (
    HistorySource,
    InvalidHistoryError,
    history_sources,
    load_history,
    require_start,
)

__all__ = [
    "HistoryMismatchError",
    "InvalidHistoryError",
    "ReplayFailedError",
    "ReplayResult",
    "describe_action",
    "replay",
    "replay_many",
]

Functions = Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]]

_SCHEDULING_EVENTS: dict[type[h.HistoryEvent], type[Any]] = {
    h.TaskScheduled: act.ScheduleTaskAction,
    h.TimerCreated: act.CreateTimerAction,
    h.SubOrchestrationInstanceCreated: act.CreateSubOrchestrationAction,
    h.EventSent: act.SendEventAction,
}


class HistoryMismatchError(NonDeterminismError):
    """The code took a different step than the history records.

    ``position`` is the index (in the history given) of the event where they parted, or None
    when the difference shows only at the end of the history; ``event`` is that event.

    Attributes:
        detail: What differs, in words, without the position.
        instance_id: The id of the instance the history was recorded for.
        position: The index of the event where the code and the history part, if known.
        event: The history event at ``position``, if known.
        source: Where the history came from (its file), when it was read from one.
    """

    def __init__(
        self,
        detail: str,
        *,
        instance_id: str,
        position: int | None = None,
        event: h.HistoryEvent | None = None,
        source: str | None = None,
    ) -> None:
        where = f" (history event #{position}: {describe_event(event)})" if event else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{detail}{where}")
        self.detail = detail
        self.instance_id = instance_id
        self.position = position
        self.event = event
        self.source = source


class ReplayFailedError(NonDeterminismError):
    """:func:`replay_many` found histories the code no longer replays; see ``mismatches``.

    Attributes:
        mismatches: One error per history that does not replay.
    """

    def __init__(self, mismatches: list[HistoryMismatchError], total: int) -> None:
        lines = "\n".join(f"  - {m}" for m in mismatches)
        super().__init__(f"{len(mismatches)} of {total} histories do not replay:\n{lines}")
        self.mismatches = mismatches


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Where the code got to at the end of a history that it replayed without a mismatch.

    ``status`` is RUNNING (or SUSPENDED) when the code still waits at the end of the history,
    else how the code ended the execution. ``next_actions`` is what the code would do next
    that the history does not record yet (empty for a history that ended).

    Attributes:
        instance_id: The id of the instance the history was recorded for.
        name: The orchestration name the history records.
        version: The orchestration version the history records.
        status: Where the code is at the end of the history (see above).
        serialized_output: The output as JSON text, if the code completed.
        failure: Why the code failed, if it did.
        serialized_custom_status: The custom status the code set, as JSON text.
        next_actions: The steps the code would take next (see :attr:`next_steps`).
        events_replayed: How many history events were replayed.
        source: Where the history came from (its file), when it was read from one.
        converter: The data converter the decoding properties use (None: plain JSON).
    """

    instance_id: str
    name: str
    version: str | None
    status: OrchestrationStatus
    serialized_output: str | None
    failure: FailureDetails | None
    serialized_custom_status: str | None
    next_actions: tuple[act.OrchestratorAction, ...]
    events_replayed: int
    source: str | None = None
    converter: DataConverter | None = field(default=None, compare=False, repr=False)

    def _decode(self, text: str | None) -> Any:
        return decode_payload(text, self.converter)

    @property
    def output(self) -> Any:
        """The decoded output (plain JSON values) if the code completed."""
        return self._decode(self.serialized_output)

    @property
    def custom_status(self) -> Any:
        """The decoded custom status the code set, if any."""
        return self._decode(self.serialized_custom_status)

    @property
    def next_steps(self) -> list[str]:
        """``next_actions`` in words, e.g. ``["call activity 'ship'"]``."""
        return [describe_action(a) for a in self.next_actions]


def replay(
    orchestration: Callable[..., Any],
    history: HistorySource,
    *,
    activities: Functions = (),
    orchestrations: Functions = (),
    data_converter: DataConverter | None = None,
    source: str | None = None,
) -> ReplayResult:
    """Replay ``history`` with ``orchestration`` (the new code) and report where it got to.

    ``history`` is the JSON text of an exported history, a ``pathlib.Path`` to such a
    file, or a list of :class:`~duratask.HistoryEvent`. The orchestration is run under the
    name and version the history records. Pass the ``activities`` and sub-``orchestrations``
    it calls when they are registered under other names than their own (a mapping of name
    to function), so calls resolve to the recorded names as they would on a worker.

    Raises :class:`HistoryMismatchError` naming the step where the code differs from the
    history: an activity renamed, steps reordered, a step removed or added where the history
    shows another, or an end different from the recorded one. Raises
    :class:`InvalidHistoryError` (a ValueError) naming what is wrong with input that is not
    a history: an empty file, an empty array, no ``ExecutionStarted``...
    """
    events, label = load_history(history, source)
    started = require_start(events, label)
    codec = PayloadCodec(data_converter)
    registry = Registry()
    registry.add_orchestration(orchestration, name=started.name, version=started.version)
    _register(registry, activities, activity=True)
    _register(registry, orchestrations, activity=False)
    if source is None and isinstance(history, Path):
        source = label
    return _Replay(OrchestrationExecutor(registry, codec), started, events, source).run(codec)


def replay_many(
    orchestrations: Callable[..., Any] | Functions,
    histories: str | Path | Iterable[HistorySource],
    *,
    activities: Functions = (),
    data_converter: DataConverter | None = None,
) -> list[ReplayResult]:
    """Replay several histories, each with the orchestration of the name it records.

    ``histories`` is a directory (every ``*.json`` file in it, by name) or an iterable of
    what :func:`replay` accepts. ``orchestrations`` is one function, several, or a mapping of
    registered name to function; they also serve as sub-orchestrations. Every history is
    replayed; if any does not match, :class:`ReplayFailedError` lists them all.
    """
    by_name = _by_name(orchestrations)
    sources = history_sources(histories)
    results: list[ReplayResult] = []
    mismatches: list[HistoryMismatchError] = []
    for index, item in enumerate(sources):
        label = str(item) if isinstance(item, Path) else f"history #{index}"
        events, label = load_history(item, label)
        started = require_start(events, label)
        fn = by_name.get(started.name)
        if fn is None:
            raise ValueError(
                f"{label}: no orchestration named {started.name!r} was given "
                f"(given: {sorted(by_name)})"
            )
        try:
            results.append(
                replay(
                    fn,
                    events,
                    activities=activities,
                    orchestrations=by_name,
                    data_converter=data_converter,
                    source=label,
                )
            )
        except HistoryMismatchError as mismatch:
            mismatches.append(mismatch)
    if mismatches:
        raise ReplayFailedError(mismatches, len(sources))
    return results


# -- the replay itself -----------------------------------------------------------------------


class _Replay:
    def __init__(
        self,
        executor: OrchestrationExecutor,
        started: h.ExecutionStarted,
        events: list[h.HistoryEvent],
        source: str | None,
    ) -> None:
        self.started = started
        self.events = events
        self.source = source
        self.cursor: OrchestrationCursor = executor.cursor(started.instance_id, [])
        self.positions = {id(e): i for i, e in enumerate(events)}
        # Steps the code had scheduled when it ended, not yet matched by the history.
        self.open_at_end: dict[int, act.SchedulingAction] = {}

    def mismatch(self, detail: str, event: h.HistoryEvent | None = None) -> HistoryMismatchError:
        return HistoryMismatchError(
            f"orchestration {self.started.name!r}: {detail}",
            instance_id=self.started.instance_id,
            position=self.positions.get(id(event)) if event is not None else None,
            event=event,
            source=self.source,
        )

    def run(self, codec: PayloadCodec) -> ReplayResult:
        view = list(rewound_view(self.events))
        for event in view:
            if self.cursor.is_complete:
                self._after_end(event)
                continue
            self.cursor.replay([event])
            if self.cursor.is_complete:
                self._on_end(event)
        recorded_end = _recorded_end(view)
        if recorded_end is not None:
            self._check_end(recorded_end)
        ctx = self.cursor.ctx
        completion = ctx.completion
        next_actions = () if recorded_end is not None else tuple(self.cursor.run([]).actions)
        return ReplayResult(
            instance_id=self.started.instance_id,
            name=self.started.name,
            version=self.started.version,
            status=completion.status if completion else _waiting_status(view),
            serialized_output=(
                completion.result
                if completion and completion.status is OrchestrationStatus.COMPLETED
                else None
            ),
            failure=completion.failure_details if completion else None,
            serialized_custom_status=ctx.custom_status,
            next_actions=next_actions,
            events_replayed=len(view),
            source=self.source,
            converter=codec.converter,
        )

    def _on_end(self, event: h.HistoryEvent) -> None:
        completion = self.cursor.ctx.completion
        assert completion is not None
        failure = completion.failure_details
        if failure is not None and failure.error_type == NonDeterminismError.__qualname__:
            raise self.mismatch(_strip_name(failure.message, self.started.name), event)
        self.open_at_end = {a.id: a for a in self.cursor.ctx.pending_actions()}

    def _after_end(self, event: h.HistoryEvent) -> None:
        """A step the history records after the point where the code now ends."""
        expected = _SCHEDULING_EVENTS.get(type(event))
        if expected is None:
            return
        action = self.open_at_end.pop(event.event_id, None)
        if action is not None and _same_step(event, action):
            return
        completion = self.cursor.ctx.completion
        assert completion is not None
        raise self.mismatch(
            f"history has {describe_event(event)} at sequence #{event.event_id}, but the code "
            f"now ends the orchestration ({completion.status.value}) before that step. Was a "
            "step removed?",
            event,
        )

    def _check_end(self, recorded: h.HistoryEvent) -> None:
        recorded_status = (
            recorded.status
            if isinstance(recorded, h.ExecutionCompleted)
            else OrchestrationStatus.CONTINUED_AS_NEW
        )
        completion = self.cursor.ctx.completion
        if completion is None:
            pending = [describe_action(a) for a in self.cursor.ctx.pending_actions()]
            doing = f"would next {', '.join(pending)}" if pending else "is still waiting"
            raise self.mismatch(
                f"history ends with the orchestration {recorded_status.value}, but the code "
                f"has not ended there: it {doing}. Was a step added?",
                recorded,
            )
        if completion.status is not recorded_status:
            why = ""
            if completion.failure_details is not None:
                details = completion.failure_details
                why = f" ({details.error_type}: {details.message})"
            raise self.mismatch(
                f"history ends with the orchestration {recorded_status.value}, but the code "
                f"now ends it {completion.status.value}{why}",
                recorded,
            )
        if self.open_at_end:
            extra = ", ".join(describe_action(a) for a in self.open_at_end.values())
            raise self.mismatch(
                f"the code now also does {extra} in its last step, which the history does not "
                "record. Was a step added?",
                recorded,
            )


def _recorded_end(view: list[h.HistoryEvent]) -> h.HistoryEvent | None:
    for event in reversed(view):
        if isinstance(event, h.ExecutionCompleted | h.ContinueAsNew):
            return event
    return None


def _waiting_status(view: list[h.HistoryEvent]) -> OrchestrationStatus:
    for event in reversed(view):
        if isinstance(event, h.ExecutionSuspended):
            return OrchestrationStatus.SUSPENDED
        if isinstance(event, h.ExecutionResumed):
            break
    return OrchestrationStatus.RUNNING


def _same_step(event: h.HistoryEvent, action: act.SchedulingAction) -> bool:
    if not isinstance(action, _SCHEDULING_EVENTS[type(event)]):
        return False
    name = getattr(event, "name", None)
    return name is None or name.lower() == getattr(action, "name", "").lower()


def _strip_name(message: str, name: str) -> str:
    """The engine's message without its own ``non-deterministic orchestration 'x': `` lead."""
    lead = f"non-deterministic orchestration {name!r}: "
    return message[len(lead) :] if message.startswith(lead) else message


# -- descriptions ------------------------------------------------------------------------------


def describe_action(action: act.OrchestratorAction) -> str:
    """One orchestrator action in words, e.g. ``"call activity 'charge'"``."""
    if isinstance(action, act.ScheduleTaskAction):
        return f"call activity {action.name!r}"
    if isinstance(action, act.CreateTimerAction):
        return f"start a timer until {action.fire_at.isoformat()}"
    if isinstance(action, act.CreateSubOrchestrationAction):
        return f"start sub-orchestration {action.name!r} as {action.instance_id!r}"
    if isinstance(action, act.SendEventAction):
        return f"send event {action.name!r} to {action.instance_id!r}"
    if isinstance(action, act.TerminateOrchestrationAction):
        return f"terminate {action.instance_id!r}"
    if isinstance(action, act.SignalEntityAction):
        return f"signal {action.operation!r} to entity {action.entity_id!r}"
    if isinstance(action, act.CallEntityAction):
        return f"call {action.operation!r} of entity {action.entity_id!r}"
    if isinstance(action, act.LockEntitiesAction):
        return f"lock entities {list(action.lock_set)}"
    if isinstance(action, act.UnlockEntityAction):
        return f"release entity {action.entity_id!r}"
    return f"end the orchestration {action.status.value}"


def describe_event(event: h.HistoryEvent | None) -> str:
    """One history event in words, e.g. ``"activity 'charge'"`` or ``"a timer"``."""
    if event is None:
        return "nothing"
    if isinstance(event, h.TaskScheduled):
        return f"activity {event.name!r}"
    if isinstance(event, h.SubOrchestrationInstanceCreated):
        return f"sub-orchestration {event.name!r}"
    if isinstance(event, h.TimerCreated):
        return "a timer"
    if isinstance(event, h.EventSent):
        return f"event {event.name!r} sent to {event.instance_id!r}"
    if isinstance(event, h.ExecutionCompleted):
        return f"ExecutionCompleted {event.status.value}"
    return type(event).__name__


def _by_name(orchestrations: Callable[..., Any] | Functions) -> dict[str, Callable[..., Any]]:
    if isinstance(orchestrations, Mapping):
        return dict(orchestrations)
    if callable(orchestrations):
        return {function_name(orchestrations): orchestrations}
    return {function_name(fn): fn for fn in orchestrations}


def _register(registry: Registry, functions: Functions, *, activity: bool) -> None:
    named: Iterable[tuple[str, Callable[..., Any]]] = (
        functions.items()
        if isinstance(functions, Mapping)
        else ((function_name(fn), fn) for fn in functions)
    )
    for name, fn in named:
        if activity:
            registry.add_activity(fn, name=name)
        elif registry.get_orchestration(name, None) is None:
            # Known by name only, so calls to it resolve to the name it is registered under.
            registry.add_orchestration(fn, name=name)
