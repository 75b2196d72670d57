"""An activity's own failure reaches the instance's failure, on every store: the chain runs
from the orchestration's failure to the activity's exception and its traceback (through
sub-orchestrations too), and orchestration code can ask what caused a task's failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import duratask as dt

from .e2e_hub import TaskHub

pytestmark = pytest.mark.timeout(60)


class InvoiceError(LookupError):
    """An error class of the test's own, under a builtin base."""


def lookup_price(sku: str) -> float:
    raise KeyError(sku)


def price_order(ctx: dt.ActivityContext, sku: str) -> float:
    try:
        return lookup_price(sku)
    except KeyError as missing:
        raise InvoiceError(f"no price for {sku}") from missing


async def invoice(ctx: dt.OrchestrationContext, sku: str) -> float:
    price: float = await ctx.call_activity(price_order, input=sku)
    return price


async def order(ctx: dt.OrchestrationContext, sku: str) -> float:
    total: float = await ctx.call_sub_orchestrator(invoice, input=sku, instance_id="inv-1")
    return total


async def asks_what_caused_it(ctx: dt.OrchestrationContext, sku: str) -> dict[str, bool]:
    try:
        await ctx.call_sub_orchestrator(invoice, input=sku, instance_id="inv-2")
    except dt.TaskFailedError as failure:
        return {
            kind.__name__: failure.details.is_caused_by(kind)
            for kind in (InvoiceError, LookupError, KeyError, ValueError, dt.TaskFailedError)
        }
    return {}


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[TaskHub]:
    hub = TaskHub(store_url)
    hub.register(invoice, order, asks_what_caused_it, activities=(price_order,))
    await hub.start()
    yield hub
    await hub.stop()


def _links(failure: dt.FailureDetails | None) -> list[tuple[str, str]]:
    assert failure is not None
    return [(link.error_type, link.message) for link in failure.chain()]


async def test_the_instance_failure_carries_the_activitys_exception(hub: TaskHub) -> None:
    state = await hub.run(invoice, "sku-9")
    assert state.runtime_status is dt.OrchestrationStatus.FAILED
    failure = state.failure_details
    assert _links(failure) == [
        ("TaskFailedError", "activity 'price_order' failed: InvoiceError: no price for sku-9"),
        ("InvoiceError", "no price for sku-9"),
        ("KeyError", "'sku-9'"),
    ]
    assert failure is not None and failure.inner_failure is not None
    # The activity's traceback, with the activity's own frames, travels with its link.
    activity_trace = failure.inner_failure.stack_trace or ""
    assert "in price_order" in activity_trace and "InvoiceError: no price" in activity_trace
    assert "in lookup_price" in (failure.inner_failure.inner_failure.stack_trace or "")  # type: ignore[union-attr]
    # The orchestration's link has the orchestration's frames, not the activity's.
    assert "in invoice" in (failure.stack_trace or "")
    assert "in price_order" not in (failure.stack_trace or "")
    # Base classes are recorded when the failure is captured.
    assert failure.inner_failure.error_types[:3] == ("InvoiceError", "LookupError", "Exception")


async def test_the_chain_runs_through_sub_orchestrations(hub: TaskHub) -> None:
    state = await hub.run(order, "sku-1")
    assert [kind for kind, _ in _links(state.failure_details)] == [
        "TaskFailedError",  # the parent's await of the child
        "TaskFailedError",  # the child's await of the activity
        "InvoiceError",  # the activity's exception
        "KeyError",  # its cause
    ]
    child = await hub.client.get_orchestration_state("inv-1")
    assert child is not None and state.failure_details is not None
    assert state.failure_details.inner_failure == child.failure_details
    assert state.failure_details.is_caused_by(KeyError)
    assert not state.failure_details.is_caused_by(ValueError)


async def test_orchestration_code_asks_what_caused_a_task_failure(hub: TaskHub) -> None:
    state = await hub.run(asks_what_caused_it, "sku-2")
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state.failure_details
    caused: dict[str, Any] = state.output
    assert caused == {
        "InvoiceError": True,
        "LookupError": True,  # a base class, as recorded when the activity failed
        "KeyError": True,  # the activity exception's cause
        "ValueError": False,
        "TaskFailedError": True,  # the child's failure, one link down
    }
