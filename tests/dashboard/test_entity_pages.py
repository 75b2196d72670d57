"""The entity pages: the list (filters, paging) and one entity's state, lock and backlog."""

from __future__ import annotations

import html
import re

import httpx

from duratask.backends.base import EntityMessage
from tests.conformance.e2e_hub import wait_until
from tests.dashboard.conftest import Hub


def listed(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<a href="/entities/[^"]+">([^<]+)</a>', page)]


def next_link(page: str) -> str | None:
    match = re.search(r'<a rel="next" class="next-page" href="([^"]+)"', page)
    return html.unescape(match.group(1)) if match else None


async def test_entity_list_page_and_entity_page(hub: Hub, web: httpx.AsyncClient) -> None:
    for key in ("a", "b", "c"):
        await hub.client.signal_entity(f"@counter@{key}", "add", 3)

    async def counted() -> bool:
        page = await hub.client.query_entities(name="counter")
        return [e.state for e in page.entities] == [3, 3, 3]

    await wait_until(counted, 20, "the signals to be processed")
    first = await web.get("/entities", params={"name": "counter", "size": "20"})
    assert first.status_code == 200
    assert listed(first.text) == ["@counter@a", "@counter@b", "@counter@c"]
    assert '<a href="/entities">Entities</a>' in first.text

    paged = await web.get("/entities", params={"prefix": "@counter@", "size": "20"})
    assert listed(paged.text) == ["@counter@a", "@counter@b", "@counter@c"]

    one = await web.get("/entities/%40counter%40b")
    assert one.status_code == 200, one.text
    assert re.search(r'<pre class="payload" id="state">\s*3\s*</pre>', one.text)
    assert re.search(r'<dd id="backlog">0</dd>', one.text)
    assert "nobody" in one.text


async def test_entity_page_shows_its_lock_holder_and_backlog(
    hub: Hub, web: httpx.AsyncClient
) -> None:
    store = hub.client.store
    await hub.client.signal_entity("@counter@held", "add", 1)
    await store.send_entity_message(
        EntityMessage("@counter@held", "lock", "cs", source="orch-x", lock_set=("@counter@held",))
    )
    await store.send_entity_message(EntityMessage("@counter@held", "signal", "r9", "add", "1"))

    async def locked() -> bool:
        found = await hub.client.get_entity("@counter@held")
        return found is not None and found.locked_by == "orch-x"

    await wait_until(locked, 20, "the lock to be taken")
    page = await web.get("/entities/@counter@held")
    assert 'href="/instances/orch-x"' in page.text
    assert re.search(r'<dd id="backlog">1</dd>', page.text)


async def test_missing_entity_and_bad_filters(web: httpx.AsyncClient) -> None:
    missing = await web.get("/entities/@counter@none")
    assert missing.status_code == 404 and "no entity" in html.unescape(missing.text)
    bad = await web.get("/entities", params={"from": "yesterday-ish"})
    assert bad.status_code == 400
    assert 'role="alert"' in bad.text
    assert next_link(bad.text) is None
