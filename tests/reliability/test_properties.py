"""Property-based tests.

1. Random sequences of client operations interleaved with single worker steps and clock
   moves, against the in-memory store, compared after every step with a model of the
   instance status machine (a hypothesis ``RuleBasedStateMachine``). The model also predicts
   which messages each episode receives, and ``check_hub`` must pass throughout.
2. Valid histories garbled (events dropped, duplicated, reordered, retyped; ids, names,
   payloads and timestamps changed) and fed to the worker's episode planner: a commit, a
   deferral or a DurataskError, never another exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import duratask as dt
from duratask import history as h
from duratask._engine import OrchestrationExecutor
from duratask._registry import Registry
from duratask.backends.base import LockedMessage, OrchestrationMessage, OrchestrationWorkItem
from duratask.backends.memory import MemoryOrchestrationService
from duratask.converter import PayloadCodec
from duratask.integrity import check_hub
from duratask.retry import RetryPolicy
from duratask.state import FailureDetails, OrchestrationState
from duratask.worker._episode import Defer, EpisodeInput, plan_episode
from duratask.worker._instance_state import advance_state
from tests.conformance.conftest import FakeClock
from tests.unit.history_builder import SEC, T0, HistoryBuilder, payload

from .figures import count
from .stepper import Stepper

S = dt.OrchestrationStatus
T = TypeVar("T")
TIMER = timedelta(minutes=1)


# -- the orchestration under test --------------------------------------------------------------
async def add(ctx: dt.ActivityContext, pair: list[int]) -> int:
    return pair[0] + pair[1]


async def gate(ctx: dt.OrchestrationContext, n: int) -> int:
    """Waits for "go", adds its value to ``n`` in an activity, sleeps a minute, returns it."""
    value = await ctx.wait_for_external_event("go")
    total: int = await ctx.call_activity(add, input=[n, value])
    await ctx.create_timer(TIMER)
    return total


# -- the model ---------------------------------------------------------------------------------
@dataclass
class Message:
    kind: str  # start, go, other, suspend, resume, terminate, result, timer
    value: Any = None
    due: Any = None  # timers only: when they become visible


@dataclass
class Instance:
    n: int
    status: S = S.PENDING
    started: bool = False
    phase: str = "wait_go"  # wait_go -> activity -> timer -> done
    suspended: bool = False
    queue: list[Message] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)
    go: int | None = None
    output: Any = None
    activities: int = 0  # its activities waiting to run

    @property
    def terminal(self) -> bool:
        return self.status.is_terminal


# The kinds of messages each history event type stands for.
_KINDS: dict[type[h.HistoryEvent], str] = {
    h.ExecutionStarted: "start",
    h.ExecutionSuspended: "suspend",
    h.ExecutionResumed: "resume",
    h.ExecutionTerminated: "terminate",
    h.TaskCompleted: "result",
    h.TimerFired: "timer",
}


def message_kind(event: h.HistoryEvent) -> str:
    if isinstance(event, h.EventRaised):
        return "go" if event.name.lower() == "go" else "other"
    return _KINDS[type(event)]


def run_episode(instance: Instance, batch: list[Message], now: Any) -> None:
    """What one episode does with the instance's visible messages (the model of the worker)."""
    if instance.terminal:
        return  # everything for a finished instance is dropped
    rest = batch
    if not instance.started:
        assert batch and batch[0].kind == "start", batch
        terminate = next((m for m in batch if m.kind == "terminate"), None)
        if terminate is not None:  # terminated before its code ever ran
            instance.status, instance.output = S.TERMINATED, terminate.value
            return
        instance.started, instance.status, rest = True, S.RUNNING, batch[1:]
    decided: list[Message] = []  # the episode's new activities and timers
    for message in rest:
        if instance.terminal:
            break
        apply_message(instance, message, now, decided)
    if instance.status is S.TERMINATED:
        return  # a termination drops what the same episode had decided
    for work in decided:
        if work.kind == "activity":
            instance.activities += 1
        else:
            instance.queue.append(work)


