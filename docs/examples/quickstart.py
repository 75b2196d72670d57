"""The smallest complete program: an orchestration, two activities, a worker and a client."""

from __future__ import annotations

import duratask as dt


# --8<-- [start:code]
def charge(ctx: dt.ActivityContext, order: dict) -> str:  # sync or async def
    return f"charged {order['amount']:.2f} for order {order['id']}"


async def ship(ctx: dt.ActivityContext, item: str) -> str:
    return f"shipped {item}"


async def process_order(ctx: dt.OrchestrationContext, order: dict) -> dict:
    receipt = await ctx.call_activity(charge, input=order)
    shipped = await dt.when_all([ctx.call_activity(ship, input=item) for item in order["items"]])
    return {"receipt": receipt, "shipped": shipped}


def main(store: str = "sqlite:///hub.db") -> dict:  # or "memory://" for an in-process hub
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(process_order)
    worker.add_activity(charge)
    worker.add_activity(ship)

    with worker, dt.TaskHubClient(store) as client:
        order = {"id": 42, "amount": 9.5, "items": ["tea", "cups"]}
        iid = client.schedule_new_orchestration(process_order, input=order, instance_id="order-42")
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        print(dt.format_timeline(client.get_orchestration_history(iid)))
        return state.output


# --8<-- [end:code]

if __name__ == "__main__":
    print(main())
