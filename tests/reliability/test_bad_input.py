"""Bad input, on every store: each case gets a clear, typed error (or a documented no-op),
the hub stays consistent (``check_hub`` finds nothing) and unrelated instances are intact.

Every case counts towards the "bad inputs tried" figure printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import duratask as dt
from duratask import history as h
from duratask.integrity import check_hub
from tests.conformance.e2e_hub import TaskHub

from .figures import count

pytestmark = pytest.mark.timeout(90)
S = dt.OrchestrationStatus
WORKER_PAYLOAD_LIMIT = 4096
CLIENT_PAYLOAD_LIMIT = 1024


# -- activities and orchestrations -------------------------------------------------------------
def echo_activity(ctx: dt.ActivityContext, value: Any) -> Any:
    return value


def returns_object(ctx: dt.ActivityContext, _: Any) -> Any:
    return object()


def returns_nan(ctx: dt.ActivityContext, _: Any) -> Any:
    return {"x": math.nan}


def returns_big(ctx: dt.ActivityContext, _: Any) -> str:
    return "x" * (WORKER_PAYLOAD_LIMIT + 1)


async def echo(ctx: dt.OrchestrationContext, value: Any) -> Any:
    return value


async def waits(ctx: dt.OrchestrationContext, _: Any) -> Any:
    return await ctx.wait_for_external_event("go")


async def via_activity(ctx: dt.OrchestrationContext, value: Any) -> Any:
    return await ctx.call_activity(echo_activity, input=value)


async def wants_int(ctx: dt.OrchestrationContext, n: int) -> int:
    return n + 1


async def awaits_asyncio(ctx: dt.OrchestrationContext, _: Any) -> None:
    await asyncio.sleep(0)


async def returns_bad(ctx: dt.OrchestrationContext, what: str) -> Any:
    return {"object": object(), "nan": math.nan, "big": "x" * (WORKER_PAYLOAD_LIMIT + 1)}[what]


# What an orchestration does wrong -> (the error type it sees, words its message must hold).
INSIDE: dict[str, tuple[str, tuple[str, ...]]] = {
    "unknown activity": ("ActivityNotRegisteredError", ("no_such_activity", "not registered")),
    "unknown sub-orchestration": ("OrchestrationNotRegisteredError", ("no_such_orchestration",)),
    "activity returns an object": ("SerializationError", ("result of activity", "returns_object")),
    "activity returns NaN": ("SerializationError", ("result of activity", "returns_nan")),
    "activity result too large": ("PayloadTooLargeError", ("result of activity", "returns_big")),
    "activity input is an object": ("SerializationError", ("input of activity",)),
    "activity input too large": ("PayloadTooLargeError", ("input of activity",)),
    "sub-orchestration input is a lambda": ("SerializationError", ("input of sub-orchestration",)),
    "custom status is a set of objects": ("SerializationError", ("custom status",)),
    "custom status too large": ("PayloadTooLargeError", ("custom status",)),
    "event sent is a lock": ("SerializationError", ("data of event",)),
    "continue-as-new input is NaN": ("SerializationError", ("continue_as_new",)),
    "timer at a naive datetime": ("ValueError", ("timezone-aware",)),
}


async def misbehaves(ctx: dt.OrchestrationContext, case: str) -> list[str]:
    """Does the wrong thing ``case`` names and reports what error it got."""
    big = "x" * (WORKER_PAYLOAD_LIMIT + 1)
    try:
        match case:
            case "unknown activity":
                await ctx.call_activity("no_such_activity")
            case "unknown sub-orchestration":
                await ctx.call_sub_orchestrator("no_such_orchestration")
            case "activity returns an object":
                await ctx.call_activity(returns_object)
            case "activity returns NaN":
                await ctx.call_activity(returns_nan)
            case "activity result too large":
                await ctx.call_activity(returns_big)
            case "activity input is an object":
                await ctx.call_activity(echo_activity, input=object())
            case "activity input too large":
                await ctx.call_activity(echo_activity, input=big)
            case "sub-orchestration input is a lambda":
                await ctx.call_sub_orchestrator(echo, input=lambda: 1)
            case "custom status is a set of objects":
                ctx.set_custom_status({object()})
            case "custom status too large":
                ctx.set_custom_status(big)
            case "event sent is a lock":
                ctx.send_event("anyone", "e", threading.Lock())
            case "continue-as-new input is NaN":
                ctx.continue_as_new(math.nan)
            case "timer at a naive datetime":
                await ctx.create_timer(datetime(2030, 1, 1))
    except dt.TaskFailedError as err:
        return [err.details.error_type, err.details.message]
    except Exception as err:
        return [type(err).__name__, str(err)]
    return ["no error", ""]


# -- the hub under test ------------------------------------------------------------------------
@dataclass
class Hub:
    """A running hub with two bystander instances that no case may disturb."""

    kind: str
    url: str
    task_hub: TaskHub
    done_state: dt.OrchestrationState | None = None
    waiting_history: int = 0

    @property
    def client(self) -> dt.AsyncTaskHubClient:
        return self.task_hub.client

    async def setup_bystanders(self) -> None:
        c = self.client
        await c.schedule_new_orchestration(echo, input={"keep": 1}, instance_id="bystander-done")
        await c.schedule_new_orchestration(waits, instance_id="bystander-waiting")
        self.done_state = await c.wait_for_orchestration_completion("bystander-done", timeout=30)
        await c.wait_for_orchestration_start("bystander-waiting", timeout=30)
        self.waiting_history = len(await c.get_orchestration_history("bystander-waiting"))

    async def verify(self) -> None:
        """The hub is consistent and the bystanders are as they were."""
        problems = await check_hub(self.client)
        assert problems == [], "\n".join(map(str, problems))
        assert await self.client.get_orchestration_state("bystander-done") == self.done_state
        waiting = await self.client.get_orchestration_state("bystander-waiting")
        assert waiting is not None and waiting.runtime_status is S.RUNNING
        history = await self.client.get_orchestration_history("bystander-waiting")
        assert len(history) == self.waiting_history

    async def finish(self) -> None:
        """The waiting bystander still works after everything the test did."""
        await self.client.raise_orchestration_event("bystander-waiting", "go", "still fine")
        state = await self.client.wait_for_orchestration_completion("bystander-waiting", 30)
        assert state.output == "still fine"
        assert await check_hub(self.client) == []

    async def instance_ids(self) -> set[str]:
        page = await self.client.query_orchestrations(page_size=1000)
        return {s.instance_id for s in page.states}


@pytest.fixture
async def hub(store_url: str) -> AsyncIterator[Hub]:
    # Told to fail what it has not registered, so unknown names fail where they are used.
    task_hub = TaskHub(store_url, max_payload_bytes=WORKER_PAYLOAD_LIMIT, unknown_work="fail")
    task_hub.register(
        echo,
        waits,
        via_activity,
        wants_int,
        awaits_asyncio,
        returns_bad,
        misbehaves,
        activities=(echo_activity, returns_object, returns_nan, returns_big),
    )
    await task_hub.start()
    scheme = store_url.split(":", 1)[0]
    hub = Hub("postgres" if scheme.startswith("postgres") else scheme, store_url, task_hub)
    try:
        await hub.setup_bystanders()
        yield hub
        await hub.finish()
    finally:
        await task_hub.stop()


def xfail_on(request: pytest.FixtureRequest, hub: Hub, kinds: set[str], reason: str) -> None:
    if hub.kind in kinds:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


async def raises(
    error: type[BaseException] | tuple[type[BaseException], ...],
    call: Awaitable[Any],
    *words: str,
) -> BaseException:
    """Await ``call``, which must raise ``error`` with every one of ``words`` in its message."""
    count("bad inputs tried")
    with pytest.raises(error) as caught:
        await call
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return caught.value


# -- instance ids ------------------------------------------------------------------------------
BAD_IDS: dict[str, Any] = {
    "empty": "",
    "10 KB": "x" * 10240,
    "tab": "a\tb",
    "newline": "a\nb",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "escape sequence": "\x1b[31mred",
    "int": 42,
    "bytes": b"id",
    "list": ["id"],
}
UNENCODABLE_ID = "a\ud800b"  # a lone surrogate: not UTF-8, so no store can keep it


async def test_schedule_refuses_bad_instance_ids(hub: Hub) -> None:
    before = await hub.instance_ids()
    for bad in BAD_IDS.values():
        await raises(
            dt.InvalidInstanceIdError,
            hub.client.schedule_new_orchestration(echo, instance_id=bad),
            "instance id",
        )
    assert await hub.instance_ids() == before
    await hub.verify()


async def test_schedule_refuses_an_id_no_store_can_keep(
    hub: Hub, request: pytest.FixtureRequest
) -> None:
    await raises(
        dt.InvalidInstanceIdError,
        hub.client.schedule_new_orchestration(echo, instance_id=UNENCODABLE_ID),
        "instance id",
    )
    await hub.verify()


# Every client method that takes an instance id.
ID_CALLS: dict[str, Callable[[dt.AsyncTaskHubClient, Any], Awaitable[Any]]] = {
    "get_orchestration_state": lambda c, i: c.get_orchestration_state(i),
    "get_orchestration_history": lambda c, i: c.get_orchestration_history(i),
    "raise_orchestration_event": lambda c, i: c.raise_orchestration_event(i, "go"),
    "terminate_orchestration": lambda c, i: c.terminate_orchestration(i),
    "suspend_orchestration": lambda c, i: c.suspend_orchestration(i),
    "resume_orchestration": lambda c, i: c.resume_orchestration(i),
    "purge_orchestration": lambda c, i: c.purge_orchestration(i),
    "rewind_orchestration": lambda c, i: c.rewind_orchestration(i),
    "restart_orchestration": lambda c, i: c.restart_orchestration(i),
    "wait_for_orchestration_start": lambda c, i: c.wait_for_orchestration_start(i, 0),
    "wait_for_orchestration_completion": lambda c, i: c.wait_for_orchestration_completion(i, 0),
}


async def test_every_client_method_refuses_bad_instance_ids(hub: Hub) -> None:
    wrong: dict[str, str] = {}
    for method, call in ID_CALLS.items():
        for label, bad in {**BAD_IDS, "None": None, "lone surrogate": UNENCODABLE_ID}.items():
            count("bad inputs tried")
            try:
                await call(hub.client, bad)
                wrong[f"{method}({label})"] = "no error"
            except dt.InvalidInstanceIdError:
                pass
            except Exception as exc:
                wrong[f"{method}({label})"] = f"{type(exc).__name__}: {exc}"[:120]
    assert wrong == {}
    await hub.verify()


# -- payloads ----------------------------------------------------------------------------------
def _circular_list() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _circular_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def _deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


class Opaque:
    """A plain class: not a dataclass, not a model; it has no JSON form."""

    def __init__(self) -> None:
        self.value = 1


NON_JSON: dict[str, Callable[[], Any]] = {
    "object()": object,
    "lambda": lambda: lambda: 1,
    "NaN": lambda: math.nan,
    "infinity": lambda: math.inf,
    "-infinity in a list": lambda: [1, -math.inf],
    "NaN deep in a dict": lambda: {"a": {"b": [math.nan]}},
    "bytes that are not UTF-8": lambda: b"\xff\xfe",
    "circular list": _circular_list,
    "circular dict": _circular_dict,
    "100 000 levels deep": lambda: _deep(100_000),
    "set of objects": lambda: {object()},
    "dict holding an object": lambda: {"a": object()},
    "plain class instance": Opaque,
    "thread lock": threading.Lock,
    "module": lambda: math,
    "class": lambda: int,
    "range": lambda: range(3),
    "Ellipsis": lambda: Ellipsis,
}

# Values the converter documents as encodable, with the JSON they become.
ENCODABLE: dict[str, tuple[Callable[[], Any], Any]] = {
    "set": (lambda: {3}, [3]),
    "frozenset": (lambda: frozenset({"a"}), ["a"]),
    "tuple": (lambda: (1, "a"), [1, "a"]),
    "aware datetime": (
        lambda: datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "2024-01-02T03:04:05Z",
    ),
    "huge int": (lambda: 10**50, 10**50),
    # A lone surrogate is refused instead (InvalidTextError): see test_hostile_input.py.
    "NUL and a surrogate pair in text": (lambda: "\x00\U0001f600", "\x00\U0001f600"),
}


async def test_schedule_refuses_non_json_input(hub: Hub) -> None:
    before = await hub.instance_ids()
    for label, make in NON_JSON.items():
        error = await raises(
            dt.SerializationError,
            hub.client.schedule_new_orchestration(echo, input=make(), instance_id="never"),
            "input of orchestration 'echo'",
        )
        assert isinstance(error, TypeError), label  # SerializationError is a TypeError too
    assert await hub.instance_ids() == before
    await hub.verify()


async def test_documented_encodings_round_trip(hub: Hub) -> None:
    for label, (make, expected) in ENCODABLE.items():
        count("bad inputs tried")
        iid = await hub.client.schedule_new_orchestration(echo, input=make())
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        assert (state.runtime_status, state.output) == (S.COMPLETED, expected), label
    await hub.verify()


async def test_event_data_and_terminate_output_must_be_json(hub: Hub) -> None:
    await hub.client.schedule_new_orchestration(waits, instance_id="target")
    await hub.client.wait_for_orchestration_start("target", timeout=30)
    length = len(await hub.client.get_orchestration_history("target"))
    for make in NON_JSON.values():
        await raises(
            dt.SerializationError,
            hub.client.raise_orchestration_event("target", "go", make()),
            "data of event 'go'",
        )
        await raises(
            dt.SerializationError,
            hub.client.terminate_orchestration("target", output=make()),
            "output of terminated orchestration",
        )
    state = await hub.client.get_orchestration_state("target")
    assert state is not None and state.runtime_status is S.RUNNING
    assert len(await hub.client.get_orchestration_history("target")) == length
    await hub.client.raise_orchestration_event("target", "go", "ok")
    state = await hub.client.wait_for_orchestration_completion("target", timeout=30)
    assert state.output == "ok"
    await hub.verify()


async def test_oversized_payloads_fail_at_the_client_call(hub: Hub) -> None:
    big = "x" * CLIENT_PAYLOAD_LIMIT  # plus the quotes: over the limit
    async with dt.AsyncTaskHubClient(hub.url, max_payload_bytes=CLIENT_PAYLOAD_LIMIT) as small:
        before = await hub.instance_ids()
        error = await raises(
            dt.PayloadTooLargeError,
            small.schedule_new_orchestration(echo, input=big, instance_id="never"),
            "input of orchestration 'echo'",
            str(CLIENT_PAYLOAD_LIMIT + 2),
            str(CLIENT_PAYLOAD_LIMIT),
        )
        assert isinstance(error, dt.PayloadTooLargeError)
        assert (error.size, error.limit) == (CLIENT_PAYLOAD_LIMIT + 2, CLIENT_PAYLOAD_LIMIT)
        assert await hub.instance_ids() == before
        await raises(
            dt.PayloadTooLargeError,
            small.raise_orchestration_event("bystander-waiting", "go", big),
            "data of event 'go'",
        )
        await raises(
            dt.PayloadTooLargeError,
            small.terminate_orchestration("bystander-waiting", output=big),
            "output of terminated orchestration",
        )
        # Exactly at the limit is fine.
        exact = "y" * (CLIENT_PAYLOAD_LIMIT - 2)
        count("bad inputs tried")
        iid = await small.schedule_new_orchestration(echo, input=exact)
        assert (await small.wait_for_orchestration_completion(iid, 30)).output == exact
    await hub.verify()


# -- inside orchestrations ---------------------------------------------------------------------
async def test_bad_steps_inside_an_orchestration_raise_where_they_are_made(hub: Hub) -> None:
    ids = {
        case: await hub.client.schedule_new_orchestration(misbehaves, input=case) for case in INSIDE
    }
    for case, iid in ids.items():
        count("bad inputs tried")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        assert state.runtime_status is S.COMPLETED, (case, state.failure_details)
        error_type, message = state.output
        expected_type, words = INSIDE[case]
        assert error_type == expected_type, (case, message)
        for word in words:
            assert word in message, (case, word, message)
    await hub.verify()


FAILS_THE_INSTANCE: dict[str, tuple[Any, Any, str, tuple[str, ...]]] = {
    "unknown orchestration": (
        "no_such_orchestration",
        None,
        "OrchestrationNotRegisteredError",
        ("no_such_orchestration", "not registered"),
    ),
    "unknown version": (
        "echo",
        None,
        "OrchestrationNotRegisteredError",
        ("'echo'", "v9"),
    ),
    "input of the wrong type": (wants_int, "abc", "SerializationError", ("int",)),
    "output is an object": (returns_bad, "object", "SerializationError", ("output",)),
    "output is NaN": (returns_bad, "nan", "SerializationError", ("output",)),
    "output too large": (returns_bad, "big", "PayloadTooLargeError", ("output",)),
    "awaits asyncio.sleep": (awaits_asyncio, None, "TypeError", ("not a duratask task",)),
}


async def test_bad_orchestrations_fail_with_a_named_error(hub: Hub) -> None:
    ids = {}
    for case, (orchestration, value, _, _) in FAILS_THE_INSTANCE.items():
        version = "v9" if case == "unknown version" else None
        ids[case] = await hub.client.schedule_new_orchestration(
            orchestration, input=value, version=version
        )
    for case, iid in ids.items():
        count("bad inputs tried")
        state = await hub.client.wait_for_orchestration_completion(iid, timeout=30)
        assert state.runtime_status is S.FAILED, case
        assert state.failure_details is not None
        _, _, error_type, words = FAILS_THE_INSTANCE[case]
        assert state.failure_details.error_type == error_type, (case, state.failure_details)
        for word in words:
            assert word in state.failure_details.message, (case, word)
        with pytest.raises(dt.OrchestrationFailedError, match=error_type):
            state.raise_if_failed()
    await hub.verify()


# -- operations on instances in the wrong state ------------------------------------------------
async def finished(hub: Hub) -> dict[str, dt.OrchestrationState]:
    """One COMPLETED, one FAILED and one TERMINATED instance."""
    c = hub.client
    await c.schedule_new_orchestration(echo, input="done", instance_id="completed")
    await c.schedule_new_orchestration("no_such_orchestration", instance_id="failed")
    await c.schedule_new_orchestration(waits, instance_id="terminated")
    await c.wait_for_orchestration_start("terminated", timeout=30)
    await c.terminate_orchestration("terminated", output="stop")
    return {
        iid: await c.wait_for_orchestration_completion(iid, timeout=30)
        for iid in ("completed", "failed", "terminated")
    }


async def test_signals_to_finished_instances_are_refused_and_change_nothing(hub: Hub) -> None:
    c = hub.client
    states = await finished(hub)
    histories = {iid: await c.get_orchestration_history(iid) for iid in states}
    for iid, state in states.items():
        for call in (
            c.raise_orchestration_event(iid, "go", "late"),
            c.terminate_orchestration(iid, output="again"),
            c.suspend_orchestration(iid),
            c.resume_orchestration(iid),
        ):
            count("bad inputs tried")
            with pytest.raises(dt.OrchestrationFinishedError) as refused:
                await call
            assert refused.value.instance_id == iid
            assert refused.value.status is state.runtime_status
            assert f"it has already finished ({state.runtime_status.value})" in str(refused.value)
    # Nothing was sent; had anything been, the worker would have consumed it by now.
    marker = await c.schedule_new_orchestration(echo, input="after")
    await c.wait_for_orchestration_completion(marker, timeout=30)
    for iid, state in states.items():
        assert await c.get_orchestration_state(iid) == state
        assert await c.get_orchestration_history(iid) == histories[iid]
    await hub.verify()


async def test_signals_to_missing_instances_are_not_found(hub: Hub) -> None:
    c = hub.client
    await c.schedule_new_orchestration(echo, instance_id="purged")
    await c.wait_for_orchestration_completion("purged", timeout=30)
    assert await c.purge_orchestration("purged") == 1
    for iid in ("never-existed", "purged"):
        for call in (
            c.raise_orchestration_event(iid, "go"),
            c.terminate_orchestration(iid),
            c.suspend_orchestration(iid),
            c.resume_orchestration(iid),
            c.purge_orchestration(iid),
            c.rewind_orchestration(iid),
            c.restart_orchestration(iid),
            c.get_orchestration_history(iid),
            c.wait_for_orchestration_start(iid, timeout=1),
            c.wait_for_orchestration_completion(iid, timeout=1),
        ):
            error = await raises(dt.OrchestrationNotFoundError, call, repr(iid))
            assert isinstance(error, LookupError)
        assert await c.get_orchestration_state(iid) is None
    await hub.verify()


async def test_terminating_twice_keeps_the_first_output(hub: Hub) -> None:
    c = hub.client
    await c.schedule_new_orchestration(waits, instance_id="twice")
    await c.wait_for_orchestration_start("twice", timeout=30)
    count("bad inputs tried", 2)
    await c.terminate_orchestration("twice", output="first")
    try:  # sent while still running, or refused if the first already ended it
        await c.terminate_orchestration("twice", output="second")
    except dt.OrchestrationFinishedError:
        pass
    state = await c.wait_for_orchestration_completion("twice", timeout=30)
    assert (state.runtime_status, state.output) == (S.TERMINATED, "first")
    with pytest.raises(dt.OrchestrationFinishedError, match="already finished"):
        await c.terminate_orchestration("twice", output="third")
    assert await c.get_orchestration_state("twice") == state
    await hub.verify()


async def test_suspending_and_resuming_twice(hub: Hub) -> None:
    c = hub.client
    await c.schedule_new_orchestration(waits, instance_id="pausing")
    await c.wait_for_orchestration_start("pausing", timeout=30)
    count("bad inputs tried", 4)
    await c.suspend_orchestration("pausing", reason="one")
    await c.suspend_orchestration("pausing", reason="two")
    await c.raise_orchestration_event("pausing", "go", "held")
    await c.resume_orchestration("pausing")
    await c.resume_orchestration("pausing")
    state = await c.wait_for_orchestration_completion("pausing", timeout=30)
    assert (state.runtime_status, state.output) == (S.COMPLETED, "held")
    await hub.verify()


async def test_live_instances_cannot_be_purged_rewound_or_restarted_in_place(hub: Hub) -> None:
    c = hub.client
    await c.schedule_new_orchestration(waits, instance_id="live")
    await c.schedule_new_orchestration(waits, instance_id="paused")
    await c.wait_for_orchestration_start("paused", timeout=30)
    await c.suspend_orchestration("paused")
    await c.schedule_new_orchestration(echo, instance_id="done")
    await c.wait_for_orchestration_completion("done", timeout=30)
    for iid in ("live", "paused", "bystander-waiting"):
        await raises(dt.InvalidOperationError, c.purge_orchestration(iid), repr(iid), "purge")
        await raises(dt.InvalidOperationError, c.rewind_orchestration(iid), repr(iid), "rewind")
        await raises(dt.InvalidOperationError, c.restart_orchestration(iid), repr(iid), "restart")
    await raises(dt.InvalidOperationError, c.rewind_orchestration("done"), "COMPLETED")
    assert {"live", "paused", "done"} <= await hub.instance_ids()
    await c.terminate_orchestration("live")
    await c.terminate_orchestration("paused")
    for iid in ("live", "paused"):
        await c.wait_for_orchestration_completion(iid, timeout=30)
    await hub.verify()


async def test_duplicate_instance_ids(hub: Hub) -> None:
    c = hub.client
    never = dt.ReuseIdPolicy.error_if_exists()
    await c.schedule_new_orchestration(echo, input=1, instance_id="dup-done")
    first = await c.wait_for_orchestration_completion("dup-done", timeout=30)
    for iid, policy in (
        ("dup-done", never),
        ("bystander-waiting", never),
        ("bystander-waiting", None),
        ("bystander-done", never),
    ):
        error = await raises(
            dt.OrchestrationAlreadyExistsError,
            c.schedule_new_orchestration(echo, input=2, instance_id=iid, reuse_id_policy=policy),
            repr(iid),
        )
        assert isinstance(error, dt.OrchestrationAlreadyExistsError)
        assert error.instance_id == iid
    assert await c.get_orchestration_state("dup-done") == first
    # The default policy replaces a finished instance (documented).
    count("bad inputs tried")
    await c.schedule_new_orchestration(echo, input=3, instance_id="dup-done")
    again = await c.wait_for_orchestration_completion("dup-done", timeout=30)
    assert again.output == 3 and again.execution_id != first.execution_id
    await hub.verify()


# -- query, purge and wait arguments -----------------------------------------------------------
NAIVE = datetime(2024, 1, 1)

ARGUMENT_ERRORS: dict[str, tuple[Callable[[dt.AsyncTaskHubClient], Awaitable[Any]], type, str]] = {
    "page_size 0": (lambda c: c.query_orchestrations(page_size=0), ValueError, "page_size"),
    "page_size -1": (lambda c: c.query_orchestrations(page_size=-1), ValueError, "page_size"),
    "page_size 1001": (lambda c: c.query_orchestrations(page_size=1001), ValueError, "page_size"),
    "page_size 10000": (
        lambda c: c.query_orchestrations(page_size=10000),
        ValueError,
        "page_size",
    ),
    "naive created_from": (
        lambda c: c.query_orchestrations(created_from=NAIVE),
        ValueError,
        "created_from",
    ),
    "naive created_to": (
        lambda c: c.query_orchestrations(created_to=NAIVE),
        ValueError,
        "created_to",
    ),
    "status given as str": (
        lambda c: c.query_orchestrations(statuses=["RUNNING"]),  # type: ignore[list-item]
        TypeError,
        "OrchestrationStatus",
    ),
    "statuses given as one str": (
        lambda c: c.query_orchestrations(statuses="RUNNING"),  # type: ignore[arg-type]
        TypeError,
        "OrchestrationStatus",
    ),
    "garbage continuation token": (
        lambda c: c.query_orchestrations(continuation_token="garbage"),
        ValueError,
        "continuation token",
    ),
    "well-encoded but wrong token": (
        lambda c: c.query_orchestrations(continuation_token="W10="),
        ValueError,
        "continuation token",
    ),
    "count with naive created_from": (
        lambda c: c.count_orchestrations(created_from=NAIVE),
        ValueError,
        "created_from",
    ),
    "purge a live status": (
        lambda c: c.purge_orchestrations(statuses=[S.RUNNING]),
        ValueError,
        "RUNNING",
    ),
    "purge with naive created_before": (
        lambda c: c.purge_orchestrations(created_before=NAIVE),
        ValueError,
        "created_before",
    ),
    "purge with naive completed_before": (
        lambda c: c.purge_orchestrations(completed_before=NAIVE),
        ValueError,
        "completed_before",
    ),
    "negative wait timeout": (
        lambda c: c.wait_for_orchestration_completion("bystander-waiting", timeout=-1),
        ValueError,
        "timeout",
    ),
    "empty event name": (
        lambda c: c.raise_orchestration_event("bystander-waiting", ""),
        ValueError,
        "event name",
    ),
    "non-str event name": (
        lambda c: c.raise_orchestration_event("bystander-waiting", 7),  # type: ignore[arg-type]
        ValueError,
        "event name",
    ),
    "naive start_at": (
        lambda c: c.schedule_new_orchestration(echo, start_at=NAIVE),
        ValueError,
        "start_at",
    ),
    "non-str tag value": (
        lambda c: c.schedule_new_orchestration(echo, tags={"a": 1}),  # type: ignore[dict-item]
        TypeError,
        "tags",
    ),
    "orchestration that is neither str nor function": (
        lambda c: c.schedule_new_orchestration(123),  # type: ignore[arg-type]
        TypeError,
        "123",
    ),
}


async def test_bad_arguments_get_a_typed_error_naming_them(hub: Hub) -> None:
    before = await hub.instance_ids()
    for call, error, word in ARGUMENT_ERRORS.values():
        await raises(error, call(hub.client), word)
    assert await hub.instance_ids() == before
    await hub.verify()


UNCHECKED_ARGUMENTS: dict[str, tuple[Callable[[dt.AsyncTaskHubClient], Awaitable[Any]], str]] = {
    "page_size 1.5": (lambda c: c.query_orchestrations(page_size=1.5), "page_size"),  # type: ignore[arg-type]
    "page_size '5'": (lambda c: c.query_orchestrations(page_size="5"), "page_size"),  # type: ignore[arg-type]
    "name 42": (lambda c: c.query_orchestrations(name=42), "name"),  # type: ignore[arg-type]
    "NaN wait timeout": (
        lambda c: asyncio.wait_for(
            c.wait_for_orchestration_completion("bystander-waiting", timeout=math.nan), 0.5
        ),
        "timeout",
    ),
    "empty orchestration name": (lambda c: c.schedule_new_orchestration(""), "name"),
    "orchestration name with NUL": (lambda c: c.schedule_new_orchestration("a\x00b"), "name"),
    "orchestration name over 256 characters": (
        lambda c: c.schedule_new_orchestration("n" * 300),
        "name",
    ),
}


async def test_unchecked_arguments_get_a_typed_error_naming_them(hub: Hub) -> None:
    wrong = {}
    for label, (call, word) in UNCHECKED_ARGUMENTS.items():
        count("bad inputs tried")
        try:
            await call(hub.client)
            wrong[label] = "no error"
        except (ValueError, TypeError) as exc:
            if word not in str(exc) or isinstance(exc, dt.StoreError):
                wrong[label] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            wrong[label] = f"{type(exc).__name__}: {exc}"
    assert wrong == {}
    await hub.verify()


async def test_strange_filters_find_nothing_rather_than_fail(
    hub: Hub, request: pytest.FixtureRequest
) -> None:
    strange: tuple[dict[str, Any], ...] = (
        {"name": "a\x00b"},
        {"instance_id_prefix": "a\x00"},
        {"instance_id_prefix": "\ud800"},
        {"name": "\ud800"},
    )
    for filters in strange:
        count("bad inputs tried")
        page = await hub.client.query_orchestrations(**filters)
        assert page.states == [], filters
    await hub.verify()


async def test_pages_of_one_walk_every_instance(hub: Hub) -> None:
    seen: list[str] = []
    token = None
    while True:
        page = await hub.client.query_orchestrations(page_size=1, continuation_token=token)
        seen.extend(s.instance_id for s in page.states)
        token = page.continuation_token
        if token is None:
            break
    assert sorted(seen) == sorted(await hub.instance_ids())
    assert len(seen) == len(set(seen)) == 2


# -- instances whose start is scheduled later --------------------------------------------------
async def test_terminating_an_instance_before_its_scheduled_start(hub: Hub) -> None:
    c = hub.client
    later = datetime.now(UTC) + timedelta(hours=1)
    await c.schedule_new_orchestration(echo, input=1, instance_id="later", start_at=later)
    # The worker takes the oldest message first: once an instance scheduled after it has run
    # several episodes, the start of "later" has been seen and put back until its time.
    marker = await c.schedule_new_orchestration(via_activity, input="m")
    await c.wait_for_orchestration_completion(marker, timeout=30)
    count("bad inputs tried")
    await c.terminate_orchestration("later", output="never ran")
    state = await c.wait_for_orchestration_completion("later", timeout=30)
    assert (state.runtime_status, state.output) == (S.TERMINATED, "never ran")
    history = await c.get_orchestration_history("later")
    assert any(isinstance(e, h.ExecutionStarted) for e in history)
    await hub.verify()
