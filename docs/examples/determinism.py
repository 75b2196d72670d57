"""Orchestrations decide, activities do: the determinism rules in one small workflow."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import duratask as dt
from duratask.testing import replay


# --8<-- [start:activities]
def quote_price(ctx: dt.ActivityContext, sku: str) -> float:
    # Activities may do anything: call services, read clocks, draw random numbers.
    # Their result is recorded, so the orchestration sees the same value on every replay.
    return round(10 + random.random(), 2)


def reserve_stock(ctx: dt.ActivityContext, request: dict) -> str:
    print(f"reserving {request['sku']} for order {request['order_id']}")
    return f"reservation of {request['sku']} at {datetime.now(UTC):%H:%M:%S}"


# --8<-- [end:activities]


# --8<-- [start:orchestration]
async def place_order(ctx: dt.OrchestrationContext, sku: str) -> dict:
    order_id = str(ctx.new_uuid())  # not uuid.uuid4(): the same id on every replay
    placed_at = ctx.current_utc_datetime  # not datetime.now(): the same time on replay
    price = await ctx.call_activity(quote_price, input=sku)  # not random.random()
    reservation = await ctx.call_activity(reserve_stock, input={"sku": sku, "order_id": order_id})
    ctx.logger.info("order %s reserved at %.2f", order_id, price)  # logged once, not per replay
    return {
        "order_id": order_id,
        "price": price,
        "reservation": reservation,
        "pay_by": (placed_at + timedelta(days=1)).isoformat(),
    }


# --8<-- [end:orchestration]


# --8<-- [start:main]
def main(store: str = "memory://determinism") -> dict:
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(place_order)
    worker.add_activity(quote_price)
    worker.add_activity(reserve_stock)
    with worker, dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(place_order, input="sku-7")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        history = client.get_orchestration_history(iid)

    # Run the code again against what was recorded, as a worker does after a restart:
    # no activity runs, and the id, the time and the price come out the same.
    again = replay(place_order, history)
    assert again.output == state.output
    return state.output


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
