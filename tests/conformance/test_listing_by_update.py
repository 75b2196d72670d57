"""Listing instances by last update over many instances: every page size walks every
instance once, in order, both ways; on SQL stores the page query walks the
``(last_updated_at, instance_id)`` index instead of sorting the table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from duratask.backends import InstanceQuery, InstanceSort
from duratask.backends.base import TaskHubStore
from duratask.state import OrchestrationState

from .conftest import FakeClock, StoreHub
from .test_instance_listing import walk
from .test_store_contract import LEASE, S, create, episode, state_of

COUNT = 300


async def populate(store: TaskHubStore, clock: FakeClock) -> list[OrchestrationState]:
    """COUNT instances created in one order and updated in another, many at the same time."""
    start = clock.now
    for n in range(COUNT):
        await create(store, f"i{(n * 37) % COUNT:04d}", at=start + timedelta(seconds=n // 3))
    for n in range(COUNT // 2):  # the store picks which instance each lock gets
        clock.now = start + timedelta(minutes=10, seconds=(n * 11) % 17)
        work_item = await store.lock_next_orchestration_work_item("w1", LEASE)
        assert work_item is not None
        state = dataclasses.replace(
            await state_of(store, work_item.instance_id), last_updated_at=clock.now
        )
        await episode(store, work_item, S.RUNNING, state=state)
    page = await store.query_instances(InstanceQuery(page_size=1000))
    assert len(page.states) == COUNT
    return page.states


@pytest.mark.parametrize("descending", [False, True], ids=["oldest-first", "newest-first"])
async def test_paging_by_last_update_holds_over_many_instances(
    store: TaskHubStore, clock: FakeClock, descending: bool
) -> None:
    states = await populate(store, clock)
    assert len({s.last_updated_at for s in states}) < COUNT // 2, "many ties to break"
    expected = [
        s.instance_id
        for s in sorted(
            states, key=lambda s: (s.last_updated_at, s.instance_id), reverse=descending
        )
    ]
    for size in (1, 7, 64, 299, 300, 1000):
        pages = await walk(store, size, sort=InstanceSort.LAST_UPDATED, descending=descending)
        assert [iid for page in pages for iid in page] == expected, f"pages of {size}"
        assert all(len(page) == size for page in pages[:-1])


async def test_the_page_query_walks_the_last_update_index(
    store_hub: StoreHub, store: TaskHubStore, clock: FakeClock
) -> None:
    if store_hub.kind == "memory":
        pytest.skip("the memory store has no query plans")
    await populate(store, clock)
    seen: list[tuple[str, list[object]]] = []
    read_rows = store._read_rows  # type: ignore[attr-defined]

    async def capture(sql: str, params: list[object]) -> list[Mapping[str, Any]]:
        seen.append((sql, params))
        rows: list[Mapping[str, Any]] = await read_rows(sql, params)
        return rows

    store._read_rows = capture  # type: ignore[attr-defined]
    first = await store.query_instances(InstanceQuery(page_size=8, sort=InstanceSort.LAST_UPDATED))
    query = InstanceQuery(
        page_size=8,
        sort=InstanceSort.LAST_UPDATED,
        descending=True,
        continuation_token=first.continuation_token,
    )
    with pytest.raises(ValueError, match="sorted by last_updated"):
        await store.query_instances(query)  # a token resumes only its own direction
    query = dataclasses.replace(query, descending=False)
    await store.query_instances(query)
    store._read_rows = read_rows  # type: ignore[attr-defined]
    for sql, params in seen:
        if store_hub.kind == "sqlite":
            plan = " ".join(
                str(r["detail"]) for r in await read_rows(f"EXPLAIN QUERY PLAN {sql}", params)
            )
            assert "instances_by_last_updated_at" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # no sort of the whole table
        else:
            plan = " ".join(
                str(next(iter(r.values()))) for r in await read_rows(f"EXPLAIN {sql}", params)
            )
            assert "instances_by_last_updated_at" in plan, plan
