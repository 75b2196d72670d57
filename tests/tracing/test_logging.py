"""Log records carry stable event names and ids; the orchestration logger is replay-safe."""

from __future__ import annotations

import importlib.util
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask.backends.base import ActivityRequest, ActivityWorkItem
from tests.conformance.e2e_hub import TaskHub

ROOT = Path(__file__).resolve().parents[2]


async def greet(ctx: dt.ActivityContext, name: str) -> str:
    return f"hello {name}"


async def refuse(ctx: dt.ActivityContext, name: str) -> str:
    raise PermissionError(f"{name} may not pass")


async def greeting(ctx: dt.OrchestrationContext, name: str) -> str:
    return str(await ctx.call_activity(greet, input=name))


async def gatekeeper(ctx: dt.OrchestrationContext, name: str) -> str:
    return str(await ctx.call_activity(refuse, input=name))


async def chatty(ctx: dt.OrchestrationContext, count: int) -> int:
    for step in range(count):
        ctx.logger.info("step %d", step)
        await ctx.call_activity(greet, input=str(step))
    ctx.logger.info("done")
    return count


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's attributes, ``extra`` fields included."""
    return record.__dict__


def _events(caplog: pytest.LogCaptureFixture) -> dict[str, list[logging.LogRecord]]:
    found: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        event = getattr(record, "event", None)
        if event is not None:
            found.setdefault(event, []).append(record)
    return found


async def test_lifecycle_records_carry_event_names_and_ids(
    hub: TaskHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="duratask")
    hub.register(greeting, gatekeeper, activities=(greet, refuse))
    await hub.start()
    ok = await hub.run(greeting, "ann", instance_id="log-ok")
    bad = await hub.run(gatekeeper, "bob", instance_id="log-bad")
    await hub.stop()
    assert ok.runtime_status is dt.OrchestrationStatus.COMPLETED
    assert bad.runtime_status is dt.OrchestrationStatus.FAILED

    events = _events(caplog)
    assert [_fields(r)["instance_id"] for r in events["duratask.orchestration.scheduled"]] == [
        "log-ok",
        "log-bad",
    ]
    assert {_fields(r)["instance_id"] for r in events["duratask.orchestration.started"]} == {
        "log-ok",
        "log-bad",
    }
    (completed,) = events["duratask.orchestration.completed"]
    assert _fields(completed)["instance_id"] == "log-ok"
    assert _fields(completed)["orchestration_name"] == "greeting"
    assert completed.levelno == logging.INFO
    (failed,) = events["duratask.orchestration.failed"]
    assert _fields(failed)["instance_id"] == "log-bad"
    assert failed.levelno == logging.WARNING
    assert "PermissionError" in failed.getMessage()
    (activity_ok,) = events["duratask.activity.completed"]
    assert _fields(activity_ok)["activity_name"] == "greet" and _fields(activity_ok)["task_id"] == 0
    (activity_bad,) = events["duratask.activity.failed"]
    assert _fields(activity_bad)["instance_id"] == "log-bad"
    assert "bob may not pass" in activity_bad.getMessage()
    worker_id = hub.worker.worker_id
    assert [_fields(r)["worker_id"] for r in events["duratask.worker.started"]] == [worker_id]
    assert [_fields(r)["worker_id"] for r in events["duratask.worker.stopped"]] == [worker_id]


async def test_a_lost_activity_lease_is_logged(
    hub: TaskHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="duratask")
    hub.register(greeting, activities=(greet,))
    await hub.start()
    await hub.run(greeting, "warm-up")
    stale = ActivityWorkItem(
        10_000, ActivityRequest("nobody", "e", 7, "greet", None, '"x"'), "lost", datetime.now(UTC)
    )
    await hub.worker._process_activity(stale)

    (lost,) = _events(caplog)["duratask.lease.lost"]
    assert lost.levelno == logging.WARNING
    assert _fields(lost)["instance_id"] == "nobody"
    assert _fields(lost)["work"] == "activity" and _fields(lost)["task_id"] == 7


async def test_the_orchestration_logger_is_silent_while_replaying(
    hub_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="duratask.orchestration")
    hub = TaskHub(hub_url, orchestration_cache_size=0)  # every episode replays the history
    hub.register(chatty, activities=(greet,))
    await hub.start()
    try:
        state = await hub.run(chatty, 3, instance_id="chatty-1")
    finally:
        await hub.stop()
    assert state.output == 3

    records = [r for r in caplog.records if r.name == "duratask.orchestration"]
    assert [r.getMessage() for r in records] == ["step 0", "step 1", "step 2", "done"]
    assert {_fields(r)["instance_id"] for r in records} == {"chatty-1"}


async def test_the_orchestration_logger_names_the_orchestration(
    hub: TaskHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="duratask.orchestration")
    hub.register(chatty, activities=(greet,))
    await hub.start()
    await hub.run(chatty, 1)
    records = [r for r in caplog.records if r.name == "duratask.orchestration"]
    assert records
    assert {getattr(r, "orchestration_name", None) for r in records} == {"chatty"}


_NAME_LITERAL = re.compile(r'"(duratask\.[a-z_]+\.[a-z_]+)"')
_DOCUMENTED = re.compile(r"^\| `(duratask\.[a-z_.]+)` \|", re.MULTILINE)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_every_event_name_in_the_code_is_documented() -> None:
    used = {
        name
        for path in (ROOT / "src" / "duratask").rglob("*.py")
        for name in _NAME_LITERAL.findall(path.read_text())
        if not _is_module(name)
    }
    documented = set(_DOCUMENTED.findall((ROOT / "docs" / "observability.md").read_text()))
    assert used, "the source names its log events"
    assert used <= documented, f"undocumented log events: {sorted(used - documented)}"
