"""One setting picks the task hub: the same code runs on SQLite, PostgreSQL or in memory."""

from __future__ import annotations

import os

import duratask as dt


# --8<-- [start:workflow]
def square(ctx: dt.ActivityContext, n: int) -> int:
    return n * n


async def sum_of_squares(ctx: dt.OrchestrationContext, n: int) -> int:
    squares = await dt.when_all([ctx.call_activity(square, input=i) for i in range(1, n + 1)])
    return sum(squares)


# --8<-- [end:workflow]


# --8<-- [start:main]
def store_url() -> str:
    # sqlite:///hub.db, postgresql://app@db:5432/orders?schema=orders_hub, memory://
    return os.environ.get("DURATASK_STORE", "sqlite:///hub.db")


def main(store: str | None = None) -> int:
    store = store or store_url()
    # Two workers on one hub share its work, as two processes (on SQLite, on one machine)
    # or two machines (on PostgreSQL) would. Each store object is opened on first use.
    workers = [dt.TaskHubWorker(store) for _ in range(2)]
    for worker in workers:
        worker.add_orchestration(sum_of_squares)
        worker.add_activity(square)
    with workers[0], workers[1], dt.TaskHubClient(store) as client:
        iid = client.schedule_new_orchestration(sum_of_squares, input=10)
        return client.wait_for_orchestration_completion(iid, timeout=30).output


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
