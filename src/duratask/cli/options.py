"""Options shared by the commands: the store to talk to and the output format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from duratask.cli.store import STORE_ENV

F = TypeVar("F", bound=Callable[..., Any])

TABLE = "table"
JSON = "json"


def store_option(fn: F) -> F:
    """``--store URL``, defaulting to the DURATASK_STORE environment variable."""
    return click.option(
        "--store",
        "store",
        envvar=STORE_ENV,
        show_envvar=True,
        metavar="URL",
        help="Task hub store: sqlite:///path.db, postgresql://user@host/db?schema=NAME "
        "or memory://NAME.",
    )(fn)


def output_option(fn: F) -> F:
    """``--output table|json`` (``-o``), default table."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice([TABLE, JSON]),
        default=TABLE,
        show_default=True,
        help="Human-readable table, or JSON for scripts.",
    )(fn)


def yes_option(fn: F) -> F:
    """``--yes`` (``-y``): do not ask for confirmation."""
    return click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)
