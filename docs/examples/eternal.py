"""An eternal orchestration: one item per execution, continue-as-new, no event lost."""

from __future__ import annotations

import duratask as dt


# --8<-- [start:orchestration]
def handle(ctx: dt.ActivityContext, item: str) -> str:
    return item.upper()


async def inbox(ctx: dt.OrchestrationContext, processed: list[str]) -> list[str]:
    item = await ctx.wait_for_external_event("item")
    if item == "STOP":
        return processed
    processed = [*processed, await ctx.call_activity(handle, input=item)]
    # Start afresh with an empty history. Items that arrived while this execution was busy
    # are passed on to the next one, ahead of newer ones, in the order they were sent.
    ctx.continue_as_new(processed, save_events=True)
    return processed  # ignored: the new execution carries on


# --8<-- [end:orchestration]


# --8<-- [start:main]
def main(store: str = "memory://eternal") -> dict:
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(inbox)
    worker.add_activity(handle)
    with worker, dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(inbox, input=[])
        for item in ["a", "b", "c", "d", "STOP"]:  # sent faster than they are handled
            client.raise_orchestration_event(iid, "item", data=item)
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        history = client.get_orchestration_history(iid)  # the last execution's only
    return {"output": state.output, "last history": sorted({e.event_type.name for e in history})}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