def apply_message(instance: Instance, message: Message, now: Any, decided: list[Message]) -> None:
    kind = message.kind
    if kind == "terminate":
        instance.status, instance.output = S.TERMINATED, message.value
    elif kind == "suspend":
        instance.suspended, instance.status = True, S.SUSPENDED
    elif kind == "resume":
        instance.suspended, instance.status = False, S.RUNNING
        held, instance.held = instance.held, []
        for event in held:
            apply_message(instance, event, now, decided)
    elif instance.suspended and kind in ("go", "other", "result", "timer"):
        instance.held.append(message)
    elif kind == "go" and instance.phase == "wait_go":
        instance.phase, instance.go = "activity", message.value
        decided.append(Message("activity"))
    elif kind == "result":
        instance.phase = "timer"
        decided.append(Message("timer", due=now + TIMER))
    elif kind == "timer":
        instance.phase, instance.status = "done", S.COMPLETED
        instance.output = message.value


IDS = ["a", "b", "c"]


class HubMachine(RuleBasedStateMachine):
    """Client operations and worker steps on one in-memory hub, checked against the model."""

    cache_size: ClassVar[int] = 1000

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.store = MemoryOrchestrationService(clock=self.clock)
        self.client = dt.AsyncTaskHubClient(self.store, clock=self.clock)
        self.stepper = Stepper(
            self.store,
            self.clock,
            orchestrations=(gate,),
            activities=(add,),
            orchestration_cache_size=self.cache_size,
        )
        self.model: dict[str, Instance] = {}
        self.steps = 0
        self.reached: set[tuple[str, S]] = set()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.stepper.close()
        self.run(self.client.close())
        self.loop.close()
        count("property: state-machine steps", self.steps)
        for _, status in self.reached:
            count(f"property: instances seen {status.value}")

    @initialize()
    def started(self) -> None:
        count("property: state-machine examples")

    # -- client operations ---------------------------------------------------------------------
    @rule(iid=st.sampled_from(IDS), n=st.integers(0, 9))
    def schedule(self, iid: str, n: int) -> None:
        self.steps += 1
        existing = self.model.get(iid)
        if existing is not None and not existing.terminal:
            with pytest.raises(dt.OrchestrationAlreadyExistsError):
                self.run(self.client.schedule_new_orchestration(gate, input=n, instance_id=iid))
            return
        self.run(self.client.schedule_new_orchestration(gate, input=n, instance_id=iid))
        self.model[iid] = Instance(n, queue=[Message("start")])

    @rule(
        iid=st.sampled_from(IDS),
        name=st.sampled_from(["go", "go", "GO", "other"]),
        v=st.integers(0, 9),
    )
    def raise_event(self, iid: str, name: str, v: int) -> None:
        self.steps += 1
        instance = self.model.get(iid)
        if instance is None:
            with pytest.raises(dt.OrchestrationNotFoundError):
                self.run(self.client.raise_orchestration_event(iid, name, v))
            return
        if instance.terminal:  # refused: nothing is sent
            with pytest.raises(dt.OrchestrationFinishedError):
                self.run(self.client.raise_orchestration_event(iid, name, v))
            return
        self.run(self.client.raise_orchestration_event(iid, name, v))
        instance.queue.append(Message("go" if name.lower() == "go" else "other", v))

    @rule(
        iid=st.sampled_from(IDS),
        operation=st.sampled_from(["terminate", "suspend", "resume"]),
        v=st.integers(0, 9),
    )
    def signal(self, iid: str, operation: str, v: int) -> None:
        self.steps += 1
        instance = self.model.get(iid)
        c = self.client
        call: Callable[[], Coroutine[Any, Any, None]] = {
            "terminate": lambda: c.terminate_orchestration(iid, output=v),
            "suspend": lambda: c.suspend_orchestration(iid),
            "resume": lambda: c.resume_orchestration(iid),
        }[operation]
        if instance is None:
            with pytest.raises(dt.OrchestrationNotFoundError):
                self.run(call())
            return
        if instance.terminal:  # refused: a finished instance is not even sent the message
            with pytest.raises(dt.OrchestrationFinishedError):
                self.run(call())
            return
        self.run(call())
        instance.queue.append(Message(operation, v))

    @rule(iid=st.sampled_from(IDS))
    def purge(self, iid: str) -> None:
        self.steps += 1
        instance = self.model.get(iid)
        if instance is None:
            with pytest.raises(dt.OrchestrationNotFoundError):
                self.run(self.client.purge_orchestration(iid))
        elif not instance.terminal:
            with pytest.raises(dt.InvalidOperationError):
                self.run(self.client.purge_orchestration(iid))
        else:
            assert self.run(self.client.purge_orchestration(iid)) == 1
            del self.model[iid]

    @rule(status=st.sampled_from(list(S)), page_size=st.integers(1, 3))
    def query(self, status: S, page_size: int) -> None:
        self.steps += 1
        found: list[str] = []
        token = None
        while True:
            page = self.run(
                self.client.query_orchestrations(
                    statuses=[status], page_size=page_size, continuation_token=token
                )
            )
            found.extend(s.instance_id for s in page.states)
            token = page.continuation_token
            if token is None:
                break
        assert sorted(found) == sorted(i for i, m in self.model.items() if m.status is status)

    # -- the worker and the clock ----------------------------------------------------------------
    def visible(self, instance: Instance) -> list[Message]:
        return [m for m in instance.queue if m.due is None or m.due <= self.clock.now]

    @rule()
    def orchestration_step(self) -> None:
        self.steps += 1
        now = self.clock.now
        item = self.run(self.stepper.orchestration_step())
        waiting = {i for i, m in self.model.items() if self.visible(m)}
        if item is None:
            assert waiting == set()
            return
        instance = self.model[item.instance_id]
        batch = self.visible(instance)
        assert [message_kind(m.message.event) for m in item.messages] == [m.kind for m in batch]
        for message in batch:
            if message.kind == "timer":
                message.value = instance.n + (instance.go or 0)
        instance.queue = [m for m in instance.queue if m not in batch]
        run_episode(instance, batch, now)

    @rule()
    def activity_step(self) -> None:
        self.steps += 1
        item = self.run(self.stepper.activity_step())
        if item is None:
            assert all(m.activities == 0 for m in self.model.values())
            return
        instance = self.model[item.request.instance_id]
        assert instance.activities > 0
        instance.activities -= 1
        instance.queue.append(Message("result"))

    @rule(minutes=st.integers(0, 2))
    def advance_clock(self, minutes: int) -> None:
        self.steps += 1
        self.clock.advance(timedelta(minutes=minutes, seconds=1))

    @precondition(lambda self: bool(self.model))
    @rule(go=st.booleans())
    def drain(self, go: bool) -> None:
        """Run everything that can run now, then let time pass until nothing is left
        (first sending "go" to every instance still waiting for it, if ``go``)."""
        if go:
            for iid, instance in list(self.model.items()):
                if instance.phase == "wait_go" and not instance.terminal:
                    self.raise_event(iid, "go", len(iid) + instance.n)
        for _ in range(200):
            before = self.steps
            if any(self.visible(m) for m in self.model.values()):
                self.orchestration_step()
            elif any(m.activities for m in self.model.values()):
                self.activity_step()
            elif any(m.queue for m in self.model.values()):
                self.advance_clock(1)
            if self.steps == before:
                return
        raise AssertionError("the hub never became idle")

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def store_agrees_with_the_model(self) -> None:
        page = self.run(self.client.query_orchestrations(page_size=10))
        states = {s.instance_id: s for s in page.states}
        assert set(states) == set(self.model)
        for iid, instance in self.model.items():
            state = states[iid]
            assert state.runtime_status is instance.status, (iid, instance)
            self.reached.add((f"{iid}:{state.execution_id}", instance.status))
            if instance.status in (S.COMPLETED, S.TERMINATED):
                assert state.output == instance.output, (iid, instance)
            else:
                assert state.serialized_output is None

    @invariant()
    def hub_is_consistent(self) -> None:
        problems = self.run(check_hub(self.store))
        assert problems == [], "\n".join(map(str, problems))


HubMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_client_and_worker_against_the_model = HubMachine.TestCase


class UncachedHubMachine(HubMachine):
    """The same, with every episode replaying its history (no orchestration cache)."""

    cache_size = 0


UncachedHubMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_client_and_uncached_worker_against_the_model = UncachedHubMachine.TestCase


# -- garbled histories fed to the episode planner ----------------------------------------------
RETRY = RetryPolicy(first_retry_interval=SEC, max_number_of_attempts=3)


async def child(ctx: dt.OrchestrationContext, n: int) -> int:
    return n


async def rich(ctx: dt.OrchestrationContext, n: int) -> Any:
    a = await ctx.call_activity("double", input=n, retry_policy=RETRY)
    winner = await dt.when_any(
        [ctx.create_timer(timedelta(seconds=10)), ctx.wait_for_external_event("go")]
    )
    kid = await ctx.call_sub_orchestrator(child, input=a, retry_policy=RETRY)
    both = await dt.when_all([ctx.call_activity("inc", input=i) for i in range(2)])
    ctx.send_event("peer", "done", both)
    ctx.set_custom_status({"kid": kid})
    if n > 5:
        ctx.continue_as_new(n - 1, save_events=True)
        return None
    return [a, winner.get_result() if winner.is_complete else None, kid, both]


