"""``duratask list``: instances matching filters, with counts of how many match in all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from duratask._waiting import why_waiting
from duratask.backends import InstanceSort
from duratask.cli.options import JSON, output_option, store_option
from duratask.cli.parsing import parse_statuses, parse_time
from duratask.cli.render import print_json, render_states, state_to_json
from duratask.cli.store import with_client
from duratask.client import MAX_QUERY_PAGE_SIZE, AsyncTaskHubClient
from duratask.state import OrchestrationState, OrchestrationStatus

STATUS_NAMES = ", ".join(s.name for s in OrchestrationStatus)
PAGE_SIZE = MAX_QUERY_PAGE_SIZE  # instances fetched per query; more pages up to --limit


@click.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help=f"Only instances with this status (repeat or comma-separate): {STATUS_NAMES}.",
)
@click.option("--name", help="Only instances of this orchestration.")
@click.option("--prefix", metavar="P", help="Only instance ids starting with P.")
@click.option("--since", metavar="TIME", help="Only instances created at or after TIME.")
@click.option("--until", metavar="TIME", help="Only instances created before TIME.")
@click.option("--parent", metavar="ID", help="Only sub-orchestrations of instance ID.")
@click.option("--top-level", is_flag=True, help="Leave sub-orchestrations out.")
@click.option(
    "--custom-status", metavar="TEXT", help="Only instances whose custom status contains TEXT."
)
@click.option(
    "--sort",
    type=click.Choice([s.value for s in InstanceSort]),
    default=InstanceSort.CREATED.value,
    show_default=True,
    help="What to order by (ties by instance id).",
)
@click.option(
    "--desc/--asc",
    "descending",
    default=False,
    show_default=True,
    help="Largest or newest first.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many instances.",
)
@store_option
@output_option
def list_instances(
    statuses: tuple[str, ...],
    name: str | None,
    prefix: str | None,
    since: str | None,
    until: str | None,
    parent: str | None,
    top_level: bool,
    custom_status: str | None,
    sort: str,
    descending: bool,
    limit: int,
    store: str | None,
    output: str,
) -> None:
    """List instances, oldest first unless --sort/--desc say otherwise, with a summary of
    how many match.

    TIME is ISO-8601 (naive means UTC), 'now', or relative to now: -30m, -2h, -7d.
    """
    wanted = parse_statuses(statuses)
    created_from = None if since is None else parse_time(since, "--since")
    created_to = None if until is None else parse_time(until, "--until")
    filters = _Filters(
        statuses=wanted,
        name=name,
        prefix=prefix,
        created_from=created_from,
        created_to=created_to,
        parent=parent,
        top_level=top_level,
        custom_status=custom_status,
        sort=InstanceSort(sort),
        descending=descending,
    )
    listing = with_client(store, lambda client: _query(client, filters, limit))
    if output == JSON:
        print_json(listing.to_json())
    else:
        render_states(listing.states, listing.summary(), listing.notes())


class _Listing:
    """The instances shown, and what is known of how many match in all."""

    def __init__(
        self,
        states: list[OrchestrationState],
        more: bool,
        counts: dict[OrchestrationStatus, int] | None,
        waiting: dict[str, str],
    ) -> None:
        self.states = states
        self.more = more
        self.counts = counts
        self.waiting = waiting  # instance id -> why no connected worker can start it

    def notes(self) -> list[str]:
        """One line per distinct reason PENDING instances shown wait for a worker."""
        reasons: dict[str, int] = {}
        for reason in self.waiting.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return [f"{n} PENDING instance(s) shown: {reason}" for reason, n in reasons.items()]

    @property
    def total(self) -> int | None:
        return None if self.counts is None else sum(self.counts.values())

    def summary(self) -> str:
        if self.counts is None:
            more = "; more match (raise --limit to see them)" if self.more else ""
            return f"{len(self.states)} instances shown{more}"
        if not self.total:
            return "No matching instances."
        by_status = ", ".join(f"{s.value} {n}" for s, n in self.counts.items() if n)
        return f"{len(self.states)} of {self.total} matching instances shown ({by_status})"

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": [
                {**state_to_json(s), "waiting": self.waiting.get(s.instance_id)}
                for s in self.states
            ],
            "shown": len(self.states),
            "total": self.total,
            "counts": None if self.counts is None else {s.value: n for s, n in self.counts.items()},
            "more": self.more,
        }


@dataclass(frozen=True)
class _Filters:
    statuses: list[OrchestrationStatus]
    name: str | None
    prefix: str | None
    created_from: datetime | None
    created_to: datetime | None
    parent: str | None
    top_level: bool
    custom_status: str | None
    sort: InstanceSort
    descending: bool


async def _query(client: AsyncTaskHubClient, f: _Filters, limit: int) -> _Listing:
    states: list[OrchestrationState] = []
    token: str | None = None
    statuses, parent = f.statuses, f.parent
    while len(states) < limit:
        page = await client.query_orchestrations(
            statuses=statuses or None,
            created_from=f.created_from,
            created_to=f.created_to,
            name=f.name,
            instance_id_prefix=f.prefix,
            parent_instance_id=parent,
            top_level_only=f.top_level,
            custom_status_contains=f.custom_status,
            sort=f.sort,
            descending=f.descending,
            page_size=min(limit - len(states), PAGE_SIZE),
            continuation_token=token,
        )
        states.extend(page.states)
        token = page.continuation_token
        if token is None:
            break
    counts: dict[OrchestrationStatus, int] | None = None
    if parent is None:  # counting cannot filter by parent
        all_counts = await client.count_orchestrations(
            name=f.name,
            instance_id_prefix=f.prefix,
            created_from=f.created_from,
            created_to=f.created_to,
            top_level_only=f.top_level,
            custom_status_contains=f.custom_status,
        )
        counts = {s: all_counts.get(s, 0) for s in (statuses or list(OrchestrationStatus))}
    more = token is not None if counts is None else len(states) < sum(counts.values())
    waiting: dict[str, str] = {}
    if any(s.runtime_status is OrchestrationStatus.PENDING for s in states):
        workers = await client.list_workers(connected_only=True)
        for state in states:
            if state.runtime_status is OrchestrationStatus.PENDING:
                reason = why_waiting(state, None, workers)
                if reason is not None:
                    waiting[state.instance_id] = reason
    return _Listing(states, more, counts, waiting)
