"""The replay engine's entity actions: signals, calls, critical sections, their replay and
the release of locks when an execution ends."""

from __future__ import annotations

from typing import Any

import pytest

from duratask import _actions as act
from duratask import history as h
from duratask.context import OrchestrationContext
from duratask.entities import EntityInstanceId
from duratask.errors import EntityLockError, EntityOperationFailedError
from duratask.state import FailureDetails, OrchestrationStatus
from tests.unit.history_builder import HistoryBuilder, execute, payload, registry

A, B = "@account@a", "@account@b"


async def move(ctx: OrchestrationContext, amount: int) -> Any:
    ctx.signal_entity(EntityInstanceId("Counter", "moves"), "add", 1)
    async with ctx.lock_entities(B, A, A):
        try:
            await ctx.call_entity(A, "withdraw", amount)
        except EntityOperationFailedError as failure:
            return ["failed", failure.entity_id, failure.operation, failure.details.message]
        await ctx.call_entity(B, "deposit", amount)
    return "moved"


async def fail_inside(ctx: OrchestrationContext, _: None) -> None:
    async with ctx.lock_entities(A):
        raise RuntimeError("boom")


async def call_unlocked(ctx: OrchestrationContext, _: None) -> None:
    async with ctx.lock_entities(A):
        await ctx.call_entity(B, "deposit", 1)


async def nested(ctx: OrchestrationContext, _: None) -> None:
    async with ctx.lock_entities(A):
        async with ctx.lock_entities(B):
            pass


def _ids(result: Any) -> list[type]:
    return [type(a) for a in result.actions]


def _history(*, failed: bool = False) -> HistoryBuilder:
    b = HistoryBuilder().episode().started("move", 5)
    b.add(
        h.EntityOperationSignaled(
            event_id=0,
            timestamp=b.now,
            request_id="r0",
            operation="add",
            target_instance_id="@counter@moves",
            input="1",
        ),
        h.EntityLockRequested(
            event_id=1, timestamp=b.now, critical_section_id="cs", lock_set=(A, B)
        ),
    ).done()
    b.episode().add(
        h.EntityLockGranted(timestamp=b.now, task_scheduled_id=1, critical_section_id="cs")
    )
    b.add(
        h.EntityOperationCalled(
            event_id=2,
            timestamp=b.now,
            request_id="r2",
            operation="withdraw",
            target_instance_id=A,
            input="5",
        )
    ).done()
    b.episode().mark()
    if failed:
        details = FailureDetails("ValueError", "too little")
        b.add(
            h.EntityOperationFailed(
                timestamp=b.now, task_scheduled_id=2, request_id="r2", failure_details=details
            )
        )
    else:
        b.add(
            h.EntityOperationCompleted(
                timestamp=b.now, task_scheduled_id=2, request_id="r2", result="0"
            )
        )
    return b


def test_first_episode_signals_and_asks_for_locks_in_order() -> None:
    new = HistoryBuilder().episode().started("move", 5).build()
    result = execute(registry([move]), [], new)
    signal, lock = result.actions
    assert isinstance(signal, act.SignalEntityAction)
    assert (signal.entity_id, signal.operation, signal.input) == ("@counter@moves", "add", "1")
    assert isinstance(lock, act.LockEntitiesAction)
    assert lock.lock_set == (A, B)  # sorted, without duplicates
    assert signal.request_id != lock.critical_section_id


