"""``duratask schedule``: create, list, describe, pause, resume, trigger, backfill and delete
schedules (recurring orchestrations the workers fire)."""

from __future__ import annotations

import re
from datetime import timedelta

import click
from rich.table import Table

from duratask._schedules_json import description_to_json, info_to_json
from duratask.cli.errors import usage_error
from duratask.cli.options import JSON, output_option, store_option, yes_option
from duratask.cli.parsing import TIME_FORMATS_HELP, parse_json_argument, parse_time
from duratask.cli.render import console, format_time, print_json
from duratask.cli.store import with_client
from duratask.client import AsyncTaskHubClient
from duratask.schedules import (
    CatchUp,
    Interval,
    Overlap,
    ScheduleInfo,
    ScheduleSpec,
)

_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DURATION_HELP = "a duration such as 30s, 15m, 1h30m, 2d"


def parse_duration(text: str, option: str) -> timedelta:
    """A duration written ``1h30m`` (units s, m, h, d, w)."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise usage_error(f"{option}: cannot read {text[:40]!r}; use {DURATION_HELP}")
    delta = timedelta()
    for amount, unit in _PART.findall(value):
        delta += timedelta(**{_UNITS[unit]: int(amount)})
    return delta


def when_text(info: ScheduleInfo) -> str:
    """The spec in one line: its cron expressions (with the zone) and intervals."""
    parts = [f"cron {c!r}" for c in info.spec.cron]
    if parts and info.spec.time_zone != "UTC":
        parts[-1] += f" in {info.spec.time_zone}"
    parts += [
        f"every {i.every}" + (f" +{i.offset}" if i.offset else "") for i in info.spec.intervals
    ]
    return ", ".join(parts)


def state_text(info: ScheduleInfo) -> str:
    """``active``, ``paused`` (with the note) or ``finished``."""
    if info.paused:
        return "paused" + (f" ({info.note})" if info.note else "")
    return "finished" if info.finished else "active"


schedule_id_argument = click.argument("schedule_id", metavar="ID")


@click.group("schedule")
def schedule() -> None:
    """Create and manage schedules: orchestrations started once per slot of a calendar."""


@schedule.command("create")
@schedule_id_argument
@click.argument("orchestration", metavar="ORCHESTRATION")
@click.option(
    "--cron",
    "cron",
    multiple=True,
    metavar="EXPR",
    help="A cron expression (5 or 6 fields); repeatable.",
)
@click.option("--every", "every", metavar="DURATION", help=f"An interval: {DURATION_HELP}.")
@click.option("--offset", metavar="DURATION", help="Where in the interval the slot falls.")
@click.option(
    "--tz",
    "time_zone",
    default="UTC",
    show_default=True,
    help="IANA time zone of the cron expressions.",
)
@click.option("--start", metavar="TIME", help=f"No slot before this: {TIME_FORMATS_HELP}.")
@click.option("--end", metavar="TIME", help="No slot after this.")
@click.option("--jitter", metavar="DURATION", help="Delay each slot by up to this.")
@click.option(
    "--input",
    "input_json",
    metavar="JSON",
    help="Each run's input, as JSON; @file.json reads a file.",
)
@click.option("--version", "version", metavar="VERSION", help="The orchestration version.")
@click.option(
    "--overlap",
    type=click.Choice([o.value for o in Overlap]),
    default=Overlap.SKIP.value,
    show_default=True,
    help="What a slot does while the previous run still runs.",
)
@click.option(
    "--catch-up",
    "catch_up",
    type=click.Choice([c.value for c in CatchUp]),
    default=CatchUp.WINDOW.value,
    show_default=True,
    help="What happens to slots missed while no worker fired.",
)
@click.option(
    "--catch-up-window",
    metavar="DURATION",
    default="1d",
    show_default=True,
    help="How old a missed slot may be and still run (window).",
)
@click.option("--run-limit", type=int, metavar="N", help="Start at most N scheduled runs.")
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--note", metavar="TEXT", help="A note (why it is paused).")
@store_option
def create(
    schedule_id: str,
    orchestration: str,
    cron: tuple[str, ...],
    every: str | None,
    offset: str | None,
    time_zone: str,
    start: str | None,
    end: str | None,
    jitter: str | None,
    input_json: str | None,
    version: str | None,
    overlap: str,
    catch_up: str,
    catch_up_window: str,
    run_limit: int | None,
    paused: bool,
    note: str | None,
    store: str | None,
) -> None:
    """Create schedule ID that starts ORCHESTRATION at every slot from now on."""
    intervals = []
    if every is not None:
        shift = parse_duration(offset, "--offset") if offset else timedelta(0)
        intervals.append(Interval(parse_duration(every, "--every"), shift))
    elif offset is not None:
        raise usage_error("--offset needs --every")
    spec = ScheduleSpec(
        cron=cron,
        intervals=intervals,
        time_zone=time_zone,
        start_at=parse_time(start, "--start") if start else None,
        end_at=parse_time(end, "--end") if end else None,
        jitter=parse_duration(jitter, "--jitter") if jitter else timedelta(0),
    )
    payload = None if input_json is None else parse_json_argument(input_json, "--input")

    async def act(client: AsyncTaskHubClient) -> ScheduleInfo:
        return await client.create_schedule(
            schedule_id,
            orchestration,
            spec,
            input=payload,
            version=version,
            overlap=Overlap(overlap),
            catch_up=CatchUp(catch_up),
            catch_up_window=parse_duration(catch_up_window, "--catch-up-window"),
            run_limit=run_limit,
            paused=paused,
            note=note,
        )

    info = with_client(store, act)
    nxt = format_time(info.next_fire_at) or "never"
    click.echo(f"Created schedule {schedule_id!r}; next fire time: {nxt}.")


@schedule.command("list")
@click.option("--prefix", metavar="TEXT", help="Only schedules whose id starts with TEXT.")
@store_option
@output_option
def list_schedules(prefix: str | None, store: str | None, output: str) -> None:
    """List the schedules, by id."""
    found = with_client(store, lambda client: client.list_schedules(prefix=prefix))
    if output == JSON:
        print_json([info_to_json(i) for i in found])
        return
    table = Table("ID", "Orchestration", "When", "State", "Runs", "Next fire time")
    for info in found:
        table.add_row(
            info.schedule_id,
            info.orchestration,
            when_text(info),
            state_text(info),
            str(info.runs),
            format_time(info.next_fire_at),
        )
    console().print(table)


@schedule.command("describe")
@schedule_id_argument
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
@click.option(
    "--next", "next_count", default=5, show_default=True, help="How many next fire times."
)
@store_option
@output_option
def describe(schedule_id: str, runs: int, next_count: int, store: str | None, output: str) -> None:
    """Show schedule ID: its definition, state, recent runs and next fire times."""
    described = with_client(
        store,
        lambda client: client.describe_schedule(schedule_id, runs=runs, next_fire_times=next_count),
    )
    if output == JSON:
        print_json(description_to_json(described))
        return
    info = described.info
    out = console()
    out.print(f"Schedule:      {info.schedule_id}")
    out.print(
        f"Orchestration: {info.orchestration}" + (f" ({info.version})" if info.version else "")
    )
    out.print(f"When:          {when_text(info)}")
    out.print(f"State:         {state_text(info)}")
    out.print(
        f"Policies:      overlap {info.overlap.value}, catch-up {info.catch_up.value}"
        + (f", run limit {info.run_limit}" if info.run_limit is not None else "")
    )
    out.print(f"Runs:          {info.runs} started, {info.skipped} skipped")
    out.print(
        "Next:          " + (", ".join(format_time(t) for t in described.next_fire_times) or "none")
    )
    if described.recent_runs:
        table = Table("Run", "Slot", "Kind", "Status")
        for run in described.recent_runs:
            status = run.status.value if run.status is not None else ""
            table.add_row(run.instance_id, format_time(run.slot), run.kind, status)
        out.print(table)


@schedule.command("pause")
@schedule_id_argument
@click.option("--note", metavar="TEXT", help="Why.")
@store_option
def pause(schedule_id: str, note: str | None, store: str | None) -> None:
    """Pause schedule ID: slots reached while paused are skipped."""
    with_client(store, lambda client: client.pause_schedule(schedule_id, note))
    click.echo(f"Paused schedule {schedule_id!r}.")


@schedule.command("resume")
@schedule_id_argument
@click.option("--note", metavar="TEXT", help="Why.")
@store_option
def resume(schedule_id: str, note: str | None, store: str | None) -> None:
    """Resume schedule ID from now on."""
    info = with_client(store, lambda client: client.resume_schedule(schedule_id, note))
    nxt = format_time(info.next_fire_at) or "never"
    click.echo(f"Resumed schedule {schedule_id!r}; next fire time: {nxt}.")


@schedule.command("trigger")
@schedule_id_argument
@store_option
def trigger(schedule_id: str, store: str | None) -> None:
    """Start a run of schedule ID now."""
    run = with_client(store, lambda client: client.trigger_schedule(schedule_id))
    click.echo(f"Started {run!r}.")


@schedule.command("backfill")
@schedule_id_argument
@click.option(
    "--from", "start", required=True, metavar="TIME", help=f"First slot time: {TIME_FORMATS_HELP}."
)
@click.option("--to", "end", required=True, metavar="TIME", help="Last slot time (included).")
@store_option
def backfill(schedule_id: str, start: str, end: str, store: str | None) -> None:
    """Start the runs of schedule ID's slots in a past range that have not run."""
    first, last = parse_time(start, "--from"), parse_time(end, "--to")
    started = with_client(store, lambda client: client.backfill_schedule(schedule_id, first, last))
    click.echo(f"Started {len(started)} run(s).")
    for run in started:
        click.echo(f"  {run}")


@schedule.command("delete")
@schedule_id_argument
@yes_option
@store_option
def delete(schedule_id: str, yes: bool, store: str | None) -> None:
    """Delete schedule ID (its runs stay)."""
    if not yes:
        click.confirm(f"Delete schedule {schedule_id!r}?", abort=True, err=True)
    with_client(store, lambda client: client.delete_schedule(schedule_id))
    click.echo(f"Deleted schedule {schedule_id!r}.")
