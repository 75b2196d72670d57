"""The replay engine: a pure function from (past events, new events) to actions.

No I/O, no clock, no storage: time comes from ``OrchestratorStarted`` events, results from
completion events. The orchestration function is re-run from the start against the past
events (``is_replaying`` is True), then the new events drive it forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from duratask import _actions as act
from duratask import history as h
from duratask._engine.replay_context import ReplayContext
from duratask._engine.rewind import rewound_view
from duratask._registry import Registry
from duratask.context import CriticalSection
from duratask.converter import PayloadCodec
from duratask.errors import NonDeterminismError, OrchestrationNotRegisteredError
from duratask.state import OrchestrationStatus
from duratask.task import Task


@dataclass(slots=True)  # made at every step, never changed: not frozen (see _episode._Delivery)
class ExecutionResult:
    """What one episode decided: new actions, the custom status, and the completion if any."""

    actions: list[act.OrchestratorAction] = field(default_factory=list)
    custom_status: str | None = None
    # How many of the new events were applied: all of them, unless the execution ended
    # before the last (the rest came after its end; see OrchestrationCursor.run).
    events_applied: int = 0

    @property
    def completion(self) -> act.CompleteOrchestrationAction | None:
        for action in self.actions:
            if isinstance(action, act.CompleteOrchestrationAction):
                return action
        return None


class _Driver:
    """Steps the user's coroutine (or generator) from one awaited task to the next."""

    def __init__(self, ctx: ReplayContext) -> None:
        self._ctx = ctx
        self._coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any] | None = None
        self._awaiting: Task[Any] | None = None
        # A critical section a generator yielded, and the task that takes its locks: the
        # generator resumes with the section itself.
        self._section: tuple[Task[Any], CriticalSection] | None = None

    def start(self, fn: Any, input_value: Any) -> None:
        try:
            result = fn(self._ctx, input_value)
        except Exception as exc:
            self._ctx.fail(exc)
            return
        if inspect.iscoroutine(result) or inspect.isgenerator(result):
            self._coro = result
            self._step(None, None)
        else:
            self._ctx.complete_with_result(result)

    def resume(self) -> None:
        task = self._awaiting
        if task is None or not task.is_complete or self._ctx.is_complete:
            return
        self._awaiting = None
        exc = task.get_exception()
        self._step(None if exc else self._result_of(task), exc)

    def _result_of(self, task: Task[Any]) -> Any:
        if self._section is not None and self._section[0] is task:
            section, self._section = self._section[1], None
            return section
        return task.get_result()

    def _awaited(self, yielded: Any) -> str:
        """Name what the code awaited: a bare ``yield None`` (e.g. from ``asyncio.sleep(0)``)
        says nothing, so name the awaitable the coroutine is suspended in instead."""
        awaited = getattr(self._coro, "cr_await", None)
        if yielded is None and awaited is not None:
            return f"{awaited!r} (which yielded None)"
        return repr(yielded)

    def _step(self, value: Any, exc: BaseException | None) -> None:
        assert self._coro is not None
        while True:
            try:
                yielded = self._coro.throw(exc) if exc is not None else self._coro.send(value)
            except StopIteration as stop:
                self._ctx.complete_with_result(stop.value)
                return
            except Exception as error:
                self._ctx.fail(error)
                return
            if self._ctx.is_complete:  # continue_as_new was called: nothing more runs
                return
            if isinstance(yielded, CriticalSection):
                section = yielded
                yielded = section._entered_by_yield()
                self._section = (yielded, section)
            if not isinstance(yielded, Task):
                self._ctx.fail(
                    TypeError(
                        f"orchestration {self._ctx.name!r} awaited {self._awaited(yielded)}, "
                        "which is not a "
                        "duratask task. Orchestrations may only await tasks from the "
                        "OrchestrationContext (call_activity, create_timer, "
                        "wait_for_external_event, call_sub_orchestrator) or when_all/when_any; "
                        "asyncio functions such as asyncio.sleep or asyncio.gather cannot be used."
                    )
                )
                return
            if not yielded.is_complete:
                self._awaiting = yielded
                return
            exc = yielded.get_exception()
            value = None if exc else self._result_of(yielded)