def generator_style(ctx: dt.OrchestrationContext, n: int) -> Generator[Any, Any, int]:
    a = yield ctx.call_activity("double", input=n)
    yield ctx.create_timer(timedelta(seconds=1))
    b = yield ctx.wait_for_external_event("go", timeout=timedelta(seconds=30))
    return int(a) + int(b)


def rich_history() -> list[h.HistoryEvent]:
    b = HistoryBuilder().episode().started("rich", 2).task_scheduled(0, "double", 2).done()
    b.episode(T0 + SEC).task_failed(0).timer_created(1, T0 + 2 * SEC).done()
    b.episode(T0 + 2 * SEC).timer_fired(1).task_scheduled(2, "double", 2).done()
    b.episode(T0 + 3 * SEC).task_completed(2, 4)
    b.timer_created(3, T0 + 13 * SEC).done()
    b.episode(T0 + 5 * SEC).event_raised("go", "g").sub_created(4, "child", "inst-1:0004", 4)
    b.done().episode(T0 + 6 * SEC).suspended().sub_completed(4, 4).resumed()
    b.task_scheduled(5, "inc", 0).task_scheduled(6, "inc", 1).done()
    b.episode(T0 + 7 * SEC).task_completed(6, 2).task_completed(5, 1)
    b.event_sent(7, "peer", "done", [1, 2]).add(
        h.ExecutionCompleted(
            timestamp=T0 + 7 * SEC, status=S.COMPLETED, result=payload([4, "g", 4, [1, 2]])
        )
    )
    return b.done().build()


def generator_history() -> list[h.HistoryEvent]:
    b = HistoryBuilder().episode().started("generator_style", 1)
    b.task_scheduled(0, "double", 1).done()
    b.episode(T0 + SEC).task_completed(0, 2).timer_created(1, T0 + 2 * SEC).done()
    b.episode(T0 + 2 * SEC).timer_fired(1).timer_created(2, T0 + 32 * SEC).done()
    b.episode(T0 + 3 * SEC).event_raised("go", 5).add(
        h.ExecutionCompleted(timestamp=T0 + 3 * SEC, status=S.COMPLETED, result=payload(7))
    )
    return b.done().build()


HISTORIES = {"rich": rich_history, "generator_style": generator_history}
NAMES = ["rich", "generator_style", "child", "double", "inc", "go", "GO", "peer", "", "?" * 300]
PAYLOADS = [None, "1", '"g"', "[1, 2]", "{broken", "null", '{"a": 1}', "1e999", '"\\ud800"']
FAILURE = FailureDetails("ValueError", "boom")