def test_replay_goes_on_from_the_call_result_and_releases_every_lock() -> None:
    b = _history()
    past, new = b.split()
    (call,) = execute(registry([move]), past, new).actions
    assert isinstance(call, act.CallEntityAction)
    assert (call.id, call.entity_id, call.operation, call.input) == (3, B, "deposit", "5")
    b.add(
        h.EntityOperationCalled(
            event_id=3,
            timestamp=b.now,
            request_id=call.request_id,
            operation="deposit",
            target_instance_id=B,
            input="5",
        )
    ).done()
    b.episode().mark()
    b.add(h.EntityOperationCompleted(timestamp=b.now, task_scheduled_id=3, request_id="x"))
    past, new = b.split()
    *unlocks, done = execute(registry([move]), past, new).actions
    assert all(isinstance(u, act.UnlockEntityAction) for u in unlocks)
    assert [(u.entity_id, u.id) for u in unlocks if isinstance(u, act.UnlockEntityAction)] == [
        (A, 4),
        (B, 5),
    ]
    assert done == act.CompleteOrchestrationAction(OrchestrationStatus.COMPLETED, payload("moved"))


def test_a_failed_call_raises_a_typed_error() -> None:
    past, new = _history(failed=True).split()
    result = execute(registry([move]), past, new)
    assert result.completion is not None
    assert result.completion.result == payload(["failed", A, "withdraw", "too little"])
    assert _ids(result)[:2] == [act.UnlockEntityAction, act.UnlockEntityAction]


def test_a_changed_lock_set_is_non_deterministic() -> None:
    b = HistoryBuilder().episode().started("move", 5)
    b.add(
        h.EntityOperationSignaled(
            event_id=0,
            timestamp=b.now,
            request_id="r0",
            operation="add",
            target_instance_id="@counter@moves",
        )
    )
    b.add(
        h.EntityLockRequested(event_id=1, timestamp=b.now, critical_section_id="cs", lock_set=(A,))
    )
    result = execute(registry([move]), b.done().build(), HistoryBuilder().episode().build())
    assert result.completion is not None
    assert result.completion.status is OrchestrationStatus.FAILED
    assert result.completion.failure_details is not None
    assert "locks" in result.completion.failure_details.message


def test_failing_inside_a_section_still_releases_its_locks() -> None:
    b = HistoryBuilder().episode().started("fail_inside")
    b.add(
        h.EntityLockRequested(event_id=0, timestamp=b.now, critical_section_id="cs", lock_set=(A,))
    )
    b.done().episode().mark()
    b.add(h.EntityLockGranted(timestamp=b.now, task_scheduled_id=0, critical_section_id="cs"))
    past, new = b.split()
    result = execute(registry([fail_inside]), past, new)
    unlock, completion = result.actions
    assert isinstance(unlock, act.UnlockEntityAction) and unlock.entity_id == A
    assert isinstance(completion, act.CompleteOrchestrationAction)
    assert completion.status is OrchestrationStatus.FAILED


def test_terminating_while_waiting_for_locks_releases_them() -> None:
    b = HistoryBuilder().episode().started("fail_inside")
    b.add(
        h.EntityLockRequested(event_id=0, timestamp=b.now, critical_section_id="cs", lock_set=(A,))
    )
    b.done().episode().mark().terminated("stop")
    past, new = b.split()
    result = execute(registry([fail_inside]), past, new)
    unlock, completion = result.actions
    assert isinstance(unlock, act.UnlockEntityAction)
    assert (unlock.id, unlock.entity_id) == (-1, A)
    assert isinstance(completion, act.CompleteOrchestrationAction)
    assert completion.status is OrchestrationStatus.TERMINATED


@pytest.mark.parametrize(
    ("fn", "problem"), [(call_unlocked, "only the entities it locked"), (nested, "do not nest")]
)
def test_section_misuse_fails_with_entity_lock_error(fn: Any, problem: str) -> None:
    b = HistoryBuilder().episode().started(fn.__name__)
    b.add(
        h.EntityLockRequested(event_id=0, timestamp=b.now, critical_section_id="cs", lock_set=(A,))
    )
    b.done().episode().mark()
    b.add(h.EntityLockGranted(timestamp=b.now, task_scheduled_id=0, critical_section_id="cs"))
    past, new = b.split()
    result = execute(registry([fn]), past, new)
    assert result.completion is not None and result.completion.failure_details is not None
    assert result.completion.failure_details.error_type == EntityLockError.__name__
    assert problem in result.completion.failure_details.message
