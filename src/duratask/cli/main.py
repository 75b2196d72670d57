"""The ``duratask`` command group: its commands, and errors turned into one line each.

Exit codes (see :class:`~duratask.cli.errors.ExitCode`): 0 success; 1 no such instance or the
operation was refused; 2 bad usage or input; 3 the instance FAILED or was TERMINATED
(``status --wait``); 4 a wait timed out; 5 the store is unreachable or failed; 130 a worker
forced to stop.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import click

from duratask import __version__
from duratask.cli import (
    actions,
    entities,
    hub,
    instances,
    listing,
    schedules,
    sidecar,
    worker,
    workers_listing,
)
from duratask.cli.errors import ExitCode, cli_error, translate

SERVE_COMMANDS = ("dashboard", "dev")
SERVE_MODULE = "duratask.cli.serve"


class DurataskGroup(click.Group):
    """A group that reports errors as one line with a documented exit code, and loads the
    serving commands (dashboard, dev) only when they are asked for."""

    _serve_loaded = False

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.MissingParameter:
            raise
        except click.BadParameter as exc:
            # A bad value deserves one line, not the usage text; missing ones keep it.
            raise cli_error(exc.format_message(), ExitCode.USAGE) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            raise error from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SERVE_COMMANDS:
            _register_serve_commands(self)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register_serve_commands(self)
        return super().list_commands(ctx)


@click.group(cls=DurataskGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="duratask")
def main() -> None:
    """Run workers and inspect or drive the orchestrations of a duratask task hub.

    Every command takes --store URL (or the DURATASK_STORE environment variable).
    """


main.add_command(worker.worker)
main.add_command(instances.start)
main.add_command(instances.status)
main.add_command(listing.list_instances)
main.add_command(instances.history)
main.add_command(actions.raise_event)
main.add_command(actions.terminate)
main.add_command(actions.suspend)
main.add_command(actions.resume)
main.add_command(actions.purge)
main.add_command(actions.rewind)
main.add_command(actions.restart)
main.add_command(hub.hub)
main.add_command(workers_listing.workers)
main.add_command(entities.entity)
main.add_command(schedules.schedule)
main.add_command(sidecar.serve)


# -- the serving commands (dashboard, dev): registered here, and only here ---------------


def _register_serve_commands(group: DurataskGroup) -> None:
    """Add ``dashboard`` and ``dev`` from ``duratask.cli.serve`` if that module exists.

    Imported on first need, so other commands never pay for it. If the module is absent the
    commands are simply missing; if it cannot be imported (say, for want of an optional
    package), they are replaced by stand-ins that fail saying why.
    """
    if group._serve_loaded:
        return
    group._serve_loaded = True
    try:
        serve = _load_serve_module()
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == SERVE_MODULE:
            return
        for name in SERVE_COMMANDS:
            group.add_command(_unavailable(name, exc))
        return
    for value in vars(serve).values():
        if isinstance(value, click.Command) and value.name in SERVE_COMMANDS:
            group.add_command(value)


def _load_serve_module() -> ModuleType:
    return importlib.import_module(SERVE_MODULE)


def _unavailable(name: str, exc: ImportError) -> click.Command:
    """A stand-in for a serving command whose module cannot be imported."""
    missing = exc.name or ""
    if missing and missing.partition(".")[0] != "duratask":
        reason = f"needs the module {missing!r}: pip install 'duratask[dashboard]'"
    else:
        reason = f"is unavailable: {exc}"

    def fail() -> None:
        raise cli_error(f"'duratask {name}' {reason}", ExitCode.USAGE)

    return click.Command(name, callback=fail, help=f"(unavailable: {reason})")


if __name__ == "__main__":
    main(prog_name="duratask")
