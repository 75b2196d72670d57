"""The Azure chaos hub's storage checks see what they look for: work rows, instance leases,
history rows out of place (so a chaos run that passes on Azure Storage passed them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import duratask as dt
from tests.conformance.e2e_hub import wait_until

from .azure_hub import AzureHub
from .hubs import make_target


async def noop(ctx: dt.OrchestrationContext, _: object) -> None:
    return None


def _write(hub: AzureHub, row: dict[str, object]) -> None:
    from azure.data.tables import TableServiceClient, UpdateMode  # the azure extra

    with TableServiceClient.from_connection_string(hub.connection_string) as service:
        service.get_table_client(f"{hub.hub}History").upsert_entity(row, mode=UpdateMode.MERGE)


async def test_work_leases_and_stray_history_rows_are_found(tmp_path: Path) -> None:
    with make_target("azure", tmp_path) as target:
        assert isinstance(target, AzureHub)
        async with dt.AsyncTaskHubClient(target.client_url) as client:
            await client.schedule_new_orchestration(noop, instance_id="a/b")
        assert target.instance_ids() == {"a/b"}
        left = target.leftovers()
        assert [(table, iid) for table, iid, _ in left["messages"]] == [("History", "a/b")]
        assert left["leases"] == [] and left["activities"] == [] and left["outbox"] == []
        assert left["entity_leases"] == [] and left["staged"] == []
        assert target.sequence_numbers() == {} and target.storage_problems() == []
        assert target.finished_count() == 0
        assert target.figures() == {"stale_instance_copies": 0, "missing_instance_copies": 0}

        sentinel = target.rows("History", "RowKey eq 'sentinel'")[0]
        pk, history = sentinel["PartitionKey"], sentinel["Hist"]
        _write(target, {"PartitionKey": pk, "RowKey": "sentinel", "Token": "t"})
        _write(target, {"PartitionKey": pk, "RowKey": f"h-{history}-00000000", "Body": "{}"})
        _write(target, {"PartitionKey": pk, "RowKey": "h-0ld-00000003", "Body": "{}"})
        assert target.leftovers()["leases"] == ["a/b"]
        assert target.sequence_numbers() == {"a/b": [0]}
        assert target.storage_problems() == [
            "a/b: history row 0ld-3 of no current history",
            "a/b: sentinel length 0, rows differ",
        ]


async def wait_for_go(ctx: dt.OrchestrationContext, _: object) -> str:
    return str(await ctx.wait_for_external_event("go"))


async def test_the_instances_copy_follows_every_status_change(tmp_path: Path) -> None:
    with make_target("azure", tmp_path) as target:
        assert isinstance(target, AzureHub)

        def copied_as(status: str) -> Callable[[], Awaitable[bool]]:
            async def holds() -> bool:
                return bool(target.rows("Instances")[0]["Status"] == status)

            return holds

        worker = dt.TaskHubWorker(target.url)
        worker.add_orchestration(wait_for_go)
        with worker:
            async with dt.AsyncTaskHubClient(target.client_url) as client:
                iid = await client.schedule_new_orchestration(wait_for_go)
                await client.wait_for_orchestration_start(iid, timeout=30)
                await wait_until(copied_as("RUNNING"), 30, "the copy to say RUNNING")
                await client.suspend_orchestration(iid)
                await wait_until(copied_as("SUSPENDED"), 30, "the copy to say SUSPENDED")
                await client.resume_orchestration(iid)
                await wait_until(copied_as("RUNNING"), 30, "the copy to say RUNNING")
                await client.raise_orchestration_event(iid, "go", "now")
                await client.wait_for_orchestration_completion(iid, timeout=30)
                await wait_until(copied_as("COMPLETED"), 30, "the copy to say COMPLETED")
        assert target.figures() == {"stale_instance_copies": 0, "missing_instance_copies": 0}
