"""What only the PostgreSQL store does: schemas as task hubs, concurrent migration, surviving
killed connections, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from duratask.backends import open_store
from duratask.backends.base import (
    ActivityRequest,
    InstanceQuery,
    OrchestrationCommit,
    OrchestrationMessage,
)
from duratask.backends.postgres import PostgresOrchestrationService
from duratask.errors import LeaseLostError, OrchestrationAlreadyExistsError, StoreError
from duratask.history import EventRaised, ExecutionStarted

from .conftest import ALL_POSTGRES_VERSIONS as ALL_VERSIONS
from .conftest import T0, FakeClock, drop_schema, new_schema, require_postgres

LEASE = timedelta(seconds=30)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pg_url() -> str:
    return require_postgres()


@pytest.fixture
def schemas(pg_url: str) -> Iterator[Callable[[], str]]:
    """Hands out fresh schema names and drops them all after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(new_schema())
        return made[-1]

    yield make
    for schema in made:
        drop_schema(schema)


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Callable[..., PostgresOrchestrationService]]:
    """Builds stores on the test server and closes them after the test."""
    made: list[PostgresOrchestrationService] = []

    def make(schema: str, **kwargs: Any) -> PostgresOrchestrationService:
        made.append(PostgresOrchestrationService(pg_url, schema=schema, **kwargs))
        return made[-1]

    yield make
    for store in made:
        await store.close()


def admin(pg_url: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(pg_url, autocommit=True)


def schema_exists(pg_url: str, schema: str) -> bool:
    with admin(pg_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def schema_versions(pg_url: str, schema: str) -> list[int]:
    query = sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
        sql.Identifier(schema)
    )
    with admin(pg_url) as conn:
        return [v for (v,) in conn.execute(query).fetchall()]


def kill_connections(pg_url: str, schema: str) -> int:
    """Terminate every server backend of the stores on ``schema``; how many."""
    with admin(pg_url) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"duratask[{schema}]",),
        ).fetchall()
    return len(rows)


def started(instance_id: str) -> OrchestrationMessage:
    event = ExecutionStarted(
        timestamp=T0, name="Greet", input='"x"', instance_id=instance_id, execution_id="e1"
    )
    return OrchestrationMessage(instance_id, event, execution_id="e1")


def raised(instance_id: str, name: str) -> OrchestrationMessage:
    return OrchestrationMessage(instance_id, EventRaised(timestamp=T0, name=name), "e1")


