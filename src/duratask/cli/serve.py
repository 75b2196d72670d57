"""``duratask dashboard`` and ``duratask dev``: serve the dashboard, alone or beside a worker.

``dev MODULE:ATTR`` runs, in one process, the worker your module defines, an embedded SQLite
task hub (``--db``) and the dashboard. ATTR is a :class:`~duratask.TaskHubWorker` built on
that hub, or a function returning one; a function with a ``store`` parameter is called with
the hub's URL (``store="sqlite:///<db>"``), so the same module can run elsewhere on another
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import socket
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from duratask.cli.errors import usage_error
from duratask.cli.store import (
    STORE_ENV,
    build_store,
    connect,
    describe_store,
    mask_url,
    require_store_url,
    same_store,
)
from duratask.cli.worker import import_target
from duratask.client import AsyncTaskHubClient
from duratask.worker import TaskHubWorker

TOKEN_ENV = "DURATASK_DASHBOARD_TOKEN"
PUBLIC_URL_ENV = "DURATASK_DASHBOARD_PUBLIC_URL"
DEFAULT_DEV_DB = "./duratask-dev.db"


def _dashboard_module() -> ModuleType:
    try:
        return importlib.import_module("duratask.dashboard")
    except ImportError as exc:
        raise usage_error(str(exc)) from None


def _listen(dashboard: ModuleType, host: str, port: int) -> socket.socket:
    try:
        sock: socket.socket = dashboard.bind_socket(host, port)
    except OSError as exc:
        raise usage_error(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _url(host: str, sock: socket.socket) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{sock.getsockname()[1]}"


@click.command("dashboard")
@click.option("--store", envvar=STORE_ENV, help=f"Task hub store URL (or set {STORE_ENV}).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8233, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"Require this token (Bearer header for the API, login for pages; or set {TOKEN_ENV}). "
    "Needed to listen on anything but loopback.",
)
@click.option(
    "--public-url",
    envvar=PUBLIC_URL_ENV,
    metavar="URL",
    help="The URL the dashboard is reached at, e.g. https://duratask.example.com (or set "
    f"{PUBLIC_URL_ENV}). Absolute URLs and Location headers use it; with https, cookies are "
    "Secure. Default: the address the server listens on (never the request's Host header).",
)
@click.option(
    "--session-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=12.0,
    show_default=True,
    help="With --token: how long a login lasts.",
)
def dashboard(
    store: str | None,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
    public_url: str | None,
    session_hours: float,
) -> None:
    """Serve the web dashboard and the REST management API of a task hub."""
    module = _dashboard_module()
    token = token or None
    public_url = public_url or None
    try:
        module.check_bind(host, token)
        module.check_public_url(public_url)
    except module.DashboardConfigError as exc:
        raise usage_error(str(exc)) from None
    url = require_store_url(store)
    sock = _listen(module, host, port)

    async def run() -> None:
        async with connect(url) as client:
            allowed = None if token else module.loopback_hosts(host)
            app = module.create_app(
                client,
                read_only=read_only,
                token=token,
                allowed_hosts=allowed,
                public_url=public_url,
                session_lifetime=session_hours * 3600,
            )
            server = module.build_server(app, host=host, port=port)
            mode = " (read-only)" if read_only else ""
            click.echo(
                f"duratask dashboard{mode} for {mask_url(url)} on {_url(host, sock)} "
                "(Ctrl-C to stop)",
                err=True,
            )
            await server.serve(sockets=[sock])

    try:
        asyncio.run(run())
    finally:
        sock.close()


# -- dev ----------------------------------------------------------------------------------


def _accepts_store(factory: Any) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "store" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in parameters
    )


def load_worker(target: str, store_url: str, db: Path) -> TaskHubWorker:
    """The worker ``target`` names, checked to run on the dev hub at ``db``."""
    value = import_target(target)
    if isinstance(value, TaskHubWorker):
        worker = value
    elif callable(value):
        try:
            made = value(store=store_url) if _accepts_store(value) else value()
        except Exception as exc:
            click.echo(traceback.format_exc(), err=True)
            raise usage_error(f"{target}() failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(made, TaskHubWorker):
            raise usage_error(
                f"{target}() returned {type(made).__qualname__}, not a duratask TaskHubWorker"
            )
        worker = made
    else:
        raise usage_error(
            f"{target} is a {type(value).__qualname__}: expected a TaskHubWorker "
            "or a function returning one"
        )
    if not same_store(worker.store, build_store(store_url)):
        raise usage_error(
            f"{target} runs on the {describe_store(worker.store)}, but 'duratask dev' runs on "
            f"the SQLite hub {str(db)!r}. Give it a factory with a store parameter "
            "(def make_worker(store: str = 'sqlite:///hub.db') -> TaskHubWorker), which dev "
            f"calls with {store_url!r}, or pass --db with the worker's own SQLite file."
        )
    return worker


async def run_dev(
    worker: TaskHubWorker, store_url: str, sock: socket.socket, dashboard: ModuleType
) -> None:
    """Run the worker and the dashboard until Ctrl-C (or until one of them stops)."""
    client = AsyncTaskHubClient(store_url)
    host = str(sock.getsockname()[0])
    app = dashboard.create_app(client, allowed_hosts=dashboard.loopback_hosts(host))
    server = dashboard.build_server(app, host=host, port=int(sock.getsockname()[1]))
    worker_task = asyncio.create_task(worker.run(), name="duratask-dev-worker")
    server_task = asyncio.create_task(server.serve(sockets=[sock]), name="duratask-dev-dashboard")
    try:
        await asyncio.wait({worker_task, server_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        await worker.shutdown()
        results = await asyncio.gather(worker_task, server_task, return_exceptions=True)
        await client.close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


@click.command("dev")
@click.argument("target", metavar="MODULE:ATTR")
@click.option(
    "--db",
    default=DEFAULT_DEV_DB,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite task hub file (created if missing).",
)
@click.option(
    "--port", default=8233, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
def dev(target: str, db: Path, port: int) -> None:
    """Run your worker, a SQLite task hub and the dashboard in one process.

    MODULE:ATTR names a TaskHubWorker on the --db hub, or a function returning one (called
    with store="sqlite:///<db>" if it has a store parameter). Ctrl-C stops everything.
    """
    module = _dashboard_module()
    if not db.parent.is_dir():
        raise usage_error(f"--db: the directory {str(db.parent)!r} does not exist")
    store_url = f"sqlite:///{db.resolve()}"
    worker = load_worker(target, store_url, db)
    sock = _listen(module, "127.0.0.1", port)
    click.echo(
        f"duratask dev: worker {target} on the SQLite hub {str(db)!r}; dashboard on "
        f"{_url('127.0.0.1', sock)} (Ctrl-C to stop)",
        err=True,
    )
    try:
        asyncio.run(run_dev(worker, store_url, sock, module))
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    click.echo("duratask dev: stopped", err=True)


__all__ = ["dashboard", "dev", "load_worker", "run_dev"]
