"""``duratask hub``: create, inspect and delete a task hub."""

from __future__ import annotations

import click

from duratask.cli.options import JSON, output_option, store_option, yes_option
from duratask.cli.render import console, print_json, render_counts
from duratask.cli.store import Creates, mask_url, require_store_url, with_client
from duratask.client import AsyncTaskHubClient
from duratask.state import OrchestrationStatus


@click.group("hub")
def hub() -> None:
    """Create, inspect or delete a task hub."""


@hub.command("info")
@store_option
@output_option
def info(store: str | None, output: str) -> None:
    """Show the store and how many instances it holds, by status."""
    url = require_store_url(store)
    counts = with_client(url, lambda client: client.count_orchestrations())
    complete = {s: counts.get(s, 0) for s in OrchestrationStatus}
    if output == JSON:
        print_json(
            {
                "store": mask_url(url),
                "counts": {s.value: n for s, n in complete.items()},
                "total": sum(complete.values()),
            }
        )
        return
    console().print(f"Store: {mask_url(url)}")
    render_counts(complete)


@hub.command("create")
@store_option
def create(store: str | None) -> None:
    """Create the task hub, or bring its schema up to date (safe to repeat)."""
    url = require_store_url(store)

    async def opened(client: AsyncTaskHubClient) -> None:
        """Connecting creates or migrates the hub."""

    with_client(url, opened, creates=Creates.PATH)
    click.echo(f"Task hub ready at {mask_url(url)}.")


@hub.command("delete")
@yes_option
@store_option
def delete(yes: bool, store: str | None) -> None:
    """Delete the task hub with every instance and its history."""
    url = require_store_url(store)
    if not yes:
        click.confirm(
            f"Delete the task hub at {mask_url(url)} with every instance and its history?",
            abort=True,
            err=True,
        )

    async def drop(client: AsyncTaskHubClient) -> None:
        await client.store.delete_task_hub()

    with_client(url, drop)
    click.echo(f"Deleted the task hub at {mask_url(url)}.")
