"""An instance's history, the replay that rebuilds its state, and the cache that avoids it."""

from __future__ import annotations

import duratask as dt

# Counts how often the orchestration function is entered from the top. Orchestration code
# must not keep state like this: it is here only to show when replays happen.
ENTRIES: list[str] = []


# --8<-- [start:workflow]
def add_one(ctx: dt.ActivityContext, n: int) -> int:
    return n + 1


async def count_to_three(ctx: dt.OrchestrationContext, start: int) -> int:
    ENTRIES.append("replaying" if ctx.is_replaying else "running")
    n = start
    for _ in range(3):
        n = await ctx.call_activity(add_one, input=n)
    return n


# --8<-- [end:workflow]


# --8<-- [start:run]
def run(store: str, cache_size: int) -> tuple[list[str], list[str]]:
    """Run one instance; return how the code was entered and the history's event types."""
    ENTRIES.clear()
    worker = dt.TaskHubWorker(store, orchestration_cache_size=cache_size)
    worker.add_orchestration(count_to_three)
    worker.add_activity(add_one)
    with worker, dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(count_to_three, input=0)
        assert client.wait_for_orchestration_completion(iid, timeout=30).output == 3
        history = client.get_orchestration_history(iid)
    print(dt.format_timeline(history))
    return list(ENTRIES), [event.event_type.name for event in history]


def main(store: str = "memory://history") -> dict:
    cached_entries, events = run(store, cache_size=1000)  # the default
    uncached_entries, _ = run(store, cache_size=0)
    return {"events": events, "with cache": cached_entries, "without cache": uncached_entries}


# --8<-- [end:run]

if __name__ == "__main__":
    for key, value in main().items():
        print(key, value)
