"""Commands that start and inspect one instance: start, status, history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from duratask._executions_json import execution_to_json
from duratask.backends.base import ExecutionRecord
from duratask.cli.errors import ExitCode, usage_error
from duratask.cli.options import JSON, F, output_option, store_option
from duratask.cli.parsing import (
    TIME_FORMATS_HELP,
    parse_json_argument,
    parse_time,
)
from duratask.cli.render import (
    print_json,
    render_executions,
    render_state,
    render_timeline,
    state_to_json,
)
from duratask.cli.store import Creates, with_client
from duratask.cli.timeline_rows import timeline_rows
from duratask.client import AsyncTaskHubClient, validate_instance_id
from duratask.errors import InvalidInstanceIdError, OrchestrationNotFoundError
from duratask.history import HistoryEvent, history_to_json
from duratask.state import DEFAULT_TASK_QUEUE, OrchestrationState, OrchestrationStatus

_FOREVER = 10 * 365 * 86400.0  # what ``status --wait`` without --timeout waits, in seconds


def checked_instance_id(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback: reject ids the task hub could never hold (exit code 2)."""
    if value is None:
        return None
    try:
        return validate_instance_id(value)
    except InvalidInstanceIdError as exc:
        raise usage_error(str(exc)) from None


def instance_id_argument(required: bool = True) -> Callable[[F], F]:
    """The ID argument, validated."""
    return click.argument(
        "instance_id",
        metavar="ID" if required else "[ID]",
        required=required,
        callback=checked_instance_id,
    )


async def require_state(client: AsyncTaskHubClient, instance_id: str) -> OrchestrationState:
    """The instance's state, or :class:`OrchestrationNotFoundError` (exit code 1)."""
    state = await client.get_orchestration_state(instance_id)
    if state is None:
        raise OrchestrationNotFoundError(instance_id)
    return state


# -- start -----------------------------------------------------------------------------


@click.command("start")
@click.argument("name")
@click.option(
    "--input",
    "input_text",
    metavar="JSON",
    help="The input, as JSON; @file.json reads it from a file, @- from stdin.",
)
@click.option(
    "--id",
    "instance_id",
    metavar="ID",
    callback=checked_instance_id,
    help="Instance id (default: a random one).",
)
@click.option(
    "--start-at", metavar="TIME", help=f"Start no earlier than TIME: {TIME_FORMATS_HELP}."
)
@click.option("--version", metavar="V", help="Orchestration version to run.")
@click.option(
    "--task-queue",
    metavar="QUEUE",
    default=DEFAULT_TASK_QUEUE,
    show_default=True,
    help="The task queue to run the instance on (workers serving it take it).",
)
@store_option
@output_option
def start(
    name: str,
    input_text: str | None,
    instance_id: str | None,
    start_at: str | None,
    version: str | None,
    task_queue: str,
    store: str | None,
    output: str,
) -> None:
    """Start an instance of orchestration NAME and print its id."""
    payload = None if input_text is None else parse_json_argument(input_text, "--input")
    when = None if start_at is None else parse_time(start_at, "--start-at")
    started = with_client(
        store,
        lambda client: client.schedule_new_orchestration(
            name,
            input=payload,
            instance_id=instance_id,
            start_at=when,
            version=version,
            task_queue=task_queue,
        ),
        creates=Creates.HUB,
    )
    if output == JSON:
        print_json({"instance_id": started})
    else:
        click.echo(started)


# -- status ----------------------------------------------------------------------------


@click.command("status")
@instance_id_argument()
@click.option("--wait", is_flag=True, help="Wait until the instance has finished.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="With --wait: give up after SECONDS (exit code 4). Default: no limit.",
)
@store_option
@output_option
@click.pass_context
def status(
    ctx: click.Context,
    instance_id: str,
    wait: bool,
    timeout: float | None,
    store: str | None,
    output: str,
) -> None:
    """Show an instance's state.

    Exit code 0 when found, 1 when not. With --wait: 0 when it COMPLETED, 3 when it FAILED
    or was TERMINATED, 4 when the wait timed out.
    """
    if timeout is not None and not wait:
        raise usage_error("--timeout applies only with --wait")

    async def fetch(client: AsyncTaskHubClient) -> tuple[OrchestrationState, str | None, int]:
        if wait:
            limit = _FOREVER if timeout is None else timeout
            state = await client.wait_for_orchestration_completion(instance_id, timeout=limit)
        else:
            state = await require_state(client, instance_id)
        earlier = await client.get_orchestration_executions(instance_id)
        execution_round = earlier[-1].generation + 1 if earlier else 1
        return state, await client.why_waiting(state), execution_round

    state, waiting, execution_round = with_client(store, fetch)
    if output == JSON:
        print_json({**state_to_json(state), "waiting": waiting, "round": execution_round})
    else:
        render_state(state, waiting, execution_round)
    if wait and state.runtime_status is not OrchestrationStatus.COMPLETED:
        ctx.exit(ExitCode.INSTANCE_FAILED)


# -- history ---------------------------------------------------------------------------


@click.command("history")
@instance_id_argument()
@click.option(
    "--executions",
    is_flag=True,
    help="List the earlier executions (continue-as-new rounds) instead: one record each.",
)
@store_option
@output_option
def history(instance_id: str, executions: bool, store: str | None, output: str) -> None:
    """Show an instance's history as a timeline.

    Each completion shows how long its task, timer or sub-orchestration took; an external
    event shows how long the instance had been waiting since its previous step. With
    --output json the history is printed in the export format that replay tooling reads.
    The history is the current execution's; --executions lists the earlier ones (their
    histories are gone: each keeps its times, how it ended, and its input and output cut
    short).
    """
    if executions:
        _earlier_executions(instance_id, store, output)
        return

    async def fetch(client: AsyncTaskHubClient) -> tuple[OrchestrationState, list[HistoryEvent]]:
        state = await require_state(client, instance_id)
        return state, await client.get_orchestration_history(instance_id)

    state, events = with_client(store, fetch)
    if output == JSON:
        click.echo(history_to_json(events))
    else:
        render_timeline(state, timeline_rows(events))


def _earlier_executions(instance_id: str, store: str | None, output: str) -> None:
    async def fetch(
        client: AsyncTaskHubClient,
    ) -> tuple[OrchestrationState, list[ExecutionRecord]]:
        state = await require_state(client, instance_id)
        return state, await client.get_orchestration_executions(instance_id)

    state, records = with_client(store, fetch)
    if output == JSON:
        print_json([execution_to_json(r) for r in records])
    else:
        render_executions(state, records)
