"""A parent orchestration runs one child orchestration per warehouse, in parallel."""

from __future__ import annotations

import duratask as dt


# --8<-- [start:orchestrations]
def pack(ctx: dt.ActivityContext, shipment: dict) -> str:
    if shipment["warehouse"] == "oslo":
        raise RuntimeError("the Oslo warehouse is closed today")
    return f"{len(shipment['items'])} items packed in {shipment['warehouse']}"


async def ship_from_warehouse(ctx: dt.OrchestrationContext, shipment: dict) -> str:
    # A child is a whole orchestration: its own history, status and retries.
    return await ctx.call_activity(pack, input=shipment)


async def ship_order(ctx: dt.OrchestrationContext, order: dict) -> dict:
    children = {
        warehouse: ctx.call_sub_orchestrator(
            ship_from_warehouse,
            input={"warehouse": warehouse, "items": items},
            instance_id=f"{ctx.instance_id}:{warehouse}",  # readable, and unique per order
        )
        for warehouse, items in order["items_by_warehouse"].items()
    }
    # All children were started above; they run in parallel while we await them in turn.
    results = {}
    for warehouse, child in children.items():
        try:
            results[warehouse] = await child
        except dt.TaskFailedError as failure:
            results[warehouse] = f"failed: {failure.details.message}"
    return results


# --8<-- [end:orchestrations]


# --8<-- [start:main]
def main(store: str = "memory://sub-orchestrations") -> dict:
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(ship_order)
    worker.add_orchestration(ship_from_warehouse)
    worker.add_activity(pack)
    order = {"items_by_warehouse": {"lyon": ["a", "b"], "oslo": ["c"]}}
    with worker, dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(ship_order, input=order, instance_id="order-5")
        output = client.wait_for_orchestration_completion(iid, timeout=30).output
        page = client.query_orchestrations(parent_instance_id=iid)
        children = {s.instance_id: s.runtime_status.value for s in page.states}
        purged = client.purge_orchestration(iid)  # the parent and its finished children
    return {"output": output, "children": children, "purged": purged}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
