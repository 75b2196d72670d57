"""Output: instance states as stable JSON objects, and rich tables for people."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO, cast

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from duratask.backends.base import ExecutionRecord
from duratask.cli.timeline_rows import TimelineRow, format_duration
from duratask.converter import replace_lone_surrogates
from duratask.state import OrchestrationState, OrchestrationStatus

PIPED_WIDTH = 200
WIDE_TIMELINE = 100  # narrower consoles get no Offset column in history tables
STATUS_STYLES: dict[OrchestrationStatus, str] = {
    OrchestrationStatus.RUNNING: "cyan",
    OrchestrationStatus.PENDING: "blue",
    OrchestrationStatus.SUSPENDED: "yellow",
    OrchestrationStatus.CONTINUED_AS_NEW: "cyan",
    OrchestrationStatus.COMPLETED: "green",
    OrchestrationStatus.FAILED: "bold red",
    OrchestrationStatus.TERMINATED: "magenta",
}


# -- JSON ------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _payload(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def state_to_json(state: OrchestrationState) -> dict[str, Any]:
    """The machine-readable form of an instance (keys and their meaning are stable)."""
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "version": state.version,
        "runtime_status": state.runtime_status.value,
        "created_at": _iso(state.created_at),
        "last_updated_at": _iso(state.last_updated_at),
        "completed_at": _iso(state.completed_at),
        "input": _payload(state.serialized_input),
        "output": _payload(state.serialized_output),
        "custom_status": _payload(state.serialized_custom_status),
        "failure_details": state.failure_details.to_dict() if state.failure_details else None,
        "parent_instance_id": state.parent_instance_id,
        "scheduled_start_at": _iso(state.scheduled_start_at),
        "task_queue": state.task_queue,
    }


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout."""
    click.echo(replace_lone_surrogates(json.dumps(value, indent=2, ensure_ascii=False)))


class _Printable(io.TextIOBase):
    """A text stream that writes a lone surrogate (which no terminal or UTF-8 file can take;
    a hub may hold one from before such text was refused, or in an exception message) as
    U+FFFD instead of failing."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(replace_lone_surrogates(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


# -- tables ----------------------------------------------------------------------------


def console() -> Console:
    """A console on the current stdout (made per use, as tests swap stdout).

    Output that goes to a file or a pipe is not squeezed into 80 columns.
    """
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(
        file=cast(TextIO, _Printable(sys.stdout)),
        highlight=False,
        width=PIPED_WIDTH if piped else None,
    )


def format_time(value: datetime | None, *, millis: bool = False) -> str:
    """``2024-05-01 12:00:00Z`` (UTC), or empty."""
    if value is None:
        return ""
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if millis:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def status_text(status: OrchestrationStatus) -> Text:
    return Text(status.value, style=STATUS_STYLES[status])


def _pretty_payload(text: str | None) -> str:
    if text is None:
        return ""
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False)


def render_state(
    state: OrchestrationState, waiting: str | None = None, execution_round: int = 1
) -> None:
    """One instance as a two-column table of fields (``waiting``: why no worker runs it;
    ``execution_round``: which execution it is on, shown from the second on)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("Instance ID", state.instance_id),
        ("Name", state.name),
        ("Version", state.version or ""),
        ("Status", status_text(state.runtime_status)),
        (
            "Round",
            f"{execution_round} (earlier rounds: duratask history {state.instance_id} --executions)"
            if execution_round > 1
            else "",
        ),
        ("Waiting", Text(waiting, style="yellow") if waiting else ""),
        ("Created", format_time(state.created_at)),
        ("Last updated", format_time(state.last_updated_at)),
        ("Completed", format_time(state.completed_at)),
        ("Scheduled start", format_time(state.scheduled_start_at)),
        ("Parent", state.parent_instance_id or ""),
        ("Task queue", state.task_queue),
        ("Input", _pretty_payload(state.serialized_input)),
        ("Output", _pretty_payload(state.serialized_output)),
        ("Custom status", _pretty_payload(state.serialized_custom_status)),
    ]
    failure = state.failure_details
    if failure is not None:  # the whole chain: the orchestration's failure, down to the root
        for depth, link in enumerate(failure.chain()):
            label = "Failure" if depth == 0 else "Caused by"
            rows.append((label, Text(f"{link.error_type}: {link.message}", style="red")))
            if link.stack_trace:
                rows.append(("Stack trace", link.stack_trace.rstrip()))
    for label, value in rows:
        if value:
            table.add_row(label, value)
    console().print(table)


