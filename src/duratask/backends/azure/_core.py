"""The Azure store's connection and row access: clients per event loop, the hub's tables,
queues and containers, wake-ups, and reading, writing and remembering rows."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import (
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from duratask.backends._shared import (
    as_utc,
    utc_now,
)
from duratask.backends._wakeups import (
    ENTITY,
    InstanceWatch,
    WakeUps,
    hub_wakeups,
)
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._clients import _Clients, _close_at_loop_end
from duratask.backends.azure._partitions import PartitionLeases
from duratask.backends.azure._rows import (
    _LOG,
    _REMEMBERED_ROWS,
    Row,
    _ignore_missing,
)
from duratask.backends.azure._target import AzureTarget, parse_azure_url
from duratask.backends.base import StoreDescription
from duratask.errors import (
    StoreError,
    TaskHubNotFoundError,
)
from duratask.state import OrchestrationState

# Seconds a storage request may take to connect, and to wait for each read of its answer,
# before it is given up (and retried). The clients' own defaults are 300 s: a request the
# service never answers (Azurite under load leaves a queue request unanswered for half a
# minute now and then) would hold a fetch loop, or a partition's renewal, that long.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
# Hints are only hints (the sweep of the rows finds what a lost one pointed at): a queue
# request is given up sooner, and retried once.
HINT_TIMEOUT = 3.0
HINT_RETRIES = 1
# Per-request options of creating and deleting a hub's tables, queues and containers: a
# one-off, and not retried when its answer is late (Azurite under load pauses everything
# for tens of seconds now and then), so it waits longer.
_PATIENT: dict[str, Any] = {"read_timeout": 120.0, "retry_total": 4}


class StoreCore:
    """The Azure store's connection and row access."""

    def __init__(
        self, url: str | AzureTarget, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._target = parse_azure_url(url) if isinstance(url, str) else url
        self._clock = clock or utc_now
        hub = self._target.hub
        self._names = {
            "history": f"{hub}History",
            "instances": f"{hub}Instances",
            "workers": f"{hub}Workers",
            "schedules": f"{hub}Schedules",
            "entities": f"{hub}Entities",
        }
        lower = hub.lower()
        self._control_names = [f"{lower}-control-{n:02d}" for n in range(self._target.partitions)]
        self._workitems_name = f"{lower}-workitems"
        self._container_name = f"{lower}-largemessages"
        self._leases_name = f"{lower}-leases"
        self._partitions = PartitionLeases(self._control_names)
        # Queue visibility delays are wall time: a store on another clock (a test's) reads
        # the rows at every poll and queues no hints.
        self._wall_clock = clock is None
        self._next_sweep: dict[str, float] = {}
        # The soonest due time of held-back work this process saw, by kind: the rows are
        # read again once it passes (a queue's visibility delay has a 1 s grain).
        self._soonest: dict[str, datetime] = {}
        self._control_turn = 0
        # When to read each queue (see ``_hints``): the count of this process's hints to it
        # at the last read, the idle interval and the time of the next read.
        self._queue_seen: dict[str, int] = {}
        self._queue_idle: dict[str, float] = {}
        self._queue_next: dict[str, float] = {}
        self._orchestration_hints: list[tuple[str, Any, dict[str, Any]]] = []
        self._activity_hints: list[tuple[str, Any, dict[str, Any]]] = []
        self._clients: dict[asyncio.AbstractEventLoop, _Clients] = {}
        self._rows: dict[tuple[str, str], tuple[str, Row, bool]] = {}
        # The message rows of each instance this store object leased, as the lease read them.
        self._leased_inbox: dict[str, frozenset[str]] = {}
        self.calls: Counter[str] = Counter()
        """Storage requests this store object made, by service: table, queue, blob."""
        self._opened = False
        self._last_id = 0
        # Wake-ups reach every store object on this hub in this process; other processes
        # find new work by polling.
        self._wakeups = WakeUps()
        self._hub_key = f"azure:{self._target.account}:{hub}"
        self._hub = hub_wakeups(self._hub_key)
        self._hub.join(self._wakeups)

    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a sign (from this process) that work may be available."""
        woken = await self._wakeups.wait_for_work(timeout, kind)
        if woken and kind == ENTITY:
            # Entities have no hint queue: read their rows at once (else once a second).
            self._next_sweep.pop(ENTITY, None)
        return woken

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's row changing (changes made in this process)."""
        return self._wakeups.watch(instance_id)

    def _changed(self, kinds: Sequence[str], instance_ids: Sequence[str] = ()) -> None:
        if kinds:
            self._hub.work(kinds)
        if instance_ids:
            self._hub.instances_changed(instance_ids)

    def describe(self) -> StoreDescription:
        """The account and hub (never the key)."""
        target = self._target
        return StoreDescription(
            "azure",
            f"Azure Storage task hub {target.hub!r} in account {target.account!r}",
            ("azure", target.account, target.hub),
        )

    async def open(self, *, create: bool = True) -> None:
        """Connect; with ``create``, make the hub's tables, queues and container if missing,
        else raise :class:`TaskHubNotFoundError` when the hub has no History table."""
        self._opened = True
        if create:
            await self.create_task_hub()
            return

        try:
            await self._table("history").get_table_access_policy()
        except ResourceNotFoundError:
            await self.close()
            raise TaskHubNotFoundError(
                f"no task hub {self._target.hub!r} in account {self._target.account!r}"
            ) from None

    def _connect(self) -> _Clients:
        """The clients of one event loop (the async clients are bound to the loop that first
        uses them)."""
        target = self._target
        credential: Any = None
        if target.connection_string is not None:
            conn = target.connection_string
            tables = TableServiceClient.from_connection_string(
                conn, **self._client_options("table")
            )
            queues = QueueServiceClient.from_connection_string(
                conn, **self._client_options("queue")
            )
            blobs = BlobServiceClient.from_connection_string(conn, **self._client_options("blob"))
        else:
            try:
                from azure.identity.aio import DefaultAzureCredential  # type: ignore[import-untyped,unused-ignore]
            except ImportError as exc:
                raise StoreError(
                    "signing in to an Azure account by its URL needs azure-identity "
                    "(pip install azure-identity), or give a connection_string"
                ) from exc
            credential = DefaultAzureCredential()
            tables = TableServiceClient(
                target.endpoint("table"),
                credential=credential,
                **self._client_options("table"),
            )
            queues = QueueServiceClient(
                target.endpoint("queue"),
                credential=credential,
                **self._client_options("queue"),
            )
            blobs = BlobServiceClient(
                target.endpoint("blob"),
                credential=credential,
                **self._client_options("blob"),
            )
        return _Clients(
            tables={key: tables.get_table_client(name) for key, name in self._names.items()},
            queues={
                name: queues.get_queue_client(name)
                for name in [*self._control_names, self._workitems_name]
            },
            container=blobs.get_container_client(self._container_name),
            leases=blobs.get_container_client(self._leases_name),
            services=[tables, queues, blobs, credential],
            table_service=tables,
        )

    def _client_options(self, service: str) -> dict[str, Any]:
        """Options of every client: count requests, give up a request that gets no answer
        (see ``READ_TIMEOUT`` and ``HINT_TIMEOUT``), and retry a failed one a few times with
        short waits (the dispatchers retry the whole operation after that, so a storage
        service back after a restart is used again within seconds)."""
        hints = service == "queue"
        return {
            "raw_request_hook": self._counter(service),
            "connection_timeout": min(CONNECT_TIMEOUT, HINT_TIMEOUT) if hints else CONNECT_TIMEOUT,
            "read_timeout": HINT_TIMEOUT if hints else READ_TIMEOUT,
            "retry_total": HINT_RETRIES if hints else 4 if service == "table" else 3,
            # The table client's waits between retries (0.2 s doubling, 2 s at most) ...
            "retry_backoff_factor": 0.2,
            "retry_backoff_max": 2,
            # ... and the queue and blob clients' (theirs start at 15 s: a partition lease
            # renewal retried once would hold the fetch loop that long): 1.7 s, 2.5 s, 3.6 s.
            "initial_backoff": 0.2,
            "increment_base": 1.5,
            "random_jitter_range": 0.2,
        }

    def _counter(self, service: str) -> Callable[[Any], None]:
        def count(request: Any) -> None:
            self.calls[service] += 1

        return count

    def _c(self) -> _Clients:
        if not self._opened:
            raise StoreError("the Azure Storage store is not open")
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = self._connect()
            # Closed when the loop shuts its async generators down (asyncio.run does), in
            # case this store is not closed in that loop.
            clients.closer = _close_at_loop_end(clients)
            clients.starter = loop.create_task(anext(clients.closer, None))
        return clients

    async def create_task_hub(self) -> None:
        """Create the hub's tables, queues and container where missing; the store is left
        open."""
        self._opened = True
        clients = self._c()
        for name in self._names.values():
            await clients.table_service.create_table_if_not_exists(name, **_PATIENT)
        for queue in clients.queues.values():
            try:
                await queue.create_queue(**_PATIENT)
            except ResourceExistsError:
                pass
        for container in (clients.container, clients.leases):
            try:
                await container.create_container(**_PATIENT)
            except ResourceExistsError:
                pass

    async def close(self) -> None:
        """Close this event loop's clients (those of loops that ended are dropped); the
        store may be opened again."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        clients = self._clients.pop(loop, None) if loop is not None else None
        self._clients.clear()
        self._opened = False
        if clients is not None:
            if self._partitions.owned:
                try:
                    await self._partitions.release_all(clients.leases, clients.tables["workers"])
                except Exception as exc:  # they run out by themselves
                    _LOG.debug("partitions not released: %s", exc)
            await clients.close()

    async def delete_task_hub(self) -> None:
        """Delete the hub's tables, queues and container."""
        self._opened = True
        clients = self._c()
        for name in self._names.values():
            await clients.table_service.delete_table(name, **_PATIENT)
        for queue in clients.queues.values():
            await _ignore_missing(queue.delete_queue(**_PATIENT))
        await _ignore_missing(clients.container.delete_container(**_PATIENT))
        await _ignore_missing(clients.leases.delete_container(**_PATIENT))

    def _now(self) -> datetime:
        return as_utc(self._clock())

    def _table(self, name: str) -> Any:
        return self._c().tables[name]

    def _new_id(self) -> int:
        """A fresh message or activity id, growing with wall time (so ids sort as they were
        made) and random in its last digits (so two processes rarely collide)."""
        candidate = time.time_ns() // 1000 * 1000 + random.randrange(1000)
        self._last_id = max(self._last_id + 1, candidate)
        return self._last_id

    def _control_queue(self, instance_id: str) -> str:
        digest = hashlib.blake2b(instance_id.encode(), digest_size=4).digest()
        return self._control_names[int.from_bytes(digest, "big") % len(self._control_names)]

    async def _pack(self, text: str | None) -> str | None:
        """``text`` as a property value: itself, or a reference to a gzipped blob."""
        if text is None or len(text) <= codec.PROPERTY_LIMIT:
            return text
        name = f"payload/{uuid.uuid4().hex}"
        await self._c().container.upload_blob(name, codec.gzip_text(text), overwrite=True)
        return codec.BLOB_PREFIX + name

    async def _unpack(self, value: str | None) -> str | None:
        if value is None or not value.startswith(codec.BLOB_PREFIX):
            return value
        stream = await self._c().container.download_blob(value[len(codec.BLOB_PREFIX) :])
        return codec.gunzip_text(await stream.readall())

    async def _query(
        self, table: str, query_filter: str, parameters: dict[str, Any] | None = None
    ) -> list[Any]:
        return [
            e
            async for e in self._table(table).query_entities(
                query_filter, parameters=parameters or {}
            )
        ]

    async def _get(self, table: str, pk: str, rk: str) -> Any | None:

        try:
            return await self._table(table).get_entity(pk, rk)
        except ResourceNotFoundError:
            return None

    async def _transact(self, operations: list[tuple[Any, ...]]) -> None:
        """Submit one entity-group transaction on the History table (nothing if empty)."""
        if operations:
            await self._table("history").submit_transaction(operations)

    async def _state(self, sentinel: Row) -> OrchestrationState:
        text = await self._unpack(sentinel["State"])
        assert text is not None
        return codec.state_from_json(text)

    def _lease_live(self, row: Row, now: datetime) -> bool:
        expires = row.get("Expires") or ""
        return bool(expires) and codec.from_text(expires) >= now

    def _remember(self, pk: str, rk: str, etag: str, row: Row, quiet: bool = False) -> None:
        if len(self._rows) > _REMEMBERED_ROWS:
            self._rows.clear()
            self._leased_inbox.clear()
        self._rows[(pk, rk)] = (etag, dict(row), quiet)
