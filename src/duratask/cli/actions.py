"""Commands that act on instances: raise-event, terminate, suspend, resume, purge, rewind,
restart.

Signals (events, terminate, suspend, resume) are messages: a worker applies them when it next
processes the instance. The client refuses to send one to an instance that has already
finished (``OrchestrationFinishedError``), which the command reports with exit code 1.
"""

from __future__ import annotations

import click

from duratask.cli.errors import usage_error
from duratask.cli.instances import instance_id_argument
from duratask.cli.options import JSON, output_option, store_option, yes_option
from duratask.cli.parsing import TIME_FORMATS_HELP, parse_json_argument, parse_statuses, parse_time
from duratask.cli.render import format_time, print_json
from duratask.cli.store import require_store_url, with_client
from duratask.client import AsyncTaskHubClient


@click.command("raise-event")
@instance_id_argument()
@click.argument("event_name", metavar="NAME")
@click.option("--data", metavar="JSON", help="The event's data, as JSON; @file.json reads a file.")
@store_option
def raise_event(instance_id: str, event_name: str, data: str | None, store: str | None) -> None:
    """Send the external event NAME to instance ID."""
    payload = None if data is None else parse_json_argument(data, "--data")

    async def act(client: AsyncTaskHubClient) -> None:
        await client.raise_orchestration_event(instance_id, event_name, payload)

    with_client(store, act)
    click.echo(f"Raised event {event_name!r} for {instance_id!r}.")


@click.command("terminate")
@instance_id_argument()
@click.option("--reason", metavar="TEXT", help="Why; kept as the instance's output.")
@store_option
def terminate(instance_id: str, reason: str | None, store: str | None) -> None:
    """Terminate instance ID (and its running sub-orchestrations)."""

    async def act(client: AsyncTaskHubClient) -> None:
        await client.terminate_orchestration(instance_id, output=reason)

    with_client(store, act)
    click.echo(f"Asked {instance_id!r} to terminate.")


@click.command("suspend")
@instance_id_argument()
@click.option("--reason", metavar="TEXT", help="Why (recorded in the history).")
@store_option
def suspend(instance_id: str, reason: str | None, store: str | None) -> None:
    """Suspend instance ID until it is resumed."""

    async def act(client: AsyncTaskHubClient) -> None:
        await client.suspend_orchestration(instance_id, reason)

    with_client(store, act)
    click.echo(f"Asked {instance_id!r} to suspend.")


@click.command("resume")
@instance_id_argument()
@click.option("--reason", metavar="TEXT", help="Why (recorded in the history).")
@store_option
def resume(instance_id: str, reason: str | None, store: str | None) -> None:
    """Resume the suspended instance ID."""

    async def act(client: AsyncTaskHubClient) -> None:
        await client.resume_orchestration(instance_id, reason)

    with_client(store, act)
    click.echo(f"Asked {instance_id!r} to resume.")


@click.command("purge")
@instance_id_argument(required=False)
@click.option(
    "--completed-before",
    metavar="TIME",
    help=f"Purge every finished instance completed before TIME: {TIME_FORMATS_HELP}.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="With --completed-before: only these statuses (COMPLETED, FAILED, TERMINATED).",
)
@yes_option
@store_option
@output_option
def purge(
    instance_id: str | None,
    completed_before: str | None,
    statuses: tuple[str, ...],
    yes: bool,
    store: str | None,
    output: str,
) -> None:
    """Delete finished instances and their history for good.

    Either one instance (purge ID, with its finished sub-orchestrations), or every finished
    instance completed before a time (purge --completed-before TIME), after confirmation.
    """
    if (instance_id is None) == (completed_before is None):
        raise usage_error("give either an instance ID or --completed-before TIME (not both)")
    if instance_id is not None:
        if statuses:
            raise usage_error("--status applies only with --completed-before")
        purged = with_client(store, lambda client: client.purge_orchestration(instance_id))
    else:
        assert completed_before is not None
        before = parse_time(completed_before, "--completed-before")
        wanted = parse_statuses(statuses)
        url = require_store_url(store)
        if not yes:
            which = "/".join(s.value for s in wanted) if wanted else "finished"
            click.confirm(
                f"Purge every {which} instance completed before {format_time(before)}, "
                "with its history?",
                abort=True,
                err=True,
            )
        purged = with_client(
            url,
            lambda client: client.purge_orchestrations(
                completed_before=before, statuses=wanted or None
            ),
        )
    if output == JSON:
        print_json({"purged": purged})
    else:
        click.echo(f"Purged {purged} instance{'' if purged == 1 else 's'}.")


@click.command("rewind")
@instance_id_argument()
@click.option("--reason", metavar="TEXT", help="Why (recorded in the history).")
@store_option
def rewind(instance_id: str, reason: str | None, store: str | None) -> None:
    """Re-run the FAILED instance ID from its failed step, keeping completed work."""
    with_client(store, lambda client: client.rewind_orchestration(instance_id, reason))
    click.echo(f"Asked {instance_id!r} to rewind.")


@click.command("restart")
@instance_id_argument()
@click.option("--new-id", is_flag=True, help="Start under a new random id instead of reusing ID.")
@store_option
@output_option
def restart(instance_id: str, new_id: bool, store: str | None, output: str) -> None:
    """Start instance ID again from its original input; print the id started."""
    started = with_client(
        store, lambda client: client.restart_orchestration(instance_id, new_instance_id=new_id)
    )
    if output == JSON:
        print_json({"instance_id": started})
    else:
        click.echo(started)