def render_states(
    states: Sequence[OrchestrationState], summary: str, notes: Sequence[str] = ()
) -> None:
    """Instances as a table, then a summary line and any notes."""
    out = console()
    if states:
        versions = any(s.version for s in states)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("Instance ID", overflow="fold", min_width=12)
        table.add_column("Name", overflow="fold", min_width=8)
        if versions:
            table.add_column("Version", overflow="fold")
        table.add_column("Status", no_wrap=True)
        table.add_column("Created (UTC)", no_wrap=True)
        table.add_column("Updated (UTC)", no_wrap=True)
        for s in states:
            cells: list[str | Text] = [s.instance_id, s.name]
            if versions:
                cells.append(s.version or "")
            cells += [
                status_text(s.runtime_status),
                format_time(s.created_at),
                format_time(s.last_updated_at),
            ]
            table.add_row(*cells)
        out.print(table)
    out.print(summary)
    for note in notes:
        out.print(Text(note, style="yellow"))


def render_executions(state: OrchestrationState, records: Sequence[ExecutionRecord]) -> None:
    """An instance's earlier executions, oldest first, then the current one."""
    out = console()
    out.print(Text.assemble((state.instance_id, "bold"), f"  {state.name}"))
    if not records:
        out.print("(no earlier executions: the instance has not continued as new)")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("Round", justify="right", no_wrap=True)
    table.add_column("Execution ID", overflow="fold")
    table.add_column("Started (UTC)", no_wrap=True)
    table.add_column("Duration", justify="right", no_wrap=True)
    table.add_column("Ended as", no_wrap=True)
    table.add_column("Input", overflow="fold", min_width=10)
    table.add_column("Handed on / output", overflow="fold", min_width=10)
    for r in records:
        table.add_row(
            str(r.generation),
            r.execution_id or "",
            format_time(r.started_at),
            format_duration(r.ended_at - r.started_at),
            status_text(r.status),
            r.input_summary or "",
            r.output_summary or "",
        )
    current = records[-1].generation + 1
    table.add_row(
        str(current), state.execution_id or "", "", "", status_text(state.runtime_status), "", ""
    )
    out.print(table)


def render_timeline(state: OrchestrationState, rows: Sequence[TimelineRow]) -> None:
    """The history timeline of one instance."""
    out = console()
    heading = Text.assemble(
        (state.instance_id, "bold"), f"  {state.name}  ", status_text(state.runtime_status)
    )
    if rows:
        heading.append(f"  started {format_time(rows[0].timestamp - rows[0].offset)}")
    out.print(heading)
    if not rows:
        out.print("(no history yet: the instance has not run)")
        return
    with_offset = out.width >= WIDE_TIMELINE
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("Time (UTC)", no_wrap=True)
    if with_offset:
        table.add_column("Offset", justify="right", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    table.add_column("Name", overflow="fold", min_width=10)
    table.add_column("Payload", overflow="fold", min_width=10)
    table.add_column("Duration", justify="right", no_wrap=True)
    for row in rows:
        cells: list[str | Text] = [
            row.timestamp.strftime("%H:%M:%S.") + f"{row.timestamp.microsecond // 1000:03d}"
        ]
        if with_offset:
            cells.append(f"+{row.offset.total_seconds():.3f}s")
        cells += [
            # Spelled as everywhere else (the history classes' names), never shortened.
            Text(row.event, style="red" if row.failed else ""),
            row.subject,
            row.payload,
            format_duration(row.duration),
        ]
        table.add_row(*cells)
    out.print(table)


def render_counts(counts: Mapping[OrchestrationStatus, int]) -> None:
    """Instance counts by status, with the total."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("Status")
    table.add_column("Instances", justify="right")
    for status in OrchestrationStatus:
        table.add_row(status_text(status), str(counts.get(status, 0)))
    table.add_row(Text("Total", style="bold"), Text(str(sum(counts.values())), style="bold"))
    console().print(table)
