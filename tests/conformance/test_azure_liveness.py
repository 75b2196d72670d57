"""Liveness of the Azure Storage store: no due message goes unseen for long, whatever a
storage request or a hint does. Runs on Azurite (see ``tests/azurite.py``).

- A storage service that stops answering (the connection stays open, no reply comes)
  holds a request only for the store's read timeout, not the client library's default of
  five minutes, and is retried after short waits (not the queue and blob clients' own 15 s
  and more): the worker's fetch loops and partition renewals go on once it answers again.
- A hint read by a worker that cannot lease the instance (another holds it) is not a lost
  message: the holder's commit leaves a new hint for the message that arrived meanwhile.
- The sweep of the rows skips instances another worker holds, so however many are held
  with messages waiting, a free instance is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

import duratask as dt
from duratask.backends._wakeups import ORCHESTRATION
from duratask.backends.base import LeaseHeld

from .. import azurite
from .conftest import FakeClock
from .test_azure_specific import NO_REUSE, first_episode, raised, started

LEASE = timedelta(seconds=30)


class SilentProxy:
    """A TCP proxy in front of one Azurite port that can stop answering: while ``silent``,
    what either side sends is swallowed, and a connection that lost data stays silent until
    the client closes it (its HTTP exchange is broken; the server closing its end is not
    passed on); new connections are served again once ``silent`` is off. ``given_up``:
    how many such silent connections their client has closed (a request it gave up)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.given_up = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, up_w]
        broken = [False]

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
        ) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    if self.silent or broken[0]:
                        broken[0] = True
                        continue
                    writer.write(data)
                    await writer.drain()
                if broken[0] and from_client:  # the client closed a connection left silent
                    self.given_up += 1
            if not broken[0]:  # else the other side waits on, as on a server that hangs
                writer.close()

        tasks = [
            asyncio.create_task(pump(client_r, up_w, True)),
            asyncio.create_task(pump(up_r, client_w, False)),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
def azure_url() -> str:
    return azurite.require_azurite().url(azurite.new_hub())


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[str, str, list[SilentProxy]]]:
    """A fresh hub's URL on Azurite, and the URL of the same hub through silent proxies."""
    emulator = azurite.require_azurite()
    hub = azurite.new_hub()
    proxies = [SilentProxy(port) for port in (emulator.blob, emulator.queue, emulator.table)]
    for proxy in proxies:
        await proxy.start()
    blob, queue, table = (p.port for p in proxies)
    through = (
        f"azure://devstoreaccount1/{hub}?blob_port={blob}&queue_port={queue}&table_port={table}"
    )
    yield emulator.url(hub), through, proxies
    for proxy in proxies:
        await proxy.close()


async def say(ctx: dt.OrchestrationContext, name: str) -> str:
    return str(await ctx.call_activity(shout, input=name))


def shout(ctx: dt.ActivityContext, name: str) -> str:
    return name.upper()


