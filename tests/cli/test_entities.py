"""``duratask entity list | get | signal | clean`` against a worker on SQLite."""

from __future__ import annotations

import json
import time

from tests.cli.conftest import Cli, one_line_error


def _wait_for_state(cli: Cli, entity_id: str, expected: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = cli.invoke("entity", "get", entity_id, "--output", "json")
        if result.exit_code == 0 and json.loads(result.stdout)["state"] == expected:
            return
        assert time.monotonic() < deadline, f"{entity_id} never reached {expected!r}"
        time.sleep(0.05)


def test_signal_get_and_list(cli: Cli) -> None:
    assert cli.run("entity", "signal", "@counter@a", "add", "--input", "2").stdout == (
        "Signalled 'add' to '@counter@a'.\n"
    )
    cli.run("entity", "signal", "@counter@b", "add", "--input", "5")
    _wait_for_state(cli, "@counter@a", 2)
    _wait_for_state(cli, "@counter@b", 5)
    shown = cli.json("entity", "get", "@counter@a")
    assert (shown["name"], shown["key"], shown["locked_by"], shown["backlog"]) == (
        "counter",
        "a",
        None,
        0,
    )
    listed = cli.json("entity", "list", "--name", "counter")
    assert [(e["entity_id"], e["state"]) for e in listed["entities"]] == [
        ("@counter@a", 2),
        ("@counter@b", 5),
    ]
    assert listed["more"] is False
    limited = cli.json("entity", "list", "--limit", "1")
    assert [e["entity_id"] for e in limited["entities"]] == ["@counter@a"]
    assert limited["more"] is True
    table = cli.run("entity", "list", "--state").stdout
    assert "@counter@b" in table and "2 entities shown" in table
    assert "State" in cli.run("entity", "get", "@counter@b").stdout


def test_get_of_a_missing_entity_fails(cli: Cli) -> None:
    result = cli.run("entity", "get", "@counter@none", code=1)
    assert "no entity '@counter@none'" in one_line_error(result)


def test_a_malformed_id_is_refused(cli: Cli) -> None:
    result = cli.run("entity", "signal", "counter", "add", code=2)
    assert "@name@key" in one_line_error(result)


def test_clean(cli: Cli) -> None:
    result = cli.json("entity", "clean")
    assert result == {"empty_entities_removed": 0, "orphaned_locks_released": 0}
