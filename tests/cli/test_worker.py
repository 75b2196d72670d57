"""``duratask worker MODULE:ATTR``: a real worker process driven through the CLI, and the
errors of finding the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import duratask as dt
from duratask.cli.worker import _check_store
from tests.cli.conftest import Cli, one_line_error
from tests.conformance.e2e_hub import wait_until

APP = """
import threading
from datetime import timedelta
from pathlib import Path

import duratask as dt

HUB = {hub!r}
RELEASE = threading.Event()


def twice(ctx: dt.ActivityContext, x: int) -> int:
    return 2 * x


def block(ctx: dt.ActivityContext, marker: str) -> None:
    Path(marker).write_text("started")
    RELEASE.wait()  # never set: only a forced stop ends this activity


async def double(ctx: dt.OrchestrationContext, x: int) -> int:
    return await ctx.call_activity(twice, input=x)


async def stuck(ctx: dt.OrchestrationContext, marker: str) -> None:
    await ctx.call_activity(block, input=marker)


def make_worker(grace: float = 30.0) -> dt.TaskHubWorker:
    made = dt.TaskHubWorker(HUB, shutdown_grace=timedelta(seconds=grace))
    made.add_orchestration(double)
    made.add_orchestration(stuck)
    made.add_activity(twice)
    made.add_activity(block)
    return made


def quick_to_stop() -> dt.TaskHubWorker:
    return make_worker(grace=1.0)


worker = make_worker()
not_a_worker = 42


def not_a_factory() -> str:
    return "nope"
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A worker module in tmp_path: (module name, store URL). sys.path is restored after."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP.format(hub=url)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    yield name, url
    sys.modules.pop(name, None)


def _spawn(tmp_path: Path, target: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DURATASK_STORE"}
    with (tmp_path / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "duratask.cli", "worker", target, *extra],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def test_worker_process_runs_instances_and_stops_on_sigint(
    tmp_path: Path, app_module: tuple[str, str]
) -> None:
    name, url = app_module
    process = _spawn(tmp_path, f"{name}:worker", "--store", url)
    try:
        cli = Cli(url)
        iid = cli.start("double", 21, "--id", "d-1")
        assert cli.wait(iid)["output"] == 42
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process)
    log = (tmp_path / "worker.log").read_text()
    assert "orchestrations: double, stuck" in log
    assert "Worker stopped." in log
    assert "Traceback" not in log


def test_a_second_signal_forces_the_worker_to_stop(
    tmp_path: Path, app_module: tuple[str, str]
) -> None:
    name, url = app_module
    process = _spawn(tmp_path, f"{name}:make_worker")  # a factory, not a worker object
    try:
        marker = tmp_path / "blocked"
        Cli(url).start("stuck", str(marker))

        async def blocked() -> bool:
            return marker.exists()

        asyncio.run(wait_until(blocked, timeout=30, what="the blocking activity to start"))
        process.send_signal(signal.SIGTERM)  # graceful: waits for the activity...
        process.send_signal(signal.SIGINT)  # ...until told again
        assert process.wait(timeout=30) == 130
    finally:
        _stop(process)
    log = (tmp_path / "worker.log").read_text()
    assert "Stopping: finishing in-flight work" in log
    assert "Worker forced to stop." in log


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "expected MODULE:ATTR (e.g. myapp.tasks:worker), got 'no_colon'"),
        ("absent_module_xyz:worker", "cannot import 'absent_module_xyz': no module named"),
        ("{app}:missing", "module '{app}' has no attribute 'missing'"),
        ("{app}:not_a_worker", "{app}:not_a_worker is a int, not a TaskHubWorker"),
        ("{app}:not_a_factory", "{app}:not_a_factory() returned a str, not a TaskHubWorker"),
    ],
)
def test_worker_target_errors(app_module: tuple[str, str], target: str, message: str) -> None:
    name, url = app_module
    result = Cli(url).run("worker", target.format(app=name), code=2)
    assert message.format(app=name) in one_line_error(result)


def test_worker_refuses_another_store(tmp_path: Path, app_module: tuple[str, str]) -> None:
    name, url = app_module
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = Cli(url).run("worker", f"{name}:worker", "--store", other, code=2)
    line = one_line_error(result)
    assert f"the worker {name}:worker runs on SQLite '{tmp_path / 'hub.db'}'" in line
    assert f"but --store names {other}" in line


def test_a_store_from_the_environment_that_differs_only_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = dt.TaskHubWorker(f"sqlite:///{tmp_path / 'a.db'}")
    _check_store(worker, "app:worker", f"sqlite:///{tmp_path / 'b.db'}", explicit=False)
    assert "Warning: the worker app:worker runs on SQLite" in capsys.readouterr().err
    same = f"sqlite:///{tmp_path / '.' / 'a.db'}"
    _check_store(worker, "app:worker", same, explicit=True)  # the same file: no complaint
    assert capsys.readouterr().err == ""
    memory = dt.TaskHubWorker("memory://cli-check-store")
    _check_store(memory, "app:worker", "memory://cli-check-store", explicit=True)
    with pytest.raises(click.ClickException) as caught:
        _check_store(memory, "app:worker", "memory://elsewhere", explicit=True)
    assert caught.value.exit_code == 2
    assert "runs on Memory store 'cli-check-store', but --store names memory://elsewhere" in (
        caught.value.message
    )


def test_one_signal_stops_a_worker_with_a_hung_activity_within_its_grace(
    tmp_path: Path, app_module: tuple[str, str]
) -> None:
    name, url = app_module
    process = _spawn(tmp_path, f"{name}:quick_to_stop")
    try:
        marker = tmp_path / "blocked"
        Cli(url).start("stuck", str(marker))

        async def blocked() -> bool:
            return marker.exists()

        asyncio.run(wait_until(blocked, timeout=30, what="the blocking activity to start"))
        process.send_signal(signal.SIGTERM)
        # The grace is 1 s; the hung activity's thread must not keep the process alive.
        assert process.wait(timeout=15) == 0
    finally:
        _stop(process)
    log = (tmp_path / "worker.log").read_text()
    assert "Worker stopped." in log
    assert "Traceback" not in log
    # What it held was handed back, as a delivery that does not count.
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        rows = conn.execute("SELECT lock_token, dequeue_count FROM activities").fetchall()
    assert rows == [(None, 0)]
