"""``duratask worker MODULE:ATTR``: run a worker defined in the application's code.

ATTR names a :class:`~duratask.TaskHubWorker` (or a function of no arguments returning one)
in MODULE, imported with ``--app-dir`` (default: the current directory) at the front of
``sys.path``. The worker runs until SIGINT or SIGTERM, then stops fetching work and lets
in-flight work finish; a second signal stops it at once (exit code 130).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from duratask.cli.errors import ExitCode, usage_error
from duratask.cli.options import store_option
from duratask.cli.store import build_store, describe_store, mask_url, same_store
from duratask.worker import TaskHubWorker

_LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command("worker")
@click.argument("target", metavar="MODULE:ATTR")
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory put first on sys.path before importing MODULE.",
)
@click.option("--log-level", type=click.Choice(_LOG_LEVELS), default="info", show_default=True)
@store_option
@click.pass_context
def worker(
    ctx: click.Context, target: str, app_dir: str, log_level: str, store: str | None
) -> None:
    """Run the TaskHubWorker at MODULE:ATTR until Ctrl+C or SIGTERM.

    ATTR may also name a function of no arguments that returns the worker. The worker uses
    its own store; --store (or DURATASK_STORE), if given, must name the same task hub.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    task_hub_worker = load_worker(target, app_dir)
    if store is not None:
        explicit = ctx.get_parameter_source("store") is ParameterSource.COMMANDLINE
        _check_store(task_hub_worker, target, store, explicit=explicit)
    registry = task_hub_worker.registry
    click.echo(
        f"duratask worker {task_hub_worker.worker_id} on {describe_store(task_hub_worker.store)}"
        f"\n  orchestrations: {', '.join(registry.orchestration_names) or '(none)'}"
        f"\n  activities: {', '.join(registry.activity_names) or '(none)'}"
        "\nPress Ctrl+C to stop.",
        err=True,
    )
    if not asyncio.run(_serve(task_hub_worker)):
        click.echo("Worker forced to stop.", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Activity threads still running would keep a normal exit waiting for them.
        os._exit(ExitCode.INTERRUPTED)
    click.echo("Worker stopped.", err=True)


def load_worker(target: str, app_dir: str = ".") -> TaskHubWorker:
    """Import MODULE and return the worker ATTR names (calling ATTR if it is a factory)."""
    found = import_target(target, app_dir)
    if isinstance(found, TaskHubWorker):
        return found
    if not callable(found):
        raise usage_error(
            f"{target} is a {type(found).__name__}, not a TaskHubWorker or a function returning one"
        )
    made = found()
    if not isinstance(made, TaskHubWorker):
        raise usage_error(f"{target}() returned a {type(made).__name__}, not a TaskHubWorker")
    return made


def import_target(target: str, app_dir: str = ".") -> Any:
    """Import MODULE (from ``app_dir`` or sys.path) and return what ATTR names in it."""
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise usage_error(f"expected MODULE:ATTR (e.g. myapp.tasks:worker), got {target!r}")
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing MODULE is a usage error; a failing import inside it is the app's bug.
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise
        raise usage_error(
            f"cannot import {module_name!r}: no module named {exc.name!r} "
            f"(looked in {directory} and sys.path)"
        ) from None
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise usage_error(f"module {module_name!r} has no attribute {attr!r}") from None
    return found


def _check_store(task_hub_worker: TaskHubWorker, target: str, url: str, *, explicit: bool) -> None:
    """Refuse (or, for a store from the environment, warn about) a worker on another hub."""
    if same_store(task_hub_worker.store, build_store(url)):
        return
    message = (
        f"the worker {target} runs on {describe_store(task_hub_worker.store)}, "
        f"but {'--store' if explicit else 'DURATASK_STORE'} names {mask_url(url)}"
    )
    if explicit:
        raise usage_error(message)
    click.echo(f"Warning: {message}", err=True)


async def _serve(task_hub_worker: TaskHubWorker) -> bool:
    """Run the worker until a signal; True if it stopped gracefully, False if forced."""
    loop = asyncio.get_running_loop()
    run = asyncio.create_task(task_hub_worker.run())
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            click.echo("Stopping: finishing in-flight work (signal again to force).", err=True)
            stop.set()
        else:
            run.cancel()

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        try:
            loop.add_signal_handler(signum, on_signal)
        except NotImplementedError:  # event loops without signal support (Windows)
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(on_signal))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
        while not run.done():
            if signals_seen > 1:
                # Again and again: one cancel interrupts only one await of run()'s clean-up.
                run.cancel()
            else:
                # Asked repeatedly: a signal may arrive before run() is ready to hear it.
                await task_hub_worker.shutdown()
            await asyncio.wait({run}, timeout=0.1)
        if run.cancelled():
            return False
        run.result()  # a worker that failed by itself (say, an unreachable store) raises here
        return True
    finally:
        stopping.cancel()
        for signum in handled:
            try:
                loop.remove_signal_handler(signum)
            except NotImplementedError:
                signal.signal(signum, signal.SIG_DFL)
