"""A task hub in an Azure Storage account: tables hold the truth, queues carry hints.

Layout (``{hub}`` is the task hub's name):

- ``{hub}History`` table, one partition per instance (partition key: the instance id):
  a ``sentinel`` row (the instance row: status, execution id, history length, the lease's
  token, owner and expiry, delivery counts of its messages), history rows ``h-HIST-SEQ``,
  inbox message rows ``m-ID``, activity rows ``a-ID``, outbox rows ``o-ID`` (messages to
  other instances, not delivered yet) and delivery markers ``d-ID`` (messages received);
- ``{hub}Instances`` table: a copy of each sentinel's instance row for queries (queries
  re-read the sentinel of an unfinished instance, so what they report is exact);
- ``{hub}Workers`` and ``{hub}Schedules`` tables: worker presence and schedules;
- ``{hub}-control-NN`` queues (instances spread by a stable hash of their id) and the
  ``{hub}-workitems`` queue: hints that an instance has a message or that an activity is
  waiting. Hints are never trusted: a worker reads the rows they point at, and a sweep of
  the rows finds whatever a lost hint would have pointed at;
- ``{hub}-largemessages`` blob container: property values over the table limit, gzipped,
  and the staged rows of an episode too large for one table transaction.

Each instance is leased on its sentinel row: taking, renewing and committing are writes
conditional on the sentinel's ETag, so only one writer wins.

Committing an episode, in order:

1. One entity-group transaction on the instance's partition, conditional on the sentinel's
   ETag: the new history rows, the sentinel (new length, instance row, lease released),
   deletion of the consumed message rows and of a finished activity's row, new activity
   rows, messages to itself (timers) and outbox rows for messages to other instances. An
   episode larger than one transaction allows (100 rows, 4 MiB) stages its rows in a blob
   instead, which the sentinel names; the staged rows are applied (idempotently) before the
   partition is read again, by whoever reads it first.
   A crash before this step leaves nothing written; a stale worker (lease expired and taken
   over) fails the ETag condition and writes nothing.
2. Each outbox row is delivered to its receiver's partition in one transaction that
   inserts the message row and a ``d-ID`` marker (and creates the receiver's sentinel for a
   start). The marker makes delivery idempotent: a second delivery of the same id fails the
   insert and changes nothing. A crash before or during this step leaves the outbox row,
   which is delivered when the partition is next leased or swept.
3. The delivered outbox rows are deleted. A crash before that only means a redelivery,
   refused by the marker.
4. The ``{hub}Instances`` copy is written and hints are queued. A crash here leaves a
   stale copy (queries re-read unfinished instances' sentinels) or a missing hint (found by
   the sweep).

Completing an activity is one transaction on its instance's partition: the activity row
is deleted (conditional on its ETag, so a worker whose lease was lost writes nothing) and
the result inserted as a message row.

Every message stored in an inbox also changes the sentinel's ETag (an unconditional merge
of one property, in the same transaction, so concurrent messages never conflict). A store
object remembers the sentinels and activity rows it wrote or read last, with their ETags,
and commits an episode without reading the partition first when the fence holds on the
remembered row: if anything changed meanwhile (a message arrived, the lease was taken over),
the ETag differs, the transaction is refused whole, and the commit is tried again after
reading the partition.

Leases are per instance, on the sentinel; the control queues spread hints, not ownership,
so a dead worker's instances are taken by any worker once their leases expire.

Times are decided by the store clock, against due times kept in the rows (a queue's
visibility delay is only a hint). Delivery counts are kept in the rows too, so a message
or activity that keeps failing is given up by the ``max_deliveries`` rule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from duratask.backends._paging import page_of, resume_after, sort_value
from duratask.backends._shared import (
    as_utc,
    as_utc_or_none,
    check_page_size,
    ended_executions,
    history_is_known,
    instance_filter,
    new_lock_token,
    normalized_state,
    pending_state,
    rest_expiry,
    started_event,
    utc_now,
)
from duratask.backends._wakeups import (
    ACTIVITY,
    ORCHESTRATION,
    SCHEDULE,
    InstanceWatch,
    WakeUps,
    hub_wakeups,
)
from duratask.backends.azure import _codec as codec
from duratask.backends.azure._target import AzureTarget, parse_azure_url
from duratask.backends.base import (
    EXECUTIONS_KEPT,
    ActivityWorkItem,
    BacklogEntry,
    CleanEntityStorageResult,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityWorkItem,
    EpisodeFence,
    ExecutionRecord,
    InstanceQuery,
    KnownHistories,
    LeaseHeld,
    LeaseHolder,
    LeaseTakeover,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationWorkItem,
    PurgeFilter,
    QueryPage,
    ScheduleRecord,
    StoreDescription,
    WorkerInfo,
    WorkFilter,
)
from duratask.errors import (
    FeatureNotSupportedError,
    InstanceBusyError,
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    ScheduleAlreadyExistsError,
    StoreError,
    TaskHubNotFoundError,
)
from duratask.history import (
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
    event_from_json,
    event_to_json,
)
from duratask.state import DEFAULT_TASK_QUEUE, OrchestrationState, OrchestrationStatus

_LOG = logging.getLogger("duratask.backends.azure")
_BATCH = 100  # rows one entity-group transaction may hold
_BATCH_BYTES = 3_000_000  # below the 4 MiB a transaction may carry
_SCAN_CANDIDATES = 16  # instances one lock attempt tries at most
_SWEEP_EVERY = 1.0  # seconds between two reads of the rows for work, while hints are quiet
_MAX_HINT_DELAY = 6 * 24 * 3600  # below the 7 days a queue message may stay hidden
_RETRIES = 20  # reads and conditional writes of one row before giving up
_REMEMBERED_ROWS = 50_000  # rows (with their ETags) a store object keeps in mind at most
_HINT_HIDDEN = 30  # seconds a hint read by one worker is hidden from the others
_ENTITIES_UNSUPPORTED = (
    "durable entities are not supported by the Azure Storage store yet; use a SQLite or "
    "PostgreSQL task hub for entities"
)

Row = dict[str, Any]


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


class _Stale(Exception):
    """A remembered row was no longer current: read it and try again."""


@dataclass(slots=True)
class _Clients:
    """The service clients of one event loop."""

    tables: dict[str, Any]
    queues: dict[str, Any]
    container: Any
    services: list[Any]
    table_service: Any

    closer: Any = None
    starter: Any = None
    closed: bool = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for client in [*self.tables.values(), *self.queues.values(), self.container]:
            await client.close()
        for service in self.services:
            if service is not None:
                await service.close()


@dataclass(slots=True)
class _Partition:
    """The rows of one instance's partition a worker reads: sentinel, inbox and outbox."""

    sentinel: Row | None
    etag: str
    messages: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)