def retyped(event: h.HistoryEvent, to: str) -> h.HistoryEvent:
    """The event turned into another type, keeping what fields it can (ids, timestamp)."""
    ts = event.timestamp
    number = next(
        (
            getattr(event, f)
            for f in ("event_id", "task_scheduled_id", "timer_id")
            if getattr(event, f, -1) != -1
        ),
        0,
    )
    make: Callable[[], h.HistoryEvent] = {
        "scheduled": lambda: h.TaskScheduled(event_id=number, timestamp=ts, name="double"),
        "completed": lambda: h.TaskCompleted(timestamp=ts, task_scheduled_id=number, result="3"),
        "failed": lambda: h.TaskFailed(
            timestamp=ts, task_scheduled_id=number, failure_details=FAILURE
        ),
        "timer": lambda: h.TimerCreated(event_id=number, timestamp=ts, fire_at=ts),
        "fired": lambda: h.TimerFired(timestamp=ts, timer_id=number, fire_at=ts),
        "sub": lambda: h.SubOrchestrationInstanceCreated(
            event_id=number, timestamp=ts, name="child", instance_id="k"
        ),
        "sub-done": lambda: h.SubOrchestrationInstanceCompleted(
            timestamp=ts, task_scheduled_id=number
        ),
        "sub-failed": lambda: h.SubOrchestrationInstanceFailed(
            timestamp=ts, task_scheduled_id=number, failure_details=FAILURE
        ),
        "sent": lambda: h.EventSent(event_id=number, timestamp=ts, instance_id="p", name="x"),
        "raised": lambda: h.EventRaised(timestamp=ts, name="go", input="1"),
        "terminated": lambda: h.ExecutionTerminated(timestamp=ts, input="1"),
        "suspended": lambda: h.ExecutionSuspended(timestamp=ts),
        "resumed": lambda: h.ExecutionResumed(timestamp=ts),
        "rewound": lambda: h.ExecutionRewound(timestamp=ts),
        "completed-run": lambda: h.ExecutionCompleted(timestamp=ts, status=S.FAILED),
        "continued": lambda: h.ContinueAsNew(timestamp=ts, result="1"),
        "generic": lambda: h.GenericEvent(timestamp=ts, data="x"),
        "episode": lambda: h.OrchestratorStarted(timestamp=ts),
        "episode-end": lambda: h.OrchestratorCompleted(timestamp=ts),
    }[to]
    return make()


RETYPES = [
    "scheduled", "completed", "failed", "timer", "fired", "sub", "sub-done", "sub-failed",
    "sent", "raised", "terminated", "suspended", "resumed", "rewound", "completed-run",
    "continued", "generic", "episode", "episode-end",
]  # fmt: skip


def _with(event: h.HistoryEvent, **changes: Any) -> h.HistoryEvent:
    known = {f.name for f in dataclasses.fields(event)}
    usable = {k: v for k, v in changes.items() if k in known}
    return dataclasses.replace(event, **usable) if usable else event


@st.composite
def garbled(draw: st.DrawFn) -> tuple[str, list[h.HistoryEvent], list[h.HistoryEvent]]:
    name = draw(st.sampled_from(sorted(HISTORIES)))
    events = HISTORIES[name]()
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(
                ["drop", "duplicate", "swap", "move", "retype", "id", "name", "payload", "time"]
            )
        )
        i = draw(st.integers(0, len(events) - 1))
        j = draw(st.integers(0, len(events) - 1))
        if op == "drop" and len(events) > 1:
            del events[i]
        elif op == "duplicate":
            events.insert(j, events[i])
        elif op == "swap":
            events[i], events[j] = events[j], events[i]
        elif op == "move":
            events.insert(j, events.pop(i))
        elif op == "retype":
            events[i] = retyped(events[i], draw(st.sampled_from(RETYPES)))
        elif op == "id":
            number = draw(st.integers(-2, 12))
            events[i] = _with(events[i], event_id=number, task_scheduled_id=number, timer_id=number)
        elif op == "name":
            events[i] = _with(events[i], name=draw(st.sampled_from(NAMES)))
        elif op == "payload":
            text = draw(st.sampled_from(PAYLOADS))
            events[i] = _with(events[i], input=text, result=text, data=text)
        elif op == "time":
            shift = timedelta(seconds=draw(st.integers(-100, 100)))
            events[i] = _with(events[i], timestamp=events[i].timestamp + shift)
    split = draw(st.integers(0, len(events)))
    return name, events[:split], events[split:]


