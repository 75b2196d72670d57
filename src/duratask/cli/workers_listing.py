"""``duratask workers``: the workers connected to a hub, and the work waiting for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import click
from rich.table import Table

from duratask._workers_json import backlog_to_json, worker_to_json
from duratask.backends import BacklogEntry, WorkerInfo
from duratask.cli.options import JSON, output_option, store_option
from duratask.cli.render import console, format_time, print_json
from duratask.cli.store import with_client
from duratask.client import AsyncTaskHubClient


@dataclass(frozen=True)
class _Report:
    workers: list[WorkerInfo]
    backlog: list[BacklogEntry]
    now: datetime


@click.command("workers")
@click.option(
    "--all", "include_quiet", is_flag=True, help="Also workers not heard from for 30 s or more."
)
@store_option
@output_option
def workers(include_quiet: bool, store: str | None, output: str) -> None:
    """Show the workers connected to the hub (what each registered, what it is running,
    when it was last heard from) and the work waiting, by orchestration and activity name."""

    async def fetch(client: AsyncTaskHubClient) -> _Report:
        found = await client.list_workers(connected_only=not include_quiet)
        return _Report(found, await client.backlog(), datetime.now(UTC))

    report = with_client(store, fetch)
    if output == JSON:
        print_json(
            {
                "workers": [worker_to_json(w, report.now) for w in report.workers],
                "backlog": [backlog_to_json(e) for e in report.backlog],
            }
        )
        return
    _render(report)


def _render(report: _Report) -> None:
    out = console()
    if report.workers:
        table = Table(box=None, header_style="bold", pad_edge=False, title="Workers")
        for column in ("Host", "PID", "Started (UTC)", "Last heard", "Running", "Registered"):
            table.add_column(column, overflow="fold")
        for w in report.workers:
            ago = (report.now - w.heartbeat_at).total_seconds()
            running = ", ".join(f"{kind} {n}" for kind, n in sorted(w.in_flight.items()) if n)
            registered = (
                f"{len(w.orchestrations)} orchestrations, {len(w.activities)} activities"
                f" on {', '.join(sorted(w.task_queues))}"
            )
            table.add_row(
                w.host,
                str(w.pid),
                format_time(w.started_at),
                f"{ago:.0f}s ago",
                running or "idle",
                registered,
            )
        out.print(table)
    else:
        out.print("No connected workers.")
    if report.backlog:
        table = Table(box=None, header_style="bold", pad_edge=False, title="Backlog")
        for column in ("Kind", "Name", "Ready", "Later", "Leased"):
            table.add_column(column, overflow="fold")
        for e in report.backlog:
            table.add_row(e.kind, e.name, str(e.ready), str(e.later), str(e.leased))
        out.print(table)
    else:
        out.print("Nothing waiting.")
