"""Every example of the documentation runs, and gives what its page says it gives.

The examples are the files under docs/examples/, included into the pages by
pymdownx.snippets; each has a ``main()``. Those that take a ``store`` run here on a fresh
SQLite task hub (the stores example also on PostgreSQL); the others bring a test hub.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from duratask._engine.replay_context import NON_DETERMINISM_CAUSES

from .conftest import DOCS, EXAMPLES, load_file

POSTGRES_URL = os.environ.get(
    "DURATASK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def run(example: str, **kwargs: Any) -> Any:
    return load_file(EXAMPLES / f"{example}.py").main(**kwargs)


@pytest.fixture
def sqlite_hub(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


def test_quickstart(sqlite_hub: str) -> None:
    assert run("quickstart", store=sqlite_hub) == {
        "receipt": "charged 9.50 for order 42",
        "shipped": ["shipped tea", "shipped cups"],
    }


def test_determinism(sqlite_hub: str) -> None:
    # main() itself asserts that replaying the history reproduces the output.
    output = run("determinism", store=sqlite_hub)
    assert uuid.UUID(output["order_id"])
    assert 10 <= output["price"] <= 11
    assert output["reservation"].startswith("reservation of sku-7 at ")
    assert datetime.fromisoformat(output["pay_by"]) - datetime.now().astimezone() > timedelta(
        hours=23
    )


def test_history_and_replay(sqlite_hub: str) -> None:
    episode = ["ORCHESTRATOR_STARTED", "TASK_COMPLETED", "TASK_SCHEDULED", "ORCHESTRATOR_COMPLETED"]
    assert run("history_and_replay", store=sqlite_hub) == {
        "events": [
            *["ORCHESTRATOR_STARTED", "EXECUTION_STARTED", "TASK_SCHEDULED"],
            "ORCHESTRATOR_COMPLETED",
            *episode,
            *episode,
            *["ORCHESTRATOR_STARTED", "TASK_COMPLETED", "EXECUTION_COMPLETED"],
            "ORCHESTRATOR_COMPLETED",
        ],
        "with cache": ["running"],
        "without cache": ["running", "replaying", "replaying", "replaying"],
    }


def test_recovery(sqlite_hub: str) -> None:
    assert run("recovery", store=sqlite_hub) == {
        "recovered": "charged order-9 (delivery 2)",
        "poisoned": "gave up: PoisonWorkError",
    }


def test_error_handling() -> None:
    assert run("error_handling") == {
        "hotel attempts": 3,
        "status": "declined",
        "undone": ["cancelled hotel H-1", "cancelled flight F-1"],
    }


def test_eternal(sqlite_hub: str) -> None:
    assert run("eternal", store=sqlite_hub) == {
        "output": ["A", "B", "C", "D"],
        "last history": [
            "EVENT_RAISED",
            "EXECUTION_COMPLETED",
            "EXECUTION_STARTED",
            "ORCHESTRATOR_COMPLETED",
            "ORCHESTRATOR_STARTED",
        ],
    }


def test_sub_orchestrations(sqlite_hub: str) -> None:
    assert run("sub_orchestrations", store=sqlite_hub) == {
        "output": {
            "lyon": "2 items packed in lyon",
            "oslo": "failed: activity 'pack' failed: RuntimeError: "
            "the Oslo warehouse is closed today",
        },
        "children": {"order-5:lyon": "COMPLETED", "order-5:oslo": "FAILED"},
        "purged": 3,
    }


def test_versioning(sqlite_hub: str) -> None:
    assert run("versioning", store=sqlite_hub) == {
        "order-1": "shipped order-1 (version 1)",
        "order-2": "shipped order-2 (version 2)",
        "replaying order-1 with version 2": "orchestration 'approve_order': at sequence #0 "
        "history has activity 'send_mail', but the code now calls activity 'check_fraud'. "
        + NON_DETERMINISM_CAUSES,
    }


def test_task_queues(sqlite_hub: str) -> None:
    assert run("task_queues", store=sqlite_hub) == {
        "output": "published: scene-1 drawn on a GPU worker",
        "task_queue": "default",
    }


def test_payloads(sqlite_hub: str) -> None:
    result = run("payloads", store=sqlite_hub)
    invoice = result["invoice"]
    assert (invoice.order_id, invoice.total_cents, invoice.express) == ("o-1", 2400, True)
    assert result["refused"] == "2011 > 1024 bytes"
    # Stored scrambled, yet still JSON: a string holding the base64 of the payload.
    stored = json.loads(result["stored input"])
    assert "o-1" not in result["stored input"]
    assert json.loads(base64.b64decode(stored)) == {
        "order_id": "o-1",
        "quantities": {"tea": 2, "cups": 4},
        "shipping": "express",
        "deliver_by": "2030-01-31",
    }


@pytest.fixture
def postgres_hub() -> Iterator[str]:
    """A fresh schema on the test server; skipped without one, failed under
    ``DURATASK_REQUIRE_POSTGRES=1`` (as in CI)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        why = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}"
        if os.environ.get("DURATASK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why}; DURATASK_REQUIRE_POSTGRES=1 forbids skipping", pytrace=False)
        pytest.skip(why)
    schema = f"docs_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_stores_on_sqlite(sqlite_hub: str) -> None:
    assert run("stores", store=sqlite_hub) == 385


def test_stores_on_postgres(postgres_hub: str) -> None:
    assert run("stores", store=postgres_hub) == 385


def test_stores_reads_the_store_from_the_environment(
    sqlite_hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURATASK_STORE", sqlite_hub)
    assert load_file(EXAMPLES / "stores.py").store_url() == sqlite_hub


def test_operating(sqlite_hub: str) -> None:
    assert run("operating", store=sqlite_hub) == {
        "failed": ["bill-0", "bill-1", "bill-2"],
        "after rewind": ["invoice sent for o-0", "invoice sent for o-1", "invoice sent for o-2"],
        "purged": 3,
    }


def test_order_workflow() -> None:
    assert run("order_workflow") == {
        "order-1": "completed",
        "order-2": "cancelled: not approved in time",
        "order-3": "refunded",
    }


TESTED = {
    "quickstart",
    "determinism",
    "history_and_replay",
    "recovery",
    "error_handling",
    "eternal",
    "sub_orchestrations",
    "versioning",
    "task_queues",
    "payloads",
    "stores",
    "operating",
    "order_workflow",
    "schedules",
}
_SNIPPET = re.compile(r'--8<--\s+"([^":]+)')


def test_every_example_is_tested_and_shown_in_a_page() -> None:
    examples = {path.stem for path in EXAMPLES.glob("*.py")}
    assert examples == TESTED, "each example under docs/examples needs a test here"
    pages = [page.read_text() for page in DOCS.rglob("*.md")]
    shown = {Path(name).stem for text in pages for name in _SNIPPET.findall(text)}
    assert examples <= shown, f"examples no page includes: {sorted(examples - shown)}"


def test_schedules() -> None:
    # Paris changes to summer time on 29 March: 06:00 there is 05:00Z before, 04:00Z after.
    assert run("schedules") == {
        "runs": 5,
        "recent": [
            ("nightly-report@2026-03-31T04:00:00Z", "COMPLETED"),
            ("nightly-report@2026-03-30T04:00:00Z", "COMPLETED"),
            ("nightly-report@2026-03-27T05:00:00Z", "COMPLETED"),
        ],
        "next": ["2026-04-01T04:00:00+00:00", "2026-04-02T04:00:00+00:00"],
    }