async def test_a_request_that_gets_no_answer_is_given_up_and_the_worker_goes_on(
    proxied: tuple[str, str, list[SilentProxy]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from duratask.backends.azure import AzureOrchestrationService, _core

    monkeypatch.setattr(_core, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(_core, "HINT_TIMEOUT", 1.0)
    direct, through, proxies = proxied
    store = AzureOrchestrationService(through)
    worker = dt.TaskHubWorker(store, lease_duration=timedelta(seconds=10))
    worker.add_orchestration(say)
    worker.add_activity(shout)
    run = asyncio.create_task(worker.run())
    client = dt.AsyncTaskHubClient(direct)
    try:
        first = await client.schedule_new_orchestration(say, input="ada")
        assert (await client.wait_for_orchestration_completion(first, timeout=30)).output == "ADA"

        for proxy in proxies:  # the worker's requests now get no answer
            proxy.silent = True
        calls = sum(store.calls.values())
        deadline = time.monotonic() + 10
        while sum(store.calls.values()) < calls + 3:  # its loops are stuck in requests
            assert time.monotonic() < deadline, "the worker made no requests"
            await asyncio.sleep(0.05)
        iid = await client.schedule_new_orchestration(say, input="bob")
        deadline = time.monotonic() + 10
        while not any(proxy.given_up for proxy in proxies):  # past the read timeout
            assert time.monotonic() < deadline, "no request without an answer was given up"
            await asyncio.sleep(0.05)
        for proxy in proxies:
            proxy.silent = False

        # A request waiting on its answer for the client library's default (300 s) would
        # keep this instance pending.
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
        assert (state.runtime_status, state.output) == (dt.OrchestrationStatus.COMPLETED, "BOB")
    finally:
        for proxy in proxies:
            proxy.silent = False
        await worker.shutdown()
        await asyncio.wait_for(run, timeout=60)
        await client.close()


@pytest.mark.parametrize("silent", ["queue", "blob"])
async def test_a_fetch_held_by_a_service_that_stops_answering_ends_in_seconds(
    proxied: tuple[str, str, list[SilentProxy]], monkeypatch: pytest.MonkeyPatch, silent: str
) -> None:
    """A fetch whose hint read (queue) or partition lease renewal (blob) gets no answer
    returns after its timeouts and a few short retries: the queue and blob clients' own
    waits between retries start at 15 s and grow, which held the fetch loop for a minute."""
    from duratask.backends.azure import AzureOrchestrationService, _core

    monkeypatch.setattr(_core, "READ_TIMEOUT", 1.0)
    monkeypatch.setattr(_core, "HINT_TIMEOUT", 1.0)
    _, through, proxies = proxied
    store = AzureOrchestrationService(through)
    await store.open()
    try:
        assert await store.lock_next_orchestration_work_item("w", LEASE) is None
        store._partitions._next_round = 0.0  # renew the partitions' leases at the next fetch
        store._queue_next.clear()  # and read a control queue
        proxies[("blob", "queue", "table").index(silent)].silent = True
        started = time.monotonic()
        assert await store.lock_next_orchestration_work_item("w", LEASE) is None
        # About 4 s (queue: 1 s, a retry after 1.7 s, 1 s) or 12 s (blob: three retries);
        # with the clients' own waits, 17 s or over a minute.
        assert time.monotonic() - started < {"queue": 12, "blob": 40}[silent]
    finally:
        for proxy in proxies:
            proxy.silent = False
        await store.close()


async def test_a_hint_read_while_another_holds_the_instance_is_not_a_lost_message(
    azure_url: str,
) -> None:
    """The holder's commit finds the message that arrived under its lease and hints it
    again; the next fetch finds it by that hint, with no sweep of the rows."""
    from duratask.backends.azure import AzureOrchestrationService

    worker, client = AzureOrchestrationService(azure_url), AzureOrchestrationService(azure_url)
    await worker.open()
    await client.open()
    try:
        await client.create_instance(started("i"), NO_REUSE)
        item = await worker.lock_next_orchestration_work_item("w", LEASE)
        assert item is not None and item.instance_id == "i"
        no_sweeps(worker)

        assert await client.send_message(raised("i", "go"))
        # Its hint is read and dropped: the instance is leased.
        assert await worker.lock_next_orchestration_work_item("w", LEASE) is None

        await worker.commit_episode(
            LeaseHeld(item.lock_token, item.history_length), first_episode(item)
        )
        again = await worker.lock_next_orchestration_work_item("w", LEASE)
        assert again is not None and again.instance_id == "i"
        assert [type(m.message.event).__name__ for m in again.messages] == ["EventRaised"]
    finally:
        await worker.delete_task_hub()
        await worker.close()
        await client.close()


def no_sweeps(store: Any) -> None:
    """Keep ``store`` from reading the rows for orchestration work for an hour: what it
    finds, it finds by hints."""
    store._next_sweep[ORCHESTRATION] = time.monotonic() + 3600
    store._soonest.pop(ORCHESTRATION, None)


async def test_instances_held_by_a_worker_do_not_hide_a_free_one_from_the_sweep(
    azure_url: str, clock: FakeClock
) -> None:
    """More instances than one sweep tries, all leased with a message waiting, and an
    instance free to run: the sweep skips the held ones and finds it."""
    from duratask.backends.azure import AzureOrchestrationService, _rows

    a = AzureOrchestrationService(azure_url, clock=clock)
    b = AzureOrchestrationService(azure_url, clock=clock)
    await a.open()
    await b.open()
    try:
        held = [f"held-{n:02d}" for n in range(_rows._SCAN_CANDIDATES + 1)]
        for iid in held:
            await a.create_instance(started(iid), NO_REUSE)
        for _ in held:
            assert await a.lock_next_orchestration_work_item("a", LEASE) is not None
        for iid in held:  # a message for each, waiting for the lease to end
            assert await b.send_message(raised(iid, "go"))
        clock.advance(timedelta(seconds=1))
        await b.create_instance(started("free"), NO_REUSE)
        clock.advance(timedelta(seconds=1))

        item = await b.lock_next_orchestration_work_item("b", LEASE)
        assert item is not None and item.instance_id == "free"
    finally:
        await a.delete_task_hub()
        await a.close()
        await b.close()