class AzureOrchestrationService:
    """A task hub in an Azure Storage account (see the module docstring for the layout and
    the order of writes). Open it with :func:`duratask.backends.open_store` and an
    ``azure://`` URL, or build it from a URL here."""

    wakes_all_processes = False

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
        }
        lower = hub.lower()
        self._control_names = [f"{lower}-control-{n:02d}" for n in range(self._target.partitions)]
        self._workitems_name = f"{lower}-workitems"
        self._container_name = f"{lower}-largemessages"
        # Queue visibility delays are wall time: a store on another clock (a test's) reads
        # the rows at every poll and queues no hints.
        self._wall_clock = clock is None
        self._next_sweep: dict[str, float] = {}
        # The soonest due time of held-back work this process saw, by kind: the rows are
        # read again once it passes (a queue's visibility delay has a 1 s grain).
        self._soonest: dict[str, datetime] = {}
        self._control_turn = 0
        self._orchestration_hints: list[tuple[str, Any, dict[str, Any]]] = []
        self._activity_hints: list[tuple[str, Any, dict[str, Any]]] = []
        self._clients: dict[asyncio.AbstractEventLoop, _Clients] = {}
        self._rows: dict[tuple[str, str], tuple[str, Row, bool]] = {}
        self.calls: Counter[str] = Counter()
        """Storage requests this store object made, by service: table, queue, blob."""
        self._opened = False
        self._last_id = 0
        # Wake-ups reach every store object on this hub in this process; other processes
        # find new work by polling.
        self._wakeups = WakeUps()
        self._hub = hub_wakeups(f"azure:{self._target.account}:{hub}")
        self._hub.join(self._wakeups)

    # -- push wake-ups (SupportsWakeUps) ------
    async def wait_for_notification(self, timeout: float, *, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for a sign (from this process) that work may be available."""
        return await self._wakeups.wait_for_work(timeout, kind)

    def watch_instance(self, instance_id: str) -> InstanceWatch:
        """Interest in one instance's row changing (changes made in this process)."""
        return self._wakeups.watch(instance_id)

    def _changed(self, kinds: Sequence[str], instance_ids: Sequence[str] = ()) -> None:
        if kinds:
            self._hub.work(kinds)
        if instance_ids:
            self._hub.instances_changed(instance_ids)

    # -- lifecycle ------
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
            services=[tables, queues, blobs, credential],
            table_service=tables,
        )

    def _client_options(self, service: str) -> dict[str, Any]:
        """Options of every client: count requests, and retry a failed one a few times with
        short waits (the dispatchers retry the whole operation after that, so a storage
        service back after a restart is used again within seconds)."""
        return {
            "raw_request_hook": self._counter(service),
            "retry_total": 4,
            "retry_backoff_factor": 0.2,
            "retry_backoff_max": 2,
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
            await clients.table_service.create_table_if_not_exists(name)
        for queue in clients.queues.values():
            try:
                await queue.create_queue()
            except ResourceExistsError:
                pass
        try:
            await clients.container.create_container()
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
            await clients.close()

    async def delete_task_hub(self) -> None:
        """Delete the hub's tables, queues and container."""
        self._opened = True
        clients = self._c()
        for name in self._names.values():
            await clients.table_service.delete_table(name)
        for queue in clients.queues.values():
            await _ignore_missing(queue.delete_queue())
        await _ignore_missing(clients.container.delete_container())

    # -- small helpers ------
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

    async def _hint(self, queue: str, body: str, delay: float = 0.0) -> None:
        """Queue a hint; a hint lost is found by the sweep, so failures are only logged."""
        if not self._wall_clock:
            return
        try:
            await (
                self._c()
                .queues[queue]
                .send_message(
                    body,
                    visibility_timeout=max(0, min(math.ceil(delay), _MAX_HINT_DELAY)),
                    time_to_live=-1,
                )
            )
        except Exception as exc:
            _LOG.debug("hint to %s not queued: %s", queue, exc)

    # -- reading an instance's partition ------
    async def _head(self, instance_id: str) -> _Partition:
        """The sentinel, inbox and outbox of an instance's partition (one query)."""
        pk = codec.table_key(instance_id)
        rows = await self._query(
            "history", "PartitionKey eq @pk and RowKey ge @lo", {"pk": pk, "lo": codec.MESSAGE}
        )
        part = _Partition(None, "")
        for row in rows:
            key = row["RowKey"]
            if key == codec.SENTINEL:
                part.sentinel, part.etag = dict(row), _etag(row)
            elif key.startswith(codec.MESSAGE):
                part.messages.append(dict(row))
            elif key.startswith(codec.OUTBOX):
                part.outbox.append(dict(row))
        return part

    async def _settled_head(self, instance_id: str) -> _Partition:
        """:meth:`_head`, after applying a staged episode and delivering the outbox."""
        for _ in range(5):
            part = await self._head(instance_id)
            sentinel = part.sentinel
            if sentinel is not None and sentinel.get("Staged"):
                await self._apply_staged(instance_id, part)
                continue
            if part.outbox:
                await self._deliver_outbox(instance_id, part.outbox)
                part.outbox = []
            return part
        raise StoreError(f"instance {instance_id!r}: its partition keeps changing")

    async def _state(self, sentinel: Row) -> OrchestrationState:
        text = await self._unpack(sentinel["State"])
        assert text is not None
        return codec.state_from_json(text)

    async def _read_history(self, instance_id: str, sentinel: Row) -> list[HistoryEvent]:
        lo, hi = codec.history_range(sentinel["Hist"])
        rows = await self._query(
            "history",
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
            {"pk": codec.table_key(instance_id), "lo": lo, "hi": hi},
        )
        rows.sort(key=lambda r: r["RowKey"])
        events = []
        for row in rows[: int(sentinel["Length"])]:
            text = await self._unpack(row["Body"])
            assert text is not None
            events.append(event_from_json(text))
        if len(events) != int(sentinel["Length"]):
            raise StoreError(f"instance {instance_id!r}: history rows are missing")
        return events

    def _lease_live(self, row: Row, now: datetime) -> bool:
        expires = row.get("Expires") or ""
        return bool(expires) and codec.from_text(expires) >= now

    # -- delivering messages ------
    async def _message_row(
        self, pk: str, message_id: int, message: OrchestrationMessage, now: datetime
    ) -> Row:
        due = message.visible_at or now
        return {
            "PartitionKey": pk,
            "RowKey": codec.row_key(codec.MESSAGE, message_id),
            "Body": await self._pack(codec.message_to_json(message)),
            "Due": codec.to_text(due),
        }

    async def _deliver(
        self, message: OrchestrationMessage, message_id: int, *, marked: bool
    ) -> bool:
        """Store ``message`` in its instance's inbox (creating the instance for a start);
        False if the instance does not exist. With ``marked``, a ``d-ID`` marker makes a
        second delivery of ``message_id`` a no-op (it counts as delivered)."""
        pk = codec.table_key(message.instance_id)
        now = self._now()
        for _ in range(20):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            ops: list[tuple[Any, ...]] = [
                ("create", await self._message_row(pk, message_id, message, now))
            ]
            if marked:
                ops.append(
                    (
                        "create",
                        {"PartitionKey": pk, "RowKey": codec.row_key(codec.DELIVERED, message_id)},
                    )
                )
            state: OrchestrationState | None = None
            if sentinel is None:
                if not isinstance(message.event, ExecutionStarted):
                    return False
                state = pending_state(message.instance_id, message.event)
                ops.append(("create", await self._new_sentinel(pk, state)))
            else:
                change = message.status_change
                current = await self._state(sentinel)
                if change is not None and current.runtime_status is change.when:
                    state = dataclasses.replace(
                        current, runtime_status=change.becomes, last_updated_at=now
                    )
                    updated = dict(sentinel)
                    updated["State"] = await self._pack(codec.state_to_json(state))
                    ops.append(("update", updated, _if_match(_etag(sentinel)) | _REPLACE))
                else:
                    ops.append(self._touch(pk))
                self._rows.pop((pk, codec.SENTINEL), None)
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code == 409 and marked and sentinel is not None:
                    if await self._get("history", pk, ops[1][1]["RowKey"]) is not None:
                        return True  # delivered before
                if exc.status_code in (409, 412):
                    continue
                raise
            if state is not None:
                await self._copy_instance(state)
            self._changed([ORCHESTRATION], [message.instance_id])
            if message.visible_at is not None and message.visible_at > now:
                self._held_back(ORCHESTRATION, message.visible_at)
            await self._hint(
                self._control_queue(message.instance_id),
                json.dumps({"i": message.instance_id}),
                (message.visible_at - now).total_seconds() if message.visible_at else 0.0,
            )
            return True
        raise StoreError(f"instance {message.instance_id!r}: delivery keeps conflicting")

    def _touch(self, pk: str) -> tuple[Any, ...]:
        """A transaction step that changes the sentinel's ETag and nothing else it holds
        (an unconditional merge of one property, so concurrent messages never conflict):
        an episode fenced on an unchanged instance then sees that a message arrived."""
        row = {"PartitionKey": pk, "RowKey": codec.SENTINEL, "Touched": str(self._new_id())}
        return ("update", row, {"mode": UpdateMode.MERGE})

    async def _new_sentinel(self, pk: str, state: OrchestrationState) -> Row:
        return {
            "PartitionKey": pk,
            "RowKey": codec.SENTINEL,
            "State": await self._pack(codec.state_to_json(state)),
            "Exec": state.execution_id or "",
            # Names the current history's rows: a new one at every reset, so the rows of a
            # dropped history never mix with the new one's.
            "Hist": uuid.uuid4().hex,
            "Length": 0,
            "Token": "",
            "Owner": "",
            "Expires": "",
            "Counts": "{}",
            "Staged": "",
        }

    async def _deliver_outbox(self, instance_id: str, outbox: list[Row]) -> None:
        """Deliver an instance's outbox rows in order, then delete them (see step 2 and 3
        of the module docstring)."""
        pk = codec.table_key(instance_id)
        for row in sorted(outbox, key=lambda r: r["RowKey"]):
            text = await self._unpack(row["Body"])
            assert text is not None
            await self._deliver(
                codec.message_from_json(text), codec.row_number(row["RowKey"]), marked=True
            )
            await _ignore_missing(self._table("history").delete_entity(pk, row["RowKey"]))

    async def _copy_instance(self, state: OrchestrationState) -> None:
        """Write the ``{hub}Instances`` copy of an instance row (best effort: queries
        re-read unfinished instances' sentinels)."""
        try:
            await self._table("instances").upsert_entity(
                {
                    "PartitionKey": codec.table_key(state.instance_id),
                    "RowKey": "",
                    "State": await self._pack(codec.state_to_json(state)),
                    "Status": state.runtime_status.value,
                },
                mode=UpdateMode.REPLACE,
            )
        except Exception as exc:
            _LOG.warning("instance copy of %r not written: %s", state.instance_id, exc)

    # -- orchestration work items ------
    async def lock_next_orchestration_work_item(
        self,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories = None,
        work_filter: WorkFilter | None = None,
    ) -> OrchestrationWorkItem | None:
        """Lease the free instance whose oldest visible message has waited longest."""
        runnable = work_filter
        for _ in range(_SCAN_CANDIDATES):
            hinted = await self._hinted_instances()
            if not hinted:
                break
            item = await self._try_lease(hinted[0], owner, lease, known_histories, runnable)
            if item is not None:
                return item
        if not self._sweep_due(ORCHESTRATION):
            return None
        for instance_id in await self._instance_candidates():
            item = await self._try_lease(instance_id, owner, lease, known_histories, runnable)
            if item is not None:
                return item
        return None

    def _sweep_due(self, kind: str) -> bool:
        """Whether to read the rows for work of ``kind`` now: at every poll on a test clock,
        else at most every ``_SWEEP_EVERY`` seconds (hints bring work in between)."""
        if not self._wall_clock:
            return True
        now = time.monotonic()
        soonest = self._soonest.get(kind)
        if soonest is not None and soonest <= self._now():
            del self._soonest[kind]
        elif now < self._next_sweep.get(kind, 0.0):
            return False
        self._next_sweep[kind] = now + _SWEEP_EVERY
        return True

    def _held_back(self, kind: str, due: datetime) -> None:
        """Note work of ``kind`` due later (see ``_soonest``)."""
        soonest = self._soonest.get(kind)
        if soonest is None or due < soonest:
            self._soonest[kind] = due

    async def _receive_hints(self, queue: str) -> list[tuple[str, Any, dict[str, Any]]]:
        """Up to 32 hints of a queue, hidden for a while from other workers."""
        if not self._wall_clock:
            return []
        try:
            client = self._c().queues[queue]
            pages = client.receive_messages(
                messages_per_page=32, visibility_timeout=_HINT_HIDDEN
            ).by_page()
            async for page in pages:
                return [(queue, m, json.loads(m.content)) async for m in page]
        except Exception as exc:
            _LOG.debug("hints of %s not read: %s", queue, exc)
        return []

    async def _drop_hint(self, hint: tuple[str, Any, dict[str, Any]]) -> None:
        try:
            await self._c().queues[hint[0]].delete_message(hint[1])
        except Exception as exc:
            _LOG.debug("hint of %s not deleted: %s", hint[0], exc)

    async def _hinted_instances(self) -> list[str]:
        """The instances the next hints name (hints read ahead are kept for the next call;
        the hints of the returned instances are deleted)."""
        if not self._orchestration_hints:
            queue = self._control_names[self._control_turn % len(self._control_names)]
            self._orchestration_hints = await self._receive_hints(queue)
            if not self._orchestration_hints:
                self._control_turn += 1
                return []
        first = self._orchestration_hints[0][2].get("i", "")
        same = [h for h in self._orchestration_hints if h[2].get("i") == first]
        self._orchestration_hints = [h for h in self._orchestration_hints if h not in same]
        for hint in same:
            await self._drop_hint(hint)
        return [first] if isinstance(first, str) and first else []

    async def _instance_candidates(self) -> list[str]:
        """Instances with a due message (oldest first), or with work to settle."""
        now = codec.to_text(self._now())
        rows = await self._query(
            "history",
            "( RowKey ge @m and RowKey lt @end ) or ( RowKey eq @s and Staged ne @empty )",
            {"m": codec.MESSAGE, "end": "o.", "s": codec.SENTINEL, "empty": ""},
        )
        best: dict[str, tuple[str, str]] = {}
        for row in rows:
            key = row["RowKey"]
            pk = row["PartitionKey"]
            if key.startswith(codec.MESSAGE):
                if row["Due"] > now:
                    self._held_back(ORCHESTRATION, codec.from_text(row["Due"]))
                    continue
                rank = (row["Due"], key)
            else:
                rank = ("", key)  # outbox or staged rows: settle first
            if pk not in best or rank < best[pk]:
                best[pk] = rank
        ordered = sorted(best, key=lambda pk: best[pk])
        return [codec.untable_key(pk) for pk in ordered[:_SCAN_CANDIDATES]]

    async def _try_lease(
        self,
        instance_id: str,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        runnable: WorkFilter | None,
    ) -> OrchestrationWorkItem | None:
        """Lease the instance if it has due messages and is free; a sentinel that changed
        between the read and the write (a message arrived) is read again."""
        for _ in range(3):
            try:
                return await self._lease_once(instance_id, owner, lease, known_histories, runnable)
            except _Stale:
                continue
        return None

    async def _lease_once(
        self,
        instance_id: str,
        owner: str,
        lease: timedelta,
        known_histories: KnownHistories,
        runnable: WorkFilter | None,
    ) -> OrchestrationWorkItem | None:

        part = await self._settled_head(instance_id)
        now = self._now()
        sentinel = part.sentinel
        if sentinel is None:
            await self._drop_orphans(instance_id, part.messages)
            return None
        visible = sorted(
            (m for m in part.messages if codec.from_text(m["Due"]) <= now),
            key=lambda m: m["RowKey"],
        )
        for m in part.messages:
            if codec.from_text(m["Due"]) > now:
                self._held_back(ORCHESTRATION, codec.from_text(m["Due"]))
        if not visible:
            return None
        if self._lease_live(sentinel, now):
            resting = not sentinel["Token"]
            if not resting or not await self._any_terminate(visible):
                return None
        state = await self._state(sentinel)
        if runnable is not None and (
            not runnable.serves_queue(state.task_queue)
            or (
                runnable.orchestrations is not None
                and (state.name, state.version) not in runnable.orchestrations
            )
        ):
            return None
        counts: dict[str, int] = json.loads(sentinel.get("Counts") or "{}")
        counts = {k: v for k, v in counts.items() if any(m["RowKey"] == k for m in part.messages)}
        for m in visible:
            counts[m["RowKey"]] = counts.get(m["RowKey"], 0) + 1
        token = new_lock_token()
        updated = dict(sentinel)
        if sentinel["Token"]:  # a lease that ran out unreleased: taken over
            await self._record_takeover(updated, instance_id, now, owner)
        updated.update(
            Token=token,
            Owner=owner,
            Expires=codec.to_text(now + lease),
            Counts=json.dumps(counts),
        )
        try:
            meta = await self._table("history").update_entity(
                updated,
                mode=UpdateMode.REPLACE,
                etag=part.etag,
                match_condition=MatchConditions.IfNotModified,
            )
            self._remember(codec.table_key(instance_id), codec.SENTINEL, meta["etag"], updated)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise _Stale from None  # another worker, or a message, came first
            raise
        length = int(sentinel["Length"])
        known = history_is_known(known_histories, instance_id, sentinel["Exec"] or None, length)
        history = [] if known else await self._read_history(instance_id, sentinel)
        messages = []
        for m in visible:
            text = await self._unpack(m["Body"])
            assert text is not None
            messages.append(
                LockedMessage(
                    codec.row_number(m["RowKey"]),
                    codec.message_from_json(text),
                    counts[m["RowKey"]],
                )
            )
        return OrchestrationWorkItem(
            instance_id=instance_id,
            lock_token=token,
            locked_until=now + lease,
            history=history,
            messages=messages,
            state=state,
            history_length=length,
            history_loaded=not known,
        )

    async def _record_takeover(
        self, sentinel: Row, instance_id: str, now: datetime, taken_by: str | None
    ) -> None:
        """Add to ``sentinel`` the record of its lease taken over now (see
        :meth:`lease_takeovers`)."""
        kept = codec.takeovers_from_json(instance_id, await self._unpack(sentinel.get("Takeovers")))
        expires = codec.opt_time(sentinel.get("Expires")) or now
        kept.append(
            LeaseTakeover(
                instance_id=instance_id,
                execution_id=sentinel.get("Exec") or None,
                previous_owner=sentinel.get("Owner") or None,
                lease_expired_at=min(expires, now),
                taken_at=now,
                taken_by=taken_by,
            )
        )
        sentinel["Takeovers"] = await self._pack(codec.takeovers_to_json(kept))

    async def lease_takeovers(self, instance_id: str) -> list[LeaseTakeover]:
        """The instance's leases that ran out unreleased or were broken, oldest first."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        if sentinel is None:
            return []
        return codec.takeovers_from_json(instance_id, await self._unpack(sentinel.get("Takeovers")))

    async def list_executions(self, instance_id: str) -> list[ExecutionRecord]:
        """The records of the instance's earlier executions, oldest first."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        if sentinel is None:
            return []
        text = await self._unpack(sentinel.get("Executions"))
        return codec.executions_from_json(instance_id, text)

    async def _any_terminate(self, rows: list[Row]) -> bool:
        for row in rows:
            text = await self._unpack(row["Body"])
            assert text is not None
            if isinstance(codec.message_from_json(text).event, ExecutionTerminated):
                return True
        return False

    async def _drop_orphans(self, instance_id: str, rows: list[Row]) -> None:
        """Delete message rows left in the partition of an instance that no longer exists."""
        pk = codec.table_key(instance_id)
        for row in rows:
            await _ignore_missing(self._table("history").delete_entity(pk, row["RowKey"]))

    async def renew_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, lease: timedelta
    ) -> None:
        """Extend the lease to now + ``lease`` (a write conditional on the sentinel's ETag)."""
        now = self._now()
        pk = codec.table_key(work_item.instance_id)
        for _ in range(_RETRIES):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            if sentinel is None or sentinel["Token"] != work_item.lock_token:
                raise LeaseLostError(f"lease on instance {work_item.instance_id!r} was lost")
            updated = dict(sentinel)
            updated["Expires"] = codec.to_text(now + lease)
            try:
                meta = await self._table("history").update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(sentinel))
                )
            except HttpResponseError as exc:
                if exc.status_code in (404, 412):
                    continue  # changed since read: read and check again
                raise
            self._remember(pk, codec.SENTINEL, meta["etag"], updated)
            work_item.locked_until = now + lease
            return
        raise StoreError(f"instance {work_item.instance_id!r}: renewal keeps conflicting")

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The history of the instance's current execution (empty if unknown)."""
        part = await self._settled_head(instance_id)
        if part.sentinel is None:
            return []
        return await self._read_history(instance_id, part.sentinel)

    async def commit_episode(
        self, fence: EpisodeFence, commit: OrchestrationCommit
    ) -> list[ActivityWorkItem]:
        """Commit one episode in one transaction fenced by the sentinel's ETag, then deliver
        its outbox (see the module docstring).

        The sentinel this store object wrote or read last is remembered with its ETag: when
        the fence holds on it, the episode is committed without reading the partition first
        (any other writer, a delivered message included, changes the ETag, and the
        transaction is then refused and retried after a read)."""
        if commit.entity_messages:
            raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)
        instance_id = commit.state.instance_id
        pk = codec.table_key(instance_id)
        cached = self._cached_sentinel(pk, fence)
        if cached is not None:
            try:
                return await self._commit(fence, commit, cached, fast=True)
            except _Stale:
                self._rows.pop((pk, codec.SENTINEL), None)
                finished = commit.finished_activity
                if finished is not None:
                    key = codec.row_key(codec.ACTIVITY, finished.work_item_id)
                    self._rows.pop((pk, key), None)
        for _ in range(_RETRIES):
            part = await self._settled_head(instance_id)
            self._check_fence(fence, instance_id, part, self._now())
            try:
                return await self._commit(fence, commit, part, fast=False)
            except _Stale:
                continue  # changed since read (a message arrived): read and check again
        raise StoreError(f"instance {instance_id!r}: its commit keeps conflicting")

    def _cached_sentinel(self, pk: str, fence: EpisodeFence) -> _Partition | None:
        entry = self._rows.get((pk, codec.SENTINEL))
        if entry is None:
            return None
        etag, row, quiet = entry
        if isinstance(fence, LeaseHeld):
            holds = row["Token"] == fence.lock_token and row["Length"] == fence.history_length
        else:
            holds = (
                quiet
                and not row["Token"]
                and not self._lease_live(row, self._now())
                and row["Length"] == fence.history_length
                and row["Exec"] == fence.execution_id
            )
        return _Partition(dict(row), etag) if holds else None

    def _remember(self, pk: str, rk: str, etag: str, row: Row, quiet: bool = False) -> None:
        if len(self._rows) > _REMEMBERED_ROWS:
            self._rows.clear()
        self._rows[(pk, rk)] = (etag, dict(row), quiet)

    async def _commit(
        self, fence: EpisodeFence, commit: OrchestrationCommit, part: _Partition, *, fast: bool
    ) -> list[ActivityWorkItem]:
        instance_id = commit.state.instance_id
        pk = codec.table_key(instance_id)
        now = self._now()
        sentinel = part.sentinel
        assert sentinel is not None
        ops: list[tuple[Any, ...]] = []
        finished = commit.finished_activity
        if finished is not None:
            apk = codec.table_key(finished.request.instance_id)
            akey = codec.row_key(codec.ACTIVITY, finished.work_item_id)
            known = self._rows.get((apk, akey)) if fast else None
            if known is not None and known[1]["Token"] == finished.lock_token:
                row, etag = known[1], known[0]
            else:
                found = await self._get("history", apk, akey)
                if found is None or found["Token"] != finished.lock_token:
                    raise LeaseLostError(f"lease on activity {finished.work_item_id} was lost")
                row, etag = dict(found), _etag(found)
            ops.append(("delete", {"PartitionKey": apk, "RowKey": akey}, _if_match(etag)))
        consumed = {codec.row_key(codec.MESSAGE, i) for i in commit.consumed_message_ids}
        present = consumed if fast else {m["RowKey"] for m in part.messages}
        for key in sorted(consumed & present):
            ops.append(("delete", {"PartitionKey": pk, "RowKey": key}))
        stored = await self._state(sentinel)
        state = normalized_state(commit.state) if commit.changes_instance else stored
        execution = (state.execution_id or "") if commit.changes_instance else sentinel["Exec"]
        hist = uuid.uuid4().hex if commit.reset_history else sentinel["Hist"]
        base = 0 if commit.reset_history else int(sentinel["Length"])
        for offset, event in enumerate(commit.new_events):
            ops.append(
                (
                    "upsert",
                    {
                        "PartitionKey": pk,
                        "RowKey": codec.history_key(hist, base + offset),
                        "Body": await self._pack(event_to_json(event)),
                    },
                    {"mode": UpdateMode.REPLACE},
                )
            )
        leased: list[ActivityWorkItem] = []
        eager = commit.eager_activities
        for request in commit.activities:
            activity_id = self._new_id()
            row = {
                "PartitionKey": pk,
                "RowKey": codec.row_key(codec.ACTIVITY, activity_id),
                "Body": await self._pack(codec.request_to_json(request)),
                "Name": request.name,
                "Queue": request.task_queue,
                "Due": codec.to_text(now),
                "Token": "",
                "Owner": "",
                "Expires": "",
                "Count": 0,
            }
            if eager is not None and len(leased) < eager.max_items:
                token = new_lock_token()
                row.update(
                    Token=token,
                    Owner=eager.owner,
                    Expires=codec.to_text(now + eager.duration),
                    Count=1,
                )
                leased.append(
                    ActivityWorkItem(activity_id, request, token, now + eager.duration, 1)
                )
            ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
        outbound = False
        for message in commit.messages:
            message = _normalized_message(message)
            if message.instance_id == instance_id:
                change = message.status_change
                if change is not None and state.runtime_status is change.when:
                    state = dataclasses.replace(
                        state, runtime_status=change.becomes, last_updated_at=now
                    )
                row = await self._message_row(pk, self._new_id(), message, now)
                if message.visible_at is not None and message.visible_at > now:
                    self._held_back(ORCHESTRATION, message.visible_at)
            else:
                outbound = True
                row = {
                    "PartitionKey": pk,
                    "RowKey": codec.row_key(codec.OUTBOX, self._new_id()),
                    "Body": await self._pack(codec.message_to_json(message)),
                }
            ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
        counts = {
            k: v for k, v in json.loads(sentinel.get("Counts") or "{}").items() if k not in consumed
        }
        updated = dict(sentinel)
        if (commit.reset_history and int(sentinel["Length"])) or commit.continued_executions:
            kept = codec.executions_from_json(
                instance_id, await self._unpack(sentinel.get("Executions"))
            )
            last = kept[-1] if kept else None
            previous = (last.generation, last.ended_at) if last is not None else None
            dropped = stored if commit.reset_history and int(sentinel["Length"]) else None
            kept.extend(ended_executions(dropped, commit, previous, now))
            updated["Executions"] = await self._pack(
                codec.executions_to_json(kept[-EXECUTIONS_KEPT:])
            )
        updated.update(
            State=await self._pack(codec.state_to_json(state)),
            Exec=execution,
            Hist=hist,
            Length=base + len(commit.new_events),
            Token="",
            Owner="",
            Expires="",
            Counts=json.dumps(counts),
        )
        results: Sequence[Any] = ()
        try:
            if len(ops) < _BATCH and _size(ops) < _BATCH_BYTES:
                results = await self._table("history").submit_transaction(
                    [("update", updated, _if_match(part.etag)), *ops]
                )
            else:
                await self._commit_staged(updated, part.etag, ops)
        except HttpResponseError as exc:
            if exc.status_code not in (404, 409, 412):
                raise
            raise _Stale from None
        left = present - consumed
        self._rows.pop((pk, codec.SENTINEL), None)
        if results:
            quiet = not left and not any(op[1]["RowKey"].startswith(codec.MESSAGE) for op in ops)
            self._remember(pk, codec.SENTINEL, results[0]["etag"], updated, quiet)
            for op, result in zip(ops, results[1:], strict=True):
                if op[0] == "upsert" and op[1]["RowKey"].startswith(codec.ACTIVITY):
                    if op[1]["Token"]:
                        self._remember(pk, op[1]["RowKey"], result["etag"], op[1])
        if finished is not None:
            self._rows.pop(
                (codec.table_key(finished.request.instance_id), ops[0][1]["RowKey"]), None
            )
        if updated.get("Staged"):
            await self._settled_head(instance_id)
        elif outbound:
            await self._deliver_outbox(
                instance_id, [op[1] for op in ops if op[1]["RowKey"].startswith(codec.OUTBOX)]
            )
        if state.runtime_status is not stored.runtime_status:
            # Queries re-read the sentinels of unfinished instances: the copy needs writing
            # only when the status changes (so a finished instance's copy is its last row).
            await self._copy_instance(state)
        kinds = [ACTIVITY] if commit.activities else []
        self._changed([*kinds, ORCHESTRATION] if commit.messages else kinds, [instance_id])
        leased_ids = {w.work_item_id for w in leased}
        for op in ops:
            key = op[1]["RowKey"]
            new = op[0] == "upsert" and key.startswith(codec.ACTIVITY)
            if new and codec.row_number(key) not in leased_ids:
                body = {"i": instance_id, "a": codec.row_number(key)}
                await self._hint(self._workitems_name, json.dumps(body))
        if left or any(m.instance_id == instance_id for m in commit.messages):
            await self._hint(self._control_queue(instance_id), json.dumps({"i": instance_id}))
        return leased

    def _check_fence(
        self, fence: EpisodeFence, instance_id: str, part: _Partition, now: datetime
    ) -> None:
        sentinel = part.sentinel
        if isinstance(fence, LeaseHeld):
            if sentinel is None or sentinel["Token"] != fence.lock_token:
                raise LeaseLostError(f"lease on instance {instance_id!r} was lost")
            if int(sentinel["Length"]) != fence.history_length:
                raise LeaseLostError(
                    f"history of instance {instance_id!r} changed under the work item"
                )
            return
        if (
            sentinel is None
            or self._lease_live(sentinel, now)
            or int(sentinel["Length"]) != fence.history_length
            or sentinel["Exec"] != fence.execution_id
            or any(codec.from_text(m["Due"]) <= now for m in part.messages)
        ):
            raise InstanceBusyError(f"instance {instance_id!r} is busy or changed")

    async def _commit_staged(self, sentinel: Row, etag: str, ops: list[tuple[Any, ...]]) -> None:
        """Commit an episode too large for one transaction: stage its rows in a blob, then
        write the sentinel naming it (the commit point); the rows are applied afterwards."""
        staged = [{"op": op[0], "row": {k: v for k, v in op[1].items()}} for op in ops]
        name = f"staged/{uuid.uuid4().hex}"
        await self._c().container.upload_blob(
            name, codec.gzip_text(json.dumps(staged)), overwrite=True
        )
        sentinel["Staged"] = name

        await self._table("history").update_entity(
            sentinel,
            mode=UpdateMode.REPLACE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    async def _apply_staged(self, instance_id: str, part: _Partition) -> None:
        """Apply the rows of a committed staged episode (idempotent), then clear the mark."""
        sentinel = part.sentinel
        assert sentinel is not None
        name = sentinel["Staged"]
        try:
            stream = await self._c().container.download_blob(name)
            staged = json.loads(codec.gunzip_text(await stream.readall()))
        except ResourceNotFoundError:
            return  # another reader applied it and cleared the mark meanwhile
        table = self._table("history")
        for item in staged:
            row = item["row"]
            if item["op"] == "delete":
                await _ignore_missing(table.delete_entity(row["PartitionKey"], row["RowKey"]))
            else:
                await table.upsert_entity(row, mode=UpdateMode.REPLACE)
        etag = part.etag
        for _ in range(_RETRIES):
            if sentinel is None or sentinel.get("Staged") != name:
                return  # cleared by another reader (or purged)
            updated = dict(sentinel)
            updated["Staged"] = ""
            try:
                await table.update_entity(updated, mode=UpdateMode.REPLACE, **_if_match(etag))
            except HttpResponseError as exc:
                if exc.status_code not in (404, 412):
                    raise
                found = await self._get("history", sentinel["PartitionKey"], codec.SENTINEL)
                sentinel, etag = (dict(found), _etag(found)) if found is not None else (None, "")
                continue
            await _ignore_missing(self._c().container.delete_blob(name))
            return

    async def abandon_orchestration_work_item(
        self, work_item: OrchestrationWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Release the lease; with ``retry_at`` the instance rests until then."""
        retry_at = as_utc_or_none(retry_at)
        pk = codec.table_key(work_item.instance_id)
        self._rows.pop((pk, codec.SENTINEL), None)
        for _ in range(_RETRIES):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            if sentinel is None or sentinel["Token"] != work_item.lock_token:
                return
            updated = dict(sentinel)
            updated.update(
                Token="",
                Owner="",
                Expires="" if retry_at is None else codec.to_text(rest_expiry(retry_at)),
            )
            try:
                await self._table("history").update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(sentinel))
                )
            except HttpResponseError as exc:
                if exc.status_code not in (404, 412):
                    raise
                continue
            break
        else:
            return
        if retry_at is None:
            self._changed([ORCHESTRATION])
        delay = 0.0 if retry_at is None else (retry_at - self._now()).total_seconds()
        if retry_at is not None:
            self._held_back(ORCHESTRATION, retry_at)
        body = json.dumps({"i": work_item.instance_id})
        await self._hint(self._control_queue(work_item.instance_id), body, delay)

    # -- activity work items ------
    async def lock_next_activity_work_items(
        self,
        owner: str,
        lease: timedelta,
        max_items: int = 1,
        work_filter: WorkFilter | None = None,
    ) -> list[ActivityWorkItem]:
        """Lease up to ``max_items`` of the oldest visible activities."""

        def runs(row: Mapping[str, Any]) -> bool:
            if work_filter is None:
                return True
            names = work_filter.activities
            queue = row.get("Queue") or DEFAULT_TASK_QUEUE
            return work_filter.serves_queue(queue) and (names is None or row["Name"] in names)

        leased: list[ActivityWorkItem] = []
        alone = False
        if not self._activity_hints:
            self._activity_hints = await self._receive_hints(self._workitems_name)
        kept: list[tuple[str, Any, dict[str, Any]]] = []
        for hint in self._activity_hints:
            if len(leased) >= max_items or alone:
                kept.append(hint)
                continue
            body = hint[2]
            row = await self._get(
                "history",
                codec.table_key(str(body.get("i", ""))),
                codec.row_key(codec.ACTIVITY, int(body.get("a", 0))),
            )
            if row is not None and not runs(row):
                kept.append(hint)  # another worker's: seen again when its hiding ends
                continue
            if row is not None:
                if int(row["Count"]) > 0 and leased:
                    kept.append(hint)
                    alone = True
                    continue
                item = await self._lease_activity(row, owner, lease)
                if item is not None:
                    leased.append(item)
                    alone = item.dequeue_count > 1
            await self._drop_hint(hint)
        self._activity_hints = kept
        if len(leased) >= max_items or alone or not self._sweep_due(ACTIVITY):
            return leased
        now = self._now()
        rows = await self._query(
            "history", "RowKey ge @lo and RowKey lt @hi", {"lo": codec.ACTIVITY, "hi": "a."}
        )
        rows.sort(key=lambda r: r["RowKey"])
        for row in rows:
            if len(leased) >= max_items:
                break
            if not runs(row):
                continue
            if codec.from_text(row["Due"]) > now or self._lease_live(row, now):
                continue
            if int(row["Count"]) > 0:  # delivered before, unfinished: alone
                if leased:
                    break
                max_items = 1
            item = await self._lease_activity(row, owner, lease)
            if item is not None:
                leased.append(item)
        return leased

    async def _lease_activity(
        self, row: Any, owner: str, lease: timedelta
    ) -> ActivityWorkItem | None:
        """Lease one activity row if it is due and free (a write conditional on its ETag)."""
        now = self._now()
        if codec.from_text(row["Due"]) > now or self._lease_live(row, now):
            return None
        count = int(row["Count"])
        token = new_lock_token()
        updated = dict(row)
        updated.update(
            Token=token, Owner=owner, Expires=codec.to_text(now + lease), Count=count + 1
        )
        try:
            meta = await self._table("history").update_entity(
                updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
            )
            self._remember(row["PartitionKey"], row["RowKey"], meta["etag"], updated)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return None
            raise
        text = await self._unpack(row["Body"])
        assert text is not None
        return ActivityWorkItem(
            codec.row_number(row["RowKey"]),
            codec.request_from_json(text),
            token,
            now + lease,
            count + 1,
        )

    async def _held_activity(self, work_item: ActivityWorkItem) -> Row:
        row = await self._get(
            "history",
            codec.table_key(work_item.request.instance_id),
            codec.row_key(codec.ACTIVITY, work_item.work_item_id),
        )
        if row is None or row["Token"] != work_item.lock_token:
            raise LeaseLostError(f"lease on activity {work_item.work_item_id} was lost")
        return dict(row) | {"__etag": _etag(row)}

    async def _write_activity(self, row: Row, lost: ActivityWorkItem) -> None:

        etag = row.pop("__etag")
        try:
            meta = await self._table("history").update_entity(
                row, mode=UpdateMode.REPLACE, **_if_match(etag)
            )
            self._remember(row["PartitionKey"], row["RowKey"], meta["etag"], row)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise LeaseLostError(f"lease on activity {lost.work_item_id} was lost") from None
            raise

    async def renew_activity_work_item(self, work_item: ActivityWorkItem, lease: timedelta) -> None:
        """Extend the lease to now + ``lease``."""
        now = self._now()
        row = await self._held_activity(work_item)
        row["Expires"] = codec.to_text(now + lease)
        await self._write_activity(row, work_item)
        work_item.locked_until = now + lease

    async def complete_activity_work_item(
        self, work_item: ActivityWorkItem, result: OrchestrationMessage
    ) -> None:
        """Delete the activity and store its result, in one transaction."""
        now = self._now()
        result = _normalized_message(result)
        elsewhere = result.instance_id != work_item.request.instance_id
        for _ in range(20):
            row = await self._held_activity(work_item)  # LeaseLostError once it is not
            etag = row.pop("__etag")
            pk = row["PartitionKey"]
            ops: list[tuple[Any, ...]] = [("delete", row, _if_match(etag))]
            sentinel = None if elsewhere else await self._get("history", pk, codec.SENTINEL)
            if sentinel is not None:  # (none: the instance was purged meanwhile)
                ops.append(("create", await self._message_row(pk, self._new_id(), result, now)))
                ops.append(self._touch(pk))
            self._rows.pop((pk, codec.SENTINEL), None)
            self._rows.pop((pk, row["RowKey"]), None)
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code in (404, 409, 412):
                    continue  # the instance's sentinel changed, or the activity's lease
                raise
            break
        else:
            raise StoreError(f"activity {work_item.work_item_id}: completion keeps conflicting")
        if elsewhere:  # not an orchestration's own activity: delivered after the deletion
            await self._deliver(result, self._new_id(), marked=False)
            return
        self._changed([ORCHESTRATION], [result.instance_id])
        await self._hint(
            self._control_queue(result.instance_id), json.dumps({"i": result.instance_id})
        )

    async def abandon_activity_work_item(
        self, work_item: ActivityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Hand the activity back unrun, visible again at ``retry_at`` (now if None)."""
        visible_at = as_utc(retry_at) if retry_at is not None else self._now()
        try:
            row = await self._held_activity(work_item)
        except LeaseLostError:
            return
        row.update(
            Token="",
            Owner="",
            Expires="",
            Due=codec.to_text(visible_at),
            Count=max(int(row["Count"]) - 1, 0),
        )
        try:
            await self._write_activity(row, work_item)
        except LeaseLostError:
            return
        self._changed([ACTIVITY])
        body = {"i": work_item.request.instance_id, "a": work_item.work_item_id}
        delay = (visible_at - self._now()).total_seconds()
        if delay > 0:
            self._held_back(ACTIVITY, visible_at)
        await self._hint(self._workitems_name, json.dumps(body), delay)

    async def record_activity_heartbeat(
        self, work_item: ActivityWorkItem, details: str | None, lease: timedelta
    ) -> None:
        """Keep ``details`` with the activity and extend its lease."""
        now = self._now()
        row = await self._held_activity(work_item)
        text = await self._unpack(row["Body"])
        assert text is not None
        request = dataclasses.replace(codec.request_from_json(text), heartbeat_details=details)
        row["Body"] = await self._pack(codec.request_to_json(request))
        row["Expires"] = codec.to_text(now + lease)
        await self._write_activity(row, work_item)
        work_item.locked_until = now + lease

    # -- entities (not kept by this store yet) ------
    supports_entities = False

    async def lock_next_entity_work_item(
        self,
        owner: str,
        lease: timedelta,
        max_messages: int = 100,
        work_filter: WorkFilter | None = None,
    ) -> EntityWorkItem | None:
        """Never any: this store keeps no entities."""
        return None

    async def renew_entity_work_item(self, work_item: EntityWorkItem, lease: timedelta) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def complete_entity_work_item(
        self, work_item: EntityWorkItem, commit: EntityCommit
    ) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def abandon_entity_work_item(
        self, work_item: EntityWorkItem, retry_at: datetime | None = None
    ) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def send_entity_message(self, message: EntityMessage) -> None:
        """Refused: this store keeps no entities."""
        raise FeatureNotSupportedError(_ENTITIES_UNSUPPORTED)

    async def get_entity(self, entity_id: str, include_state: bool = True) -> EntityMetadata | None:
        """Never any: this store keeps no entities."""
        return None

    async def query_entities(self, query: EntityQuery) -> EntityQueryPage:
        """Always empty: this store keeps no entities."""
        return EntityQueryPage()

    async def clean_entity_storage(
        self, remove_empty_entities: bool = True, release_orphaned_locks: bool = True
    ) -> CleanEntityStorageResult:
        """Nothing to clean: this store keeps no entities."""
        return CleanEntityStorageResult()

    # -- workers and their leases ------
    async def heartbeat_worker(self, worker: WorkerInfo) -> None:
        """Record (or refresh) a worker in the Workers table."""
        body = {
            "worker_id": worker.worker_id,
            "host": worker.host,
            "pid": worker.pid,
            "started_at": codec.to_text(worker.started_at),
            "heartbeat_at": codec.to_text(worker.heartbeat_at),
            "orchestrations": sorted(([n, v] for n, v in worker.orchestrations), key=str),
            "activities": sorted(worker.activities),
            "task_queues": sorted(worker.task_queues),
            "in_flight": dict(worker.in_flight),
        }
        await self._table("workers").upsert_entity(
            {
                "PartitionKey": "worker",
                "RowKey": codec.table_key(worker.worker_id),
                "Body": json.dumps(body),
            },
            mode=UpdateMode.REPLACE,
        )

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped."""
        await _ignore_missing(
            self._table("workers").delete_entity("worker", codec.table_key(worker_id))
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """The workers that reported themselves, most recently heard from first."""
        workers = []
        for row in await self._query("workers", "PartitionKey eq @pk", {"pk": "worker"}):
            data = json.loads(row["Body"])
            workers.append(
                WorkerInfo(
                    worker_id=data["worker_id"],
                    host=data["host"],
                    pid=data["pid"],
                    started_at=codec.from_text(data["started_at"]),
                    heartbeat_at=codec.from_text(data["heartbeat_at"]),
                    orchestrations=frozenset((n, v) for n, v in data["orchestrations"]),
                    activities=frozenset(data["activities"]),
                    task_queues=frozenset(data.get("task_queues", [DEFAULT_TASK_QUEUE])),
                    in_flight={str(k): int(v) for k, v in data["in_flight"].items()},
                )
            )
        return sorted(workers, key=lambda w: w.heartbeat_at, reverse=True)

    async def _leased_rows(self) -> list[Any]:
        return await self._query("history", "Token ne @empty", {"empty": ""})

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds live leases on instances and activities, and until when."""
        now = self._now()
        held: dict[str, tuple[int, datetime]] = {}
        for row in await self._leased_rows():
            if not self._lease_live(row, now) or not row.get("Owner"):
                continue
            until = codec.from_text(row["Expires"])
            count, latest = held.get(row["Owner"], (0, until))
            held[row["Owner"]] = (count + 1, max(latest, until))
        return [LeaseHolder(owner, n, until) for owner, (n, until) in sorted(held.items())]

    async def break_leases(self, owner: str) -> int:
        """Expire every lease ``owner`` holds."""
        broken = 0
        for row in await self._leased_rows():
            if row.get("Owner") != owner:
                continue
            updated = dict(row)
            if row["RowKey"] == codec.SENTINEL:
                instance_id = codec.untable_key(row["PartitionKey"])
                await self._record_takeover(updated, instance_id, self._now(), None)
            updated.update(Token="", Owner="", Expires="")
            try:
                await self._table("history").update_entity(
                    updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
                )
            except HttpResponseError as exc:
                if exc.status_code in (404, 412):
                    continue
                raise
            broken += 1
        if broken:
            self._changed([ORCHESTRATION, ACTIVITY])
        return broken

    async def backlog(self) -> list[BacklogEntry]:
        """The work waiting, by kind and name."""
        now = self._now()
        rows = await self._query(
            "history",
            "( RowKey ge @a and RowKey lt @a_end ) or ( RowKey ge @m and RowKey lt @m_end ) "
            "or RowKey eq @s",
            {
                "a": codec.ACTIVITY,
                "a_end": "a.",
                "m": codec.MESSAGE,
                "m_end": "m.",
                "s": codec.SENTINEL,
            },
        )
        sentinels = {r["PartitionKey"]: r for r in rows if r["RowKey"] == codec.SENTINEL}
        counts: dict[tuple[str, str], list[int]] = {}

        def count(kind: str, name: str, row: Row, due_now: bool) -> None:
            live = self._lease_live(row, now)
            slot = 2 if row["Token"] and live else 0
            if slot == 0 and (live or not due_now):
                slot = 1
            counts.setdefault((kind, name), [0, 0, 0])[slot] += 1

        with_messages: dict[str, bool] = {}
        for row in rows:
            key = row["RowKey"]
            if key.startswith(codec.MESSAGE):
                due = codec.from_text(row["Due"]) <= now
                pk = row["PartitionKey"]
                with_messages[pk] = with_messages.get(pk, False) or due
            elif key.startswith(codec.ACTIVITY):
                count("activity", row["Name"], row, codec.from_text(row["Due"]) <= now)
        for pk, due in with_messages.items():
            sentinel = sentinels.get(pk)
            if sentinel is not None:
                count("orchestration", (await self._state(sentinel)).name, sentinel, due)
        return [
            BacklogEntry(kind, name, *numbers)
            for (kind, name), numbers in sorted(
                counts.items(), key=lambda item: (item[0][0] != "orchestration", item[0][1])
            )
        ]

    # -- client operations ------
    async def create_instance(
        self, message: OrchestrationMessage, replaceable: frozenset[OrchestrationStatus]
    ) -> None:
        """Create an instance, replacing an existing one whose status is ``replaceable``."""
        state = pending_state(message.instance_id, started_event(message))
        message = _normalized_message(message)
        pk = codec.table_key(message.instance_id)
        now = self._now()
        for _ in range(20):
            sentinel = await self._get("history", pk, codec.SENTINEL)
            row = await self._message_row(pk, self._new_id(), message, now)
            new = await self._new_sentinel(pk, state)
            if sentinel is None:
                ops: list[tuple[Any, ...]] = [("create", new), ("create", row)]
            else:
                status = (await self._state(sentinel)).runtime_status
                if status not in replaceable:
                    raise OrchestrationAlreadyExistsError(message.instance_id, status)
                await self._wipe(pk, keep_sentinel=True)
                ops = [("update", new, _if_match(_etag(sentinel))), ("create", row)]
            try:
                await self._transact(ops)
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    continue
                raise
            await self._copy_instance(state)
            self._changed([ORCHESTRATION], [message.instance_id])
            await self._hint(
                self._control_queue(message.instance_id), json.dumps({"i": message.instance_id})
            )
            return
        raise StoreError(f"instance {message.instance_id!r}: creation keeps conflicting")

    async def _wipe(self, pk: str, *, keep_sentinel: bool) -> None:
        """Delete the rows of a partition (the sentinel last, or not at all)."""
        rows = await self._query("history", "PartitionKey eq @pk", {"pk": pk})
        keys = sorted(r["RowKey"] for r in rows if r["RowKey"] != codec.SENTINEL)
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            await self._transact_or_each(
                [("delete", {"PartitionKey": pk, "RowKey": key}) for key in chunk]
            )
        if not keep_sentinel:
            await _ignore_missing(self._table("history").delete_entity(pk, codec.SENTINEL))

    async def _transact_or_each(self, ops: list[tuple[Any, ...]]) -> None:

        try:
            await self._transact(ops)
        except HttpResponseError:
            for op in ops:
                row = op[1]
                await _ignore_missing(
                    self._table("history").delete_entity(row["PartitionKey"], row["RowKey"])
                )

    async def send_message(self, message: OrchestrationMessage) -> bool:
        """Store a message in its instance's inbox; False if there is no such instance."""
        return await self._deliver(_normalized_message(message), self._new_id(), marked=False)

    async def get_instance(self, instance_id: str) -> OrchestrationState | None:
        """The instance row, read from its sentinel (exact)."""
        sentinel = await self._get("history", codec.table_key(instance_id), codec.SENTINEL)
        return None if sentinel is None else await self._state(sentinel)

    async def _all_states(self) -> list[OrchestrationState]:
        """Every instance, from the Instances copy; an unfinished one is re-read from its
        sentinel, a copy whose sentinel is gone is left out."""
        states = []
        for row in await self._query("instances", "RowKey eq @rk", {"rk": ""}):
            text = await self._unpack(row["State"])
            assert text is not None
            state = codec.state_from_json(text)
            if not state.runtime_status.is_terminal:
                exact = await self.get_instance(state.instance_id)
                if exact is None:
                    continue
                state = exact
            states.append(state)
        return states

    async def query_instances(self, query: InstanceQuery) -> QueryPage:
        """Matching instances in the query's order; reads the whole Instances table (the
        table service has no index but the keys)."""
        check_page_size(query.page_size)
        after = resume_after(query)
        matches = instance_filter(query)

        def key(s: OrchestrationState) -> tuple[Any, str]:
            return (sort_value(s, query.sort), s.instance_id)

        def beyond(s: OrchestrationState) -> bool:
            if after is None:
                return True
            return key(s) < after if query.descending else key(s) > after

        rows = sorted(
            (s for s in await self._all_states() if matches(s) and beyond(s)),
            key=key,
            reverse=query.descending,
        )
        page, token = page_of(query, rows[: query.page_size + 1])
        return QueryPage(states=page, continuation_token=token)

    async def count_instances(self, query: InstanceQuery) -> dict[OrchestrationStatus, int]:
        """Counts by status of the instances matching ``query``'s filters."""
        matches = instance_filter(query)
        return dict(Counter(s.runtime_status for s in await self._all_states() if matches(s)))

    async def purge_instance(self, instance_id: str) -> bool:
        """Delete a terminal instance's partition and copy; False if absent or not terminal."""
        pk = codec.table_key(instance_id)
        sentinel = await self._get("history", pk, codec.SENTINEL)
        if sentinel is None or not (await self._state(sentinel)).runtime_status.is_terminal:
            return False
        await self._wipe(pk, keep_sentinel=False)
        await _ignore_missing(self._table("instances").delete_entity(pk, ""))
        return True

    async def purge_instances(self, purge_filter: PurgeFilter) -> int:
        """Delete every terminal instance matching the filter; returns how many."""
        before = as_utc_or_none(purge_filter.created_before)
        start = as_utc_or_none(purge_filter.created_from)
        completed_before = as_utc_or_none(purge_filter.completed_before)
        purged = 0
        for s in await self._all_states():
            if (
                s.runtime_status.is_terminal
                and (purge_filter.statuses is None or s.runtime_status in purge_filter.statuses)
                and (before is None or s.created_at < before)
                and (start is None or s.created_at >= start)
                and (
                    completed_before is None
                    or (s.completed_at is not None and s.completed_at < completed_before)
                )
            ):
                purged += await self.purge_instance(s.instance_id)
        return purged

    # -- schedules ------
    def _schedule_row(self, record: ScheduleRecord) -> Row:
        return {
            "PartitionKey": "schedule",
            "RowKey": codec.table_key(record.schedule_id),
            "Id": record.schedule_id,
            "Definition": record.definition,
            "State": record.state,
            "Due": codec.opt_text(record.next_due_at),
            "ClaimedBy": record.claimed_by or "",
            "Revision": record.revision,
            "Created": codec.to_text(record.created_at),
            "Updated": codec.to_text(record.updated_at),
        }

    @staticmethod
    def _schedule(row: Any) -> ScheduleRecord:
        return ScheduleRecord(
            schedule_id=row["Id"],
            definition=row["Definition"],
            state=row["State"],
            next_due_at=codec.opt_time(row["Due"]),
            claimed_by=row["ClaimedBy"] or None,
            revision=int(row["Revision"]),
            created_at=codec.from_text(row["Created"]),
            updated_at=codec.from_text(row["Updated"]),
        )

    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Store a new schedule; :class:`ScheduleAlreadyExistsError` if the id is taken."""
        try:
            await self._table("schedules").create_entity(self._schedule_row(record))
        except ResourceExistsError:
            raise ScheduleAlreadyExistsError(record.schedule_id) from None
        self._changed([SCHEDULE])

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        """One schedule, or None."""
        row = await self._get("schedules", "schedule", codec.table_key(schedule_id))
        return None if row is None else self._schedule(row)

    async def _schedules(self) -> list[ScheduleRecord]:
        rows = await self._query("schedules", "PartitionKey eq @pk", {"pk": "schedule"})
        return [self._schedule(row) for row in rows]

    async def list_schedules(self, prefix: str | None = None) -> list[ScheduleRecord]:
        """The schedules whose id starts with ``prefix``, by id."""
        found = [r for r in await self._schedules() if r.schedule_id.startswith(prefix or "")]
        return sorted(found, key=lambda r: r.schedule_id)

    async def update_schedule(self, record: ScheduleRecord) -> bool:
        """Write the schedule if its stored revision is still ``record.revision`` (a write
        conditional on the row's ETag)."""
        row = await self._get("schedules", "schedule", codec.table_key(record.schedule_id))
        if row is None or int(row["Revision"]) != record.revision:
            return False
        updated = self._schedule_row(dataclasses.replace(record, revision=record.revision + 1))
        try:
            await self._table("schedules").update_entity(
                updated, mode=UpdateMode.REPLACE, **_if_match(_etag(row))
            )
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return False
            raise
        self._changed([SCHEDULE])
        return True

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        if await self.get_schedule(schedule_id) is None:
            return False
        try:
            await self._table("schedules").delete_entity("schedule", codec.table_key(schedule_id))
        except ResourceNotFoundError:
            return False
        self._changed([SCHEDULE])
        return True

    async def due_schedules(self, now: datetime, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules due at ``now``, soonest first."""
        now = as_utc(now)
        due = [
            r for r in await self._schedules() if r.next_due_at is not None and r.next_due_at <= now
        ]
        due.sort(key=lambda r: (r.next_due_at, r.schedule_id))
        return due[:limit]

    async def next_schedule_due_at(self) -> datetime | None:
        """The earliest time a schedule is due."""
        times = [r.next_due_at for r in await self._schedules() if r.next_due_at is not None]
        return min(times, default=None)


async def _close_at_loop_end(clients: _Clients) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await clients.close()


_REPLACE = {"mode": UpdateMode.REPLACE}


def _if_match(etag: str) -> dict[str, Any]:
    return {"etag": etag, "match_condition": MatchConditions.IfNotModified}


def _size(ops: Sequence[tuple[Any, ...]]) -> int:
    return sum(len(v) * 2 if isinstance(v, str) else 8 for op in ops for v in op[1].values())


async def _ignore_missing(call: Any) -> None:
    try:
        await call
    except ResourceNotFoundError:
        pass


def _normalized_message(message: OrchestrationMessage) -> OrchestrationMessage:
    if message.visible_at is None:
        return message
    return dataclasses.replace(message, visible_at=as_utc(message.visible_at))
