"""An operator's round: find the failed instances, rewind them once fixed, purge old ones."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import duratask as dt

MAIL_SERVER = {"up": False}


# --8<-- [start:workflow]
def send_invoice(ctx: dt.ActivityContext, order_id: str) -> str:
    if not MAIL_SERVER["up"]:
        raise ConnectionRefusedError("mail server down")
    return f"invoice sent for {order_id}"


async def bill(ctx: dt.OrchestrationContext, order_id: str) -> str:
    return await ctx.call_activity(send_invoice, input=order_id)


# --8<-- [end:workflow]


# --8<-- [start:cli]
def duratask_cli(*args: str, store: str) -> Any:
    """Run a `duratask` command and parse its JSON output, as a cron job or a script would."""
    command = [sys.executable, "-m", "duratask.cli", *args, "--store", store, "--output", "json"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


# --8<-- [end:cli]


# --8<-- [start:main]
def main(store: str = "sqlite:///ops-hub.db") -> dict:
    MAIL_SERVER["up"] = False
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(bill)
    worker.add_activity(send_invoice)
    with worker, dt.TaskHubClient(store) as client:
        for n in range(3):
            iid = client.schedule_new_orchestration(bill, input=f"o-{n}", instance_id=f"bill-{n}")
            client.wait_for_orchestration_completion(iid, timeout=30)

        # What `duratask list --status FAILED` shows, read by a script (another process).
        failed = duratask_cli("list", "--status", "FAILED", store=store)
        failed_ids = [instance["instance_id"] for instance in failed["instances"]]

        MAIL_SERVER["up"] = True  # the cause is fixed: run each from its failed step
        for iid in failed_ids:
            client.rewind_orchestration(iid, reason="mail server is back")
        outputs = [
            client.wait_for_orchestration_completion(i, timeout=30).output for i in failed_ids
        ]

        # Keep the hub small: delete finished instances (and their histories) for good.
        purged = client.purge_orchestrations(statuses=[dt.OrchestrationStatus.COMPLETED])
    return {"failed": failed_ids, "after rewind": outputs, "purged": purged}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
