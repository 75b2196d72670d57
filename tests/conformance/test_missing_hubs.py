"""Read-only commands on a task hub that is not there (a mistyped SQLite path, PostgreSQL
``?schema=`` or Azure hub name) say that no task hub is there, exit 5 and leave nothing
behind, on every store that can be missing. They used to create the PostgreSQL schema and
print "No matching instances"."""

from __future__ import annotations

import asyncio

import pytest
from click.testing import CliRunner

from duratask.backends import open_store
from duratask.cli.main import main
from duratask.errors import TaskHubNotFoundError

pytestmark = pytest.mark.timeout(90)

READ_ONLY = (
    ["list"],
    ["status", "order-1"],
    ["history", "order-1"],
    ["workers"],
    ["hub", "info"],
    ["dashboard", "--port", "0"],
)


async def _still_missing(url: str) -> None:
    store = open_store(url)
    try:
        with pytest.raises(TaskHubNotFoundError):
            await store.open(create=False)
    finally:
        await store.close()


async def test_read_only_commands_say_no_task_hub_is_there_and_create_none(
    store_url: str,
) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("an in-memory hub always exists")
    runner = CliRunner(env={"DURATASK_STORE": store_url, "COLUMNS": "200"})
    for args in READ_ONLY:
        result = await asyncio.to_thread(runner.invoke, main, args)
        assert result.exit_code == 5, (args, result.output)
        error = result.stderr.strip()
        assert error.startswith("Error: no "), (args, error)
        assert "task hub" in error and "create it with 'duratask hub create'" in error, error
        assert "No matching instances" not in result.output
        await _still_missing(store_url)
    if store_url.startswith("postgresql:"):
        import psycopg

        from .conftest import POSTGRES_URL

        schema = store_url.rsplit("schema=", 1)[1]
        with psycopg.connect(POSTGRES_URL) as conn:
            found = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            ).fetchone()
        assert found is None, f"schema {schema} was created by a read-only command"