# -- task hubs as schemas ------------------------------------------------------------------------
async def test_two_hubs_in_one_database_are_isolated(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    one, two = stores(schemas()), stores(schemas())
    await asyncio.gather(one.open(), two.open())
    await one.create_instance(started("a"), frozenset())
    assert await two.get_instance("a") is None
    assert await two.send_message(raised("a", "x")) is False
    assert await two.lock_next_orchestration_work_item("w", LEASE) is None
    assert (await two.query_instances(InstanceQuery())).states == []

    await two.create_instance(started("a"), frozenset())  # the same id, another hub
    work_item = await two.lock_next_orchestration_work_item("w", LEASE)
    assert work_item is not None and work_item.instance_id == "a"
    assert await one.lock_next_orchestration_work_item("w", LEASE) is not None

    await two.delete_task_hub()
    assert await one.get_instance("a") is not None


async def test_concurrent_first_opens_migrate_once(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    opened = [stores(schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in opened))
    assert schema_versions(pg_url, schema) == ALL_VERSIONS
    await opened[0].create_instance(started("a"), frozenset())
    assert await opened[3].get_instance("a") is not None
    await stores(schema).open()
    assert schema_versions(pg_url, schema) == ALL_VERSIONS


async def test_the_store_logic_is_installed_again_when_it_differs(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    import psycopg
    from psycopg import sql

    schema = schemas()
    await stores(schema).open()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = sql.Identifier(schema, "logic")
        function = sql.Identifier(schema, "lease_next_instance")
        conn.execute(sql.SQL("UPDATE {} SET digest = 'older'").format(table))
        conn.execute(sql.SQL("DROP FUNCTION {}(jsonb)").format(function))
    store = stores(schema)
    await store.open()  # installs this version's logic again
    await store.create_instance(started("a"), frozenset())
    assert await store.lock_next_orchestration_work_item("w", LEASE) is not None
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(sql.SQL("SELECT digest FROM {}").format(table)).fetchone()
    assert row is not None and row[0] != "older"


async def test_refuses_a_newer_schema(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    store = stores(schema)
    await store.open()
    await store.close()
    with admin(pg_url) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (99)").format(
                sql.Identifier(schema)
            )
        )
    with pytest.raises(StoreError, match="99"):
        await store.open()


async def test_delete_task_hub_drops_the_schema(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    store = stores(schema)
    await store.open()
    await store.create_instance(started("a"), frozenset())
    assert schema_exists(pg_url, schema)
    await store.delete_task_hub()
    assert not schema_exists(pg_url, schema)
    await store.open()
    assert schema_versions(pg_url, schema) == ALL_VERSIONS
    assert await store.get_instance("a") is None


@pytest.mark.parametrize(
    "name",
    ["", "Hub", "1hub", "hub-1", "hub name", 'x"; DROP SCHEMA public; --', "é", "a" * 64,
     "public", "pg_catalog", "pg_x", "information_schema"],
)  # fmt: skip
def test_invalid_schema_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        PostgresOrchestrationService("postgresql://u@h/db", schema=name)


def test_schema_names_at_the_limits_are_accepted() -> None:
    for name in ("_", "a" * 63, "hub_2", "duratask"):
        assert PostgresOrchestrationService("postgresql://u@h/db", schema=name).schema == name


def test_open_store_urls() -> None:
    store = open_store("postgresql://u@h:5433/db?schema=hub_a&sslmode=disable")
    assert isinstance(store, PostgresOrchestrationService)
    assert store.schema == "hub_a"
    assert store._db._conninfo == "postgresql://u@h:5433/db?sslmode=disable"
    other = open_store("postgres://u@h/db")
    assert isinstance(other, PostgresOrchestrationService)
    assert other.schema == "duratask"
    with pytest.raises(ValueError):
        open_store("postgresql://u@h/db?schema=Bad-Name")
    with pytest.raises(ValueError):
        PostgresOrchestrationService("postgresql://u@h/db?schema=one", schema="two")
    kv = PostgresOrchestrationService("host=h dbname=db user=u", schema="kv")
    assert kv.schema == "kv"


async def test_store_must_be_opened(stores: Callable[..., PostgresOrchestrationService]) -> None:
    store = stores("never_opened")
    with pytest.raises(StoreError, match="open"):
        await store.get_instance("a")
    with pytest.raises(StoreError, match="open"):
        await store.wait_for_notification(0.01)


# -- surviving lost connections ----------------------------------------------------------------
async def test_killed_connections_are_replaced(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    store = stores(schema, max_pool_size=4)
    await store.open()
    await store.create_instance(started("a"), frozenset())
    assert await store.wait_for_notification(5)  # starts the listener connection
    assert kill_connections(pg_url, schema) >= 2

    assert await store.get_instance("a") is not None
    work_item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work_item is not None
    await store.abandon_orchestration_work_item(work_item)
    await store.create_instance(started("b"), frozenset())
    # The listener reconnects and says so: work may have been missed meanwhile.
    assert await store.wait_for_notification(5)


async def test_operations_survive_connections_killed_mid_use(
    pg_url: str, stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    store = stores(schema, max_pool_size=4)
    await store.open()
    stop = asyncio.Event()

    async def client(n: int) -> int:
        done = 0
        while not stop.is_set():
            instance_id = f"c{n}-{done}"
            await store.create_instance(started(instance_id), frozenset())
            assert await store.get_instance(instance_id) is not None
            done += 1
        return done

    async def killer() -> int:
        kills = 0
        for _ in range(5):
            # Pace the kills, but stop at once if the clients are done.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
            kills += await asyncio.to_thread(kill_connections, pg_url, schema)
        stop.set()
        return kills

    *done, kills = await asyncio.gather(client(0), client(1), client(2), killer())
    assert kills > 0
    assert all(d > 0 for d in done)
    page = await store.query_instances(InstanceQuery(page_size=1000))
    assert len(page.states) >= sum(done)


async def test_lease_fence_holds_after_an_ambiguous_failure(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    """A completion retried after it committed meets its own commit: LeaseLostError."""
    store = stores(schemas())
    await store.open()
    await store.create_instance(started("a"), frozenset())
    work_item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work_item is not None and work_item.state is not None
    commit = OrchestrationCommit(
        state=work_item.state,
        new_events=[m.message.event for m in work_item.messages],
        consumed_message_ids=[m.message_id for m in work_item.messages],
    )
    await store.commit_episode(work_item.fence(), commit)
    with pytest.raises(LeaseLostError):
        await store.commit_episode(work_item.fence(), commit)
    assert len(await store.get_history("a")) == 1


async def test_commits_ready_together_share_a_call_each_fenced_alone(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    """Group commit: episodes committed at the same time go in one call, and a stale one
    among them is refused alone (LeaseLostError), writing nothing."""
    store = stores(schemas())
    await store.open()
    work_items = []
    for instance_id in ("a", "b", "c"):
        await store.create_instance(started(instance_id), frozenset())
        work_item = await store.lock_next_orchestration_work_item("w", LEASE)
        assert work_item is not None and work_item.state is not None
        work_items.append(work_item)

    def commit_of(work_item: Any) -> OrchestrationCommit:
        return OrchestrationCommit(
            state=work_item.state,
            new_events=[m.message.event for m in work_item.messages],
            consumed_message_ids=[m.message_id for m in work_item.messages],
            activities=[ActivityRequest(work_item.instance_id, "exec-1", 0, "Act")],
        )

    stale = work_items[2]
    await store.commit_episode(stale.fence(), commit_of(stale))
    batches: list[int] = []
    commits = store._commits
    send_many = commits._send_many

    async def counting(documents: list[str]) -> list[dict[str, Any]]:
        batches.append(len(documents))
        return await send_many(documents)

    commits._send_many = counting
    outcomes = await asyncio.gather(
        *(store.commit_episode(wi.fence(), commit_of(wi)) for wi in work_items),
        return_exceptions=True,
    )
    assert batches == [3], "the three commits went in one call"
    assert outcomes[:2] == [[], []]
    assert isinstance(outcomes[2], LeaseLostError)
    for instance_id in ("a", "b", "c"):
        assert len(await store.get_history(instance_id)) == 1
    leased = await store.lock_next_activity_work_items("w", LEASE, max_items=10)
    assert sorted(item.request.instance_id for item in leased) == ["a", "b", "c"]


async def test_a_create_sent_again_meets_its_own_first_attempt(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    """A create whose call failed after it committed (the connection broke during COMMIT)
    is sent again as a resend: finding its own execution there, it reports success. A
    first send finding the same id (another create) is refused."""
    store = stores(schemas())
    await store.open()
    sent: list[str] = []
    creates = store._creates
    send = creates.send

    async def recording(document: str) -> dict[str, Any]:
        sent.append(document)
        return await send(document)

    creates.send = recording  # type: ignore[method-assign]
    await store.create_instance(started("a"), frozenset())
    assert (await creates._send_one(sent[0], True))["outcome"] == "created"
    assert (await creates._send_one(sent[0], False))["outcome"] == "exists"
    with pytest.raises(OrchestrationAlreadyExistsError):
        await store.create_instance(started("a"), frozenset())
    page = await store.query_instances(InstanceQuery(page_size=10))
    assert [s.instance_id for s in page.states] == ["a"]
    work_item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work_item is not None and len(work_item.messages) == 1, "one start message"


# -- wake-ups --------------------------------------------------------------------------------------
async def test_notify_wakes_a_waiting_store_quickly(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    schema = schemas()
    waiter, sender = stores(schema), stores(schema)
    await asyncio.gather(waiter.open(), sender.open())
    assert waiter.channel == schema
    assert await waiter.wait_for_notification(5)  # listening now; may have missed some
    assert not await waiter.wait_for_notification(0.05)

    waiting = asyncio.create_task(waiter.wait_for_notification(10))
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done, "woken with nothing sent"
    began = time.perf_counter()
    await sender.create_instance(started("a"), frozenset())
    assert await waiting
    latency = time.perf_counter() - began
    assert latency < 0.5, f"woken after {latency:.3f}s"

    # A notification that arrives while nobody waits is kept for the next wait.
    await sender.send_message(raised("a", "x"))
    deadline = time.monotonic() + 10
    while "orchestration" not in waiter._db.wakeups._pending:  # delivered to the listener
        assert time.monotonic() < deadline, "the notification never reached the listener"
        await asyncio.sleep(0)
    began = time.perf_counter()
    assert await waiter.wait_for_notification(10)
    assert time.perf_counter() - began < 0.05
    assert not await waiter.wait_for_notification(0.05)


async def test_notifications_by_kind(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    store = stores(schemas(), clock=FakeClock())
    await store.open()
    assert await store.wait_for_notification(5)
    with pytest.raises(ValueError):
        await store.wait_for_notification(0.01, kind="timers")

    both = asyncio.gather(
        store.wait_for_notification(5, kind="orchestration"),
        store.wait_for_notification(5, kind="activity"),
    )
    await asyncio.sleep(0)  # both waiters start waiting
    await store.create_instance(started("a"), frozenset())
    work_item = await store.lock_next_orchestration_work_item("w", LEASE)
    assert work_item is not None and work_item.state is not None
    await store.commit_episode(
        work_item.fence(),
        OrchestrationCommit(
            state=work_item.state,
            consumed_message_ids=[m.message_id for m in work_item.messages],
            activities=[ActivityRequest("a", "e1", 0, "Act")],
        ),
    )
    assert list(await both) == [True, True]  # gather's result is a list, typed as a tuple
    assert not await store.wait_for_notification(0.05)

    # A message due later wakes nobody now.
    later = OrchestrationMessage("a", EventRaised(timestamp=T0, name="t"), "e1", T0 + LEASE)
    await store.send_message(later)
    assert not await store.wait_for_notification(0.1, kind="orchestration")


async def test_hubs_do_not_wake_each_other(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    one, two = stores(schemas()), stores(schemas())
    await asyncio.gather(one.open(), two.open())
    assert await one.wait_for_notification(5)
    await two.create_instance(started("a"), frozenset())
    assert not await one.wait_for_notification(0.2)


async def test_close_lets_waiters_go(
    stores: Callable[..., PostgresOrchestrationService], schemas: Callable[[], str]
) -> None:
    store = stores(schemas())
    await store.open()
    assert await store.wait_for_notification(5)
    waiting = asyncio.create_task(store.wait_for_notification(30))
    await asyncio.sleep(0)  # the waiter starts waiting
    await store.close()
    await asyncio.wait_for(waiting, 2)
    with pytest.raises(StoreError, match="open"):
        await store.wait_for_notification(0.01)


def test_invalid_connection_strings_are_refused() -> None:
    with pytest.raises(ValueError):
        PostgresOrchestrationService("host=h dbname")
