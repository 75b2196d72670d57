"""Listing instances: every sort order in both directions, paged by keyset tokens, and the
filters operators reach for (top-level only, text in the custom status); the same on every
store."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from typing import Any

import pytest

from duratask.backends import InstanceQuery, InstanceSort
from duratask.backends.base import TaskHubStore
from duratask.state import OrchestrationState, OrchestrationStatus

from .conftest import FakeClock
from .test_store_contract import LEASE, create, episode, state_of

S = OrchestrationStatus
STATUSES = [S.RUNNING, S.COMPLETED, S.FAILED, S.PENDING, S.TERMINATED]


async def populate(store: TaskHubStore, clock: FakeClock) -> list[OrchestrationState]:
    """Twelve instances: names, statuses and custom statuses in no order, creation and update
    times that tie and cross, two of them sub-orchestrations."""
    rng = random.Random(7)
    start = clock.now
    ids = [f"i{(5 * n) % 12:02d}" for n in range(12)]
    for n, iid in enumerate(ids):
        await create(
            store,
            iid,
            name=rng.choice(["Alpha", "Beta", "Gamma"]),
            at=start + timedelta(seconds=n // 2),
            parent="i00" if n in (3, 8) else None,
        )
    for n in range(len(ids)):  # the store picks which instance each lock gets
        clock.now = start + timedelta(minutes=1, seconds=(n * 7) % 5)
        status = STATUSES[n % len(STATUSES)]
        if status is S.PENDING:
            continue
        work_item = await store.lock_next_orchestration_work_item("w1", LEASE)
        assert work_item is not None
        custom = f'{{"stage": "step-{n}", "region": "{"eu" if n % 2 else "us"}"}}'
        state = dataclasses.replace(
            await state_of(store, work_item.instance_id),
            runtime_status=status,
            serialized_custom_status=custom,
        )
        await episode(store, work_item, status, state=state)
    states = []
    for iid in ids:
        states.append(await state_of(store, iid))
    return states


def sort_key(state: OrchestrationState, sort: InstanceSort) -> tuple[Any, str]:
    value: Any = {
        InstanceSort.CREATED: state.created_at,
        InstanceSort.LAST_UPDATED: state.last_updated_at,
        InstanceSort.STATUS: state.runtime_status.value,
        InstanceSort.NAME: state.name,
    }[sort]
    return (value, state.instance_id)


async def walk(store: TaskHubStore, page_size: int, **query: Any) -> list[list[str]]:
    pages = []
    token = None
    while True:
        page = await store.query_instances(
            InstanceQuery(page_size=page_size, continuation_token=token, **query)
        )
        pages.append([s.instance_id for s in page.states])
        token = page.continuation_token
        if token is None:
            return pages


@pytest.mark.parametrize("sort", list(InstanceSort), ids=[s.value for s in InstanceSort])
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
async def test_every_order_pages_through_every_instance_once(
    store: TaskHubStore, clock: FakeClock, sort: InstanceSort, descending: bool
) -> None:
    states = await populate(store, clock)
    expected = [
        s.instance_id for s in sorted(states, key=lambda s: sort_key(s, sort), reverse=descending)
    ]
    pages = await walk(store, 5, sort=sort, descending=descending)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert [iid for page in pages for iid in page] == expected
    one_page = await walk(store, 100, sort=sort, descending=descending)
    assert one_page == [expected]


async def test_top_level_only_and_custom_status_text(store: TaskHubStore, clock: FakeClock) -> None:
    states = await populate(store, clock)
    by_created = sorted(states, key=lambda s: sort_key(s, InstanceSort.CREATED))

    top = await walk(store, 100, top_level_only=True)
    assert top == [[s.instance_id for s in by_created if s.parent_instance_id is None]]
    assert len(top[0]) == 10

    eu = await walk(store, 3, custom_status_contains='"region": "eu"')
    wanted = [
        s.instance_id for s in by_created if '"region": "eu"' in (s.serialized_custom_status or "")
    ]
    assert wanted and [iid for page in eu for iid in page] == wanted
    assert await walk(store, 10, custom_status_contains="%") == [[]]  # no wildcards

    counts = await store.count_instances(InstanceQuery(top_level_only=True))
    assert sum(counts.values()) == 10
    counts = await store.count_instances(InstanceQuery(custom_status_contains="step-"))
    assert sum(counts.values()) == sum(s.serialized_custom_status is not None for s in states)


async def test_a_token_resumes_only_the_order_it_came_from(
    store: TaskHubStore, clock: FakeClock
) -> None:
    await populate(store, clock)
    page = await store.query_instances(
        InstanceQuery(page_size=2, sort=InstanceSort.NAME, descending=True)
    )
    assert page.continuation_token is not None
    for other in (
        InstanceQuery(page_size=2, continuation_token=page.continuation_token),
        InstanceQuery(
            page_size=2, sort=InstanceSort.NAME, continuation_token=page.continuation_token
        ),
    ):
        with pytest.raises(ValueError, match="sorted by name"):
            await store.query_instances(other)
    with pytest.raises(ValueError, match="malformed continuation token"):
        await store.query_instances(
            InstanceQuery(sort=InstanceSort.STATUS, continuation_token="bm90IGEgdG9rZW4=")
        )
