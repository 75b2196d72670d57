"""The command group: help, version, one-line errors, and the guarded serving commands."""

from __future__ import annotations

import types

import click
import pytest
from click.testing import CliRunner

from duratask.cli import main as main_module
from duratask.cli.main import DurataskGroup, main
from tests.cli.conftest import Cli, one_line_error

COMMANDS = {
    "worker",
    "start",
    "status",
    "list",
    "history",
    "raise-event",
    "terminate",
    "suspend",
    "resume",
    "purge",
    "rewind",
    "restart",
    "hub",
}


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line}
    assert COMMANDS <= listed


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("duratask, version ")


def test_a_bad_option_value_is_one_line_and_a_missing_argument_shows_usage(
    idle_cli: Cli,
) -> None:
    bad = idle_cli.run("list", "--output", "yaml", code=2)
    assert "Invalid value for '--output' / '-o'" in one_line_error(bad)
    missing = idle_cli.run("status", code=2)
    assert "Usage: " in missing.stderr
    assert "Missing argument 'ID'" in missing.stderr
    unknown = idle_cli.run("stauts", code=2)
    assert "No such command 'stauts'" in unknown.stderr


def _group() -> DurataskGroup:
    group = DurataskGroup("duratask")
    group.add_command(click.Command("start", callback=lambda: None))
    return group


def test_serving_commands_come_from_the_serve_module(monkeypatch: pytest.MonkeyPatch) -> None:
    serve = types.ModuleType("duratask.cli.serve")
    ran: list[str] = []
    serve.dashboard = click.Command("dashboard", callback=lambda: ran.append("dashboard"))  # type: ignore[attr-defined]
    serve.dev = click.Command("dev", callback=lambda: ran.append("dev"))  # type: ignore[attr-defined]
    serve.other = click.Command("other")  # type: ignore[attr-defined]
    loads: list[int] = []

    def load() -> types.ModuleType:
        loads.append(1)
        return serve

    monkeypatch.setattr(main_module, "_load_serve_module", load)
    group = _group()
    runner = CliRunner()
    assert runner.invoke(group, ["start"]).exit_code == 0
    assert loads == []  # other commands never import the serving module
    assert runner.invoke(group, ["dev"]).exit_code == 0
    assert runner.invoke(group, ["dashboard"]).exit_code == 0
    assert ran == ["dev", "dashboard"]
    assert loads == [1]
    assert set(group.list_commands(click.Context(group))) == {"start", "dashboard", "dev"}


def test_without_a_serve_module_the_cli_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent() -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'duratask.cli.serve'", name="duratask.cli.serve")

    monkeypatch.setattr(main_module, "_load_serve_module", absent)
    group = _group()
    runner = CliRunner()
    assert runner.invoke(group, ["--help"]).exit_code == 0
    assert group.list_commands(click.Context(group)) == ["start"]
    result = runner.invoke(group, ["dashboard"])
    assert result.exit_code == 2
    assert "No such command 'dashboard'" in result.stderr


def test_a_missing_optional_package_gets_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    def needs_starlette() -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'starlette'", name="starlette")

    monkeypatch.setattr(main_module, "_load_serve_module", needs_starlette)
    result = CliRunner().invoke(_group(), ["dashboard"])
    assert result.exit_code == 2
    assert one_line_error(result) == (
        "Error: 'duratask dashboard' needs the module 'starlette': "
        "pip install 'duratask[dashboard]'"
    )
