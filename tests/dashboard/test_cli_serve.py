"""The ``dashboard`` and ``dev`` commands: refusals, loading the worker, and a real dev run."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import duratask as dt
from duratask.cli.main import main
from duratask.cli.serve import load_worker
from duratask.dashboard import check_bind
from duratask.dashboard.server import DashboardConfigError, is_loopback
from tests.conformance.e2e_hub import wait_until

APP_MODULE = """
import duratask as dt

async def greet(ctx: dt.OrchestrationContext, name: str) -> str:
    other = await ctx.wait_for_external_event("other")
    return f"hello {name} and {other}"

def make_worker(store: str = "sqlite:///elsewhere.db") -> dt.TaskHubWorker:
    worker = dt.TaskHubWorker(store)
    worker.add_orchestration(greet)
    return worker

def make_fixed() -> dt.TaskHubWorker:
    return dt.TaskHubWorker("sqlite:///elsewhere.db")

def not_a_worker() -> int:
    return 42

value = 7
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = f"devapp_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / module


def test_loopback_needs_no_token_anything_else_does() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host), host
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        assert not is_loopback(host), host
        with pytest.raises(DashboardConfigError, match="without a token"):
            check_bind(host, None)
        check_bind(host, "a-token")


def test_the_dashboard_command_refuses_an_exposed_host_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["dashboard", "--store", "memory://x", "--host", "0.0.0.0"],
        env={"DURATASK_DASHBOARD_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "refusing to serve the dashboard on '0.0.0.0' without a token" in result.output
    missing = CliRunner().invoke(
        main, ["dashboard", "--store", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0"]
    )
    assert missing.exit_code == 5 and "no SQLite task hub" in missing.output


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main, ["dashboard", "--store", "memory://x", "--port", str(port)]
        )
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_without_the_extra_the_import_says_what_to_install() -> None:
    blocked = "import sys; sys.modules['starlette'] = None; "
    direct = subprocess.run(
        [sys.executable, "-c", blocked + "import duratask.dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert direct.returncode != 0
    assert "ImportError" in direct.stderr
    assert "pip install 'duratask[dashboard]'" in direct.stderr
    command = subprocess.run(
        [
            sys.executable,
            "-c",
            blocked
            + "from duratask.cli.main import main; main(['dashboard', '--store', 'memory://x'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 2
    assert "pip install 'duratask[dashboard]'" in command.stderr
    assert "Traceback" not in command.stderr


def test_dev_loads_a_factory_with_the_dev_store(app_dir: Path) -> None:
    db = app_dir.parent / "dev.db"
    url = f"sqlite:///{db}"
    worker = load_worker(f"{app_dir.name}:make_worker", url, db)
    assert isinstance(worker, dt.TaskHubWorker)
    assert Path(worker.store.path).resolve() == db.resolve()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "target, words",
    [
        ("{m}:make_fixed", "runs on the SQLite"),
        ("{m}:not_a_worker", "returned int, not a duratask TaskHubWorker"),
        ("{m}:value", "expected a TaskHubWorker or a function returning one"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("no_such_module_here:worker", "no module named 'no_such_module_here'"),
        ("{m}", "expected MODULE:ATTR"),
    ],
)
def test_dev_explains_a_target_it_cannot_use(app_dir: Path, target: str, words: str) -> None:
    db = app_dir.parent / "dev.db"
    with pytest.raises(Exception, match=re.escape(words)) as caught:
        load_worker(target.format(m=app_dir.name), f"sqlite:///{db}", db)
    assert getattr(caught.value, "exit_code", None) == 2


def test_dev_accepts_a_worker_already_on_the_dev_hub(app_dir: Path) -> None:
    db = app_dir.parent / "own.db"
    (app_dir.parent / f"{app_dir.name}_own.py").write_text(
        f"import duratask as dt\nworker = dt.TaskHubWorker({f'sqlite:///{db}'!r})\n"
    )
    worker = load_worker(f"{app_dir.name}_own:worker", f"sqlite:///{db}", db)
    assert isinstance(worker, dt.TaskHubWorker)


async def test_dev_runs_worker_hub_and_dashboard_until_ctrl_c(app_dir: Path) -> None:
    db = app_dir.parent / "dev.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duratask.cli",
        "dev",
        f"{app_dir.name}:make_worker",
        "--db",
        str(db),
        "--port",
        "0",
        cwd=str(app_dir.parent),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stderr is not None
        banner = await asyncio.wait_for(process.stderr.readline(), timeout=30)
        match = re.search(rb"dashboard on (http://127\.0\.0\.1:\d+)", banner)
        assert match is not None, banner
        base = match.group(1).decode()
        async with httpx.AsyncClient(base_url=base, timeout=10) as web:

            async def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await web.get("/api/counts")).status_code == 200
                return False

            await wait_until(up, what="the dev dashboard to answer")
            started = await web.post("/api/orchestrations/greet?instance_id=g1", json="ann")
            assert started.status_code == 202
            sent = await web.post("/api/instances/g1/raiseEvent/other", json="bo")
            assert sent.status_code == 202

            async def done() -> bool:
                return (await web.get("/api/instances/g1")).status_code == 200

            await wait_until(done, what="the orchestration to finish")
            assert (await web.get("/api/instances/g1")).json()["output"] == "hello ann and bo"
            page = await web.get("/instances/g1")
            assert page.status_code == 200 and "hello ann and bo" in page.text
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=30)
        rest = await process.stderr.read()
        assert process.returncode == 0, rest.decode()
        assert b"duratask dev: stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The hub is a real SQLite file the next run (or another client) can read.
    async with dt.AsyncTaskHubClient(f"sqlite:///{db}") as client:
        state = await client.get_orchestration_state("g1")
        assert state is not None and state.output == "hello ann and bo"
