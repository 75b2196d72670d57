"""Fixtures for the command-line tests: a SQLite task hub, a worker on it, and a runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import duratask as dt
from duratask.cli.main import main
from tests.cli import app
from tests.conformance.e2e_hub import wait_until


class Cli:
    """Runs ``duratask`` in process against one task hub (given through DURATASK_STORE)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def invoke(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        environment: dict[str, str | None] = {"DURATASK_STORE": self.url, "COLUMNS": "200"}
        environment.update(env or {})
        return CliRunner(env=environment).invoke(main, list(args), input=input)

    def run(self, *args: str, code: int = 0, input: str | None = None) -> Result:
        """Invoke and check the exit code (and that no exception escaped)."""
        result = self.invoke(*args, input=input)
        assert result.exit_code == code, (
            f"duratask {' '.join(args)} exited {result.exit_code}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
        )
        if isinstance(result.exception, BaseException):
            assert isinstance(result.exception, SystemExit), repr(result.exception)
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        """Invoke with ``--output json`` and parse stdout."""
        return json.loads(self.run(*args, "--output", "json", code=code).stdout)

    def start(self, name: str, input: Any = None, *extra: str) -> str:
        args = ["start", name, *extra]
        if input is not None:
            args += ["--input", json.dumps(input)]
        return self.run(*args).stdout.strip()

    def wait(self, instance_id: str, code: int = 0) -> dict[str, Any]:
        """Wait (through the CLI) for the instance to finish; its JSON state."""
        state: dict[str, Any] = self.json(
            "status", instance_id, "--wait", "--timeout", "30", code=code
        )
        return state


def wait_for_status(url: str, instance_id: str, status: dt.OrchestrationStatus) -> None:
    """Wait (with a deadline) until the instance has ``status``."""

    async def wait() -> None:
        async with dt.AsyncTaskHubClient(url) as client:

            async def reached() -> bool:
                state = await client.get_orchestration_state(instance_id)
                return state is not None and state.runtime_status is status

            await wait_until(reached, what=f"{instance_id} to be {status.value}")

    asyncio.run(wait())


def one_line_error(result: Result) -> str:
    """The single ``Error: ...`` line a failed command printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def hub_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def worker(hub_url: str) -> Iterator[dt.TaskHubWorker]:
    app.FLAKY["fail"] = True
    task_hub_worker = app.make_worker(hub_url)
    task_hub_worker.start()
    yield task_hub_worker
    task_hub_worker.stop(timeout=30)


@pytest.fixture
def cli(hub_url: str, worker: dt.TaskHubWorker) -> Cli:
    """A CLI on a hub with a running worker."""
    return Cli(hub_url)


@pytest.fixture
def idle_cli(hub_url: str) -> Cli:
    """A CLI on a created hub that no worker processes (instances stay PENDING)."""
    created = Cli(hub_url)
    created.run("hub", "create")
    return created