class OrchestrationCursor:
    """One live orchestration: replayed once, then driven forward one episode at a time.

    A worker may keep a cursor between episodes so the next episode feeds it only the new
    events (no history is re-read or replayed); it must call :meth:`committed` once the
    episode's actions are durably recorded, since they then count as history.
    """

    def __init__(self, executor: OrchestrationExecutor, instance_id: str) -> None:
        self._executor = executor
        self.ctx = ReplayContext(
            instance_id, executor._registry, executor._codec, strict=executor.strict
        )
        self._driver = _Driver(self.ctx)

    @property
    def is_complete(self) -> bool:
        return self.ctx.is_complete

    def replay(self, past_events: Iterable[h.HistoryEvent]) -> None:
        """Re-run the code against events already in history."""
        self.ctx.set_replaying(True)
        events = past_events if isinstance(past_events, list) else list(past_events)
        for event in rewound_view(events):
            self._executor._process(self.ctx, self._driver, event)
        self.ctx.set_replaying(False)

    def run(self, new_events: Iterable[h.HistoryEvent]) -> ExecutionResult:
        """Apply new events and return what the orchestration decided.

        Once the execution has ended, the events after the one that ended it are not
        applied: after a continue-as-new they belong to the next execution.
        """
        applied = 0
        ctx, process, driver = self.ctx, self._executor._process, self._driver
        for event in new_events:
            if ctx.completion is not None:
                break
            process(ctx, driver, event)
            applied += 1
        return self._executor._result(ctx, applied)

    def committed(self) -> None:
        """The last result's actions are now history: do not emit them again."""
        self.ctx.actions_committed()


class OrchestrationExecutor:
    """Runs orchestration code against its history. Create one per worker; it keeps no state.

    A ``strict`` executor also checks that replayed steps were given what the history
    recorded (activity and sub-orchestration inputs, child ids, timer times, event data),
    which catches non-deterministic code whose steps keep their names.
    """

    def __init__(
        self, registry: Registry, codec: PayloadCodec | None = None, *, strict: bool = False
    ) -> None:
        self._registry = registry
        self._codec = codec or PayloadCodec()
        self.strict = strict

    def cursor(
        self, instance_id: str, past_events: Iterable[h.HistoryEvent]
    ) -> OrchestrationCursor:
        """A cursor for an instance, replayed up to the end of ``past_events``."""
        cursor = OrchestrationCursor(self, instance_id)
        cursor.replay(past_events)
        return cursor

    def execute(
        self,
        instance_id: str,
        past_events: Iterable[h.HistoryEvent],
        new_events: Iterable[h.HistoryEvent],
    ) -> ExecutionResult:
        """Replay ``past_events``, apply ``new_events``, and return what happens next."""
        return self.cursor(instance_id, past_events).run(new_events)

    def _process(self, ctx: ReplayContext, driver: _Driver, event: h.HistoryEvent) -> None:
        if isinstance(event, h.ExecutionStarted):
            if ctx.is_complete:
                return
            self._start(ctx, driver, event)
            return
        try:
            ctx.apply(event)
        except NonDeterminismError as exc:
            ctx.fail(exc)
            return
        driver.resume()

    def _start(self, ctx: ReplayContext, driver: _Driver, event: h.ExecutionStarted) -> None:
        ctx.on_started(event)
        spec = self._registry.get_orchestration(event.name, event.version)
        if spec is None:
            known = self._registry.orchestration_versions(event.name)
            hint = (
                f"registered versions: {known}"
                if known
                else f"registered orchestrations: {self._registry.orchestration_names}"
            )
            ctx.fail(
                OrchestrationNotRegisteredError(
                    f"orchestration {event.name!r} version {event.version!r} is not registered "
                    f"on this worker ({hint})"
                )
            )
            return
        try:
            input_value = self._codec.decode(event.input, spec.input_type)
        except Exception as exc:
            ctx.fail(exc)
            return
        driver.start(spec.fn, input_value)

    def _result(self, ctx: ReplayContext, events_applied: int) -> ExecutionResult:
        actions: list[act.OrchestratorAction] = [*ctx.pending_actions(), *ctx.extra_actions]
        completion = ctx.completion
        if completion is not None:
            actions.extend(ctx.releases_at_end())
            if completion.status is OrchestrationStatus.CONTINUED_AS_NEW:
                completion = replace(completion, carryover_events=ctx.carried_events())
            actions.append(completion)
        return ExecutionResult(actions, ctx.custom_status, events_applied)
