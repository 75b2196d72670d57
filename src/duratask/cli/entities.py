"""``duratask entity``: list, show, signal and clean durable entities."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from duratask.backends.base import EntityMetadata
from duratask.cli.errors import ExitCode, cli_error
from duratask.cli.options import JSON, output_option, store_option
from duratask.cli.parsing import TIME_FORMATS_HELP, parse_json_argument, parse_time
from duratask.cli.render import console, format_time, print_json
from duratask.cli.store import with_client
from duratask.client import AsyncTaskHubClient

PAGE_SIZE = 100


@click.group("entity")
def entity() -> None:
    """List, show, signal or clean durable entities (ids are @name@key)."""


@entity.command("list")
@click.option("--name", help="Only entities of this name.")
@click.option("--prefix", metavar="P", help="Only entity ids starting with P (e.g. @counter@).")
@click.option("--since", metavar="TIME", help="Only entities changed at or after TIME.")
@click.option("--until", metavar="TIME", help="Only entities changed before TIME.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many.",
)
@click.option("--state/--no-state", "with_state", default=False, help="Show each entity's state.")
@store_option
@output_option
def list_entities(
    name: str | None,
    prefix: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    with_state: bool,
    store: str | None,
    output: str,
) -> None:
    """List entities with a state (or a lock holder), by id.

    TIME is ISO-8601 (naive means UTC), 'now', or relative to now: -30m, -2h, -7d.
    """
    start = None if since is None else parse_time(since, "--since")
    end = None if until is None else parse_time(until, "--until")

    async def query(client: AsyncTaskHubClient) -> tuple[list[EntityMetadata], bool]:
        found: list[EntityMetadata] = []
        token = None
        while len(found) <= limit:
            page = await client.query_entities(
                name=name,
                entity_id_prefix=prefix,
                last_modified_from=start,
                last_modified_to=end,
                include_state=with_state or output == JSON,
                page_size=min(PAGE_SIZE, limit + 1 - len(found)),
                continuation_token=token,
            )
            found += page.entities
            token = page.continuation_token
            if token is None:
                break
        return found[:limit], len(found) > limit or token is not None

    entities, more = with_client(store, query)
    if output == JSON:
        print_json({"entities": [_to_json(e) for e in entities], "more": more})
        return
    if not entities:
        click.echo("No matching entities.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ENTITY", "LAST MODIFIED", "LOCKED BY", "BACKLOG"):
        table.add_column(column)
    if with_state:
        table.add_column("STATE")
    for e in entities:
        row = [e.entity_id, format_time(e.last_modified_at), e.locked_by or "", str(e.backlog)]
        if with_state:
            row.append(e.serialized_state or "")
        table.add_row(*row)
    console().print(table)
    suffix = "; more match (raise --limit to see them)" if more else ""
    click.echo(f"{len(entities)} entities shown{suffix}")


@entity.command("get")
@click.argument("entity_id", metavar="ID")
@store_option
@output_option
def get(entity_id: str, store: str | None, output: str) -> None:
    """Show entity ID (@name@key): its state, lock holder and backlog."""
    found = with_client(store, lambda client: client.get_entity(entity_id))
    if found is None:
        raise cli_error(
            f"no entity {entity_id!r} (or it has no state)", ExitCode.NOT_FOUND_OR_REFUSED
        )
    if output == JSON:
        print_json(_to_json(found))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("Entity", found.entity_id)
    table.add_row("Name", found.name)
    table.add_row("Key", found.key)
    table.add_row("Last modified", format_time(found.last_modified_at, millis=True))
    table.add_row("Locked by", found.locked_by or "-")
    table.add_row("Backlog", str(found.backlog))
    state = found.serialized_state
    table.add_row("State", json.dumps(json.loads(state), indent=2) if state else "-")
    console().print(table)


@entity.command("signal")
@click.argument("entity_id", metavar="ID")
@click.argument("operation")
@click.option(
    "--input", "input_", metavar="JSON", help="The input, as JSON; @file.json reads a file."
)
@click.option("--at", metavar="TIME", help=f"Run it no earlier than TIME ({TIME_FORMATS_HELP}).")
@store_option
def signal(
    entity_id: str, operation: str, input_: str | None, at: str | None, store: str | None
) -> None:
    """Send OPERATION to entity ID (@name@key), one-way."""
    payload = None if input_ is None else parse_json_argument(input_, "--input")
    when = None if at is None else parse_time(at, "--at")

    async def act(client: AsyncTaskHubClient) -> None:
        await client.signal_entity(entity_id, operation, payload, signal_time=when)

    with_client(store, act)
    click.echo(f"Signalled {operation!r} to {entity_id!r}.")


@entity.command("clean")
@click.option("--keep-empty", is_flag=True, help="Do not delete entities with no state.")
@click.option("--keep-locks", is_flag=True, help="Do not release orphaned locks.")
@store_option
@output_option
def clean(keep_empty: bool, keep_locks: bool, store: str | None, output: str) -> None:
    """Release locks held by orchestrations that no longer run; delete empty entities."""
    result = with_client(
        store,
        lambda client: client.clean_entity_storage(
            remove_empty_entities=not keep_empty, release_orphaned_locks=not keep_locks
        ),
    )
    if output == JSON:
        print_json(
            {
                "empty_entities_removed": result.empty_entities_removed,
                "orphaned_locks_released": result.orphaned_locks_released,
            }
        )
        return
    click.echo(
        f"Removed {result.empty_entities_removed} empty entities; released "
        f"{result.orphaned_locks_released} orphaned locks."
    )


def _to_json(entity: EntityMetadata) -> dict[str, Any]:
    state = entity.serialized_state
    return {
        "entity_id": entity.entity_id,
        "name": entity.name,
        "key": entity.key,
        "last_modified_at": _iso(entity.last_modified_at),
        "locked_by": entity.locked_by,
        "backlog": entity.backlog,
        "state": None if state is None else json.loads(state),
    }


def _iso(value: datetime) -> str:
    return value.isoformat()