def registry() -> Registry:
    reg = Registry()
    reg.add_orchestration(rich)
    reg.add_orchestration(child)
    reg.add_orchestration(generator_style)
    return reg


EXECUTOR = OrchestrationExecutor(registry(), PayloadCodec())


def work_item(
    name: str, past: list[h.HistoryEvent], new: list[h.HistoryEvent]
) -> OrchestrationWorkItem:
    """A leased instance whose stored history is ``past`` and whose messages are ``new``."""
    start = next((e for e in past if isinstance(e, h.ExecutionStarted)), None)
    if start is not None:
        state: OrchestrationState = advance_state("inst-1", None, past, now=T0, custom_status=None)
    else:
        first = h.ExecutionStarted(timestamp=T0, name=name, instance_id="inst-1", execution_id="e")
        state = dataclasses.replace(
            advance_state("inst-1", None, [first], now=T0, custom_status=None),
            runtime_status=S.PENDING,
        )
    messages = [
        LockedMessage(i + 1, OrchestrationMessage("inst-1", event)) for i, event in enumerate(new)
    ]
    return OrchestrationWorkItem("inst-1", "token", T0, list(past), messages, state=state)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbled())
def test_garbled_histories_give_a_commit_or_a_duratask_error(
    case: tuple[str, list[h.HistoryEvent], list[h.HistoryEvent]],
) -> None:
    name, past, new = case
    count("property: garbled histories planned")
    try:
        outcome, _ = plan_episode(
            EpisodeInput.of(work_item(name, past, new)), EXECUTOR, T0 + 100 * SEC
        )
    except dt.DurataskError:
        count("property: garbled histories refused with a DurataskError")
        return
    if isinstance(outcome, Defer):
        return
    assert outcome.state.instance_id == "inst-1"
    failure = outcome.state.failure_details
    if outcome.state.runtime_status is S.FAILED and failure is not None:
        count(f"property: garbled histories failing with {failure.error_type}")
    # Whatever the history was, the commit records what it decided, in one closed episode.
    if outcome.new_events:
        assert isinstance(outcome.new_events[0], h.OrchestratorStarted)
        assert isinstance(outcome.new_events[-1], h.OrchestratorCompleted)
    ids = [a.task_id for a in outcome.activities]
    assert len(ids) == len(set(ids))


def test_an_event_before_the_start_that_fails_replay_is_handled() -> None:
    history = generator_history()
    past = [history[2], history[1]]  # TaskScheduled, then ExecutionStarted
    outcome, _ = plan_episode(
        EpisodeInput.of(work_item("generator_style", past, [])), EXECUTOR, T0 + 100 * SEC
    )
    assert not isinstance(outcome, Defer)
    assert outcome.state.runtime_status is S.FAILED
    assert outcome.state.failure_details is not None
    assert outcome.state.failure_details.error_type == "NonDeterminismError"


@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_the_ungarbled_histories_replay_to_their_recorded_end(name: str) -> None:
    events = HISTORIES[name]()
    completion = events[-2]
    assert isinstance(completion, h.ExecutionCompleted)
    for split in range(len(events) - 1):
        result = EXECUTOR.execute("inst-1", events[:split], events[split:-2])
        assert result.completion is not None
        assert (result.completion.status, result.completion.result) == (
            completion.status,
            completion.result,
        )
