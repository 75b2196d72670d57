"""``duratask hub`` and the errors of reaching a store: missing, unreachable, malformed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import duratask as dt
from tests.cli.conftest import Cli, one_line_error
from tests.conformance.conftest import drop_schema, new_schema, require_postgres


def test_hub_create_info_delete(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'hub.db'}"
    cli = Cli(url)
    assert cli.run("hub", "create").stdout == f"Task hub ready at {url}.\n"
    assert (tmp_path / "new" / "dir" / "hub.db").exists()
    cli.run("hub", "create")  # again: nothing to do

    cli.start("greet", "a")
    cli.start("greet", "b")
    info = cli.json("hub", "info")
    assert info["store"] == url
    assert info["total"] == 2
    assert info["counts"]["PENDING"] == 2
    assert set(info["counts"]) == {
        "RUNNING",
        "COMPLETED",
        "CONTINUED_AS_NEW",
        "FAILED",
        "TERMINATED",
        "PENDING",
        "SUSPENDED",
    }
    table = cli.run("hub", "info").stdout
    assert f"Store: {url}" in table
    assert [line.split() for line in table.splitlines() if "PENDING" in line] == [["PENDING", "2"]]
    assert [line.split() for line in table.splitlines() if "Total" in line] == [["Total", "2"]]

    declined = cli.run("hub", "delete", input="n\n", code=1)
    assert "Delete the task hub at" in declined.stderr
    assert cli.json("hub", "info")["total"] == 2
    assert cli.run("hub", "delete", input="y\n").stdout == f"Deleted the task hub at {url}.\n"
    cli.run("hub", "create")
    assert cli.json("hub", "info")["total"] == 0
    cli.run("hub", "delete", "--yes")


def test_store_option_overrides_the_environment(tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cli = Cli(f"sqlite:///{tmp_path / 'env.db'}")
    cli.run("hub", "create", "--store", other)
    cli.run("start", "greet", "--store", other)
    assert cli.json("list", "--store", other)["total"] == 1
    assert not (tmp_path / "env.db").exists()


def test_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    cli = Cli("")
    for args in (["list"], ["status", "x"], ["hub", "info"], ["start", "greet"]):
        result = cli.run(*args, code=2)
        assert "no task hub store given: pass --store URL or set DURATASK_STORE" in (
            one_line_error(result)
        )


def test_a_sqlite_path_in_a_missing_directory_is_unreachable(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "hub.db"
    cli = Cli(f"sqlite:///{missing}")
    for args in (["list"], ["start", "greet"], ["hub", "info"], ["hub", "delete", "--yes"]):
        result = cli.run(*args, code=5)
        assert f"the directory '{missing.parent}' does not exist" in one_line_error(result)
    assert not missing.parent.exists()


def test_hub_create_where_no_directory_can_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = Cli(f"sqlite:///{tmp_path / 'file' / 'sub' / 'hub.db'}").run("hub", "create", code=5)
    assert "cannot create the directory of the SQLite task hub" in one_line_error(result)


def test_a_sqlite_file_that_does_not_exist_is_not_created_by_reads(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'typo.db'}")
    result = cli.run("status", "x", code=5)
    assert "no SQLite task hub at" in one_line_error(result)
    assert not (tmp_path / "typo.db").exists()
    cli.start("greet", "a")  # starting an instance may create the hub
    assert cli.json("list")["total"] == 1


def test_a_file_that_is_not_a_task_hub_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello " * 1000)
    result = Cli(f"sqlite:///{tmp_path / 'notes.txt'}").run("list", code=5)
    assert "file is not a database" in one_line_error(result)


def test_an_unsupported_store_url_is_a_usage_error() -> None:
    result = Cli("redis://localhost/0").run("list", code=2)
    assert "--store: unsupported store URL 'redis://localhost/0'" in one_line_error(result)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_postgres_fails_fast_with_the_password_masked() -> None:
    port = _closed_port()
    url = f"postgresql://app:s3cret@127.0.0.1:{port}/db?schema=hub"
    began = time.monotonic()
    result = Cli(url).run("list", code=5)
    line = one_line_error(result)
    assert f"PostgreSQL task hub 'hub' at 127.0.0.1:{port}/db: cannot connect" in line
    assert "Connection refused" in line, "the server's own words"
    assert "s3cret" not in result.output
    assert time.monotonic() - began < 10, "no wait for a pool to give up"


async def test_the_library_fails_fast_too_with_the_cause() -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{_closed_port()}/db?schema=hub"
    client = dt.AsyncTaskHubClient(url)
    began = time.monotonic()
    with pytest.raises(dt.StoreError, match=r"cannot connect: .*Connection refused") as raised:
        await client.get_orchestration_state("x")
    assert "s3cret" not in str(raised.value)
    assert time.monotonic() - began < 10
    await client.close()


def test_hub_on_postgres(request: pytest.FixtureRequest) -> None:
    server = require_postgres()
    schema = new_schema()
    request.addfinalizer(lambda: drop_schema(schema))
    url = f"{server}{'&' if '?' in server else '?'}schema={schema}"
    cli = Cli(url)
    cli.run("hub", "create")
    cli.start("greet", "pg", "--id", "pg-1")
    assert cli.json("status", "pg-1")["runtime_status"] == "PENDING"
    assert cli.json("hub", "info")["total"] == 1
    cli.run("hub", "delete", "--yes")


async def test_a_postgres_server_that_never_answers_fails_within_seconds_naming_why() -> None:
    """A server that accepts the connection and then says nothing (a hung host, a firewall
    that swallows packets) fails at the default connect timeout, not after the pool's 30 s,
    and says it timed out rather than "pool initialization incomplete"."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = dt.AsyncTaskHubClient(f"postgresql://app@127.0.0.1:{port}/db?schema=hub")
        began = time.monotonic()
        with pytest.raises(dt.StoreError) as raised:
            await client.get_orchestration_state("x")
        elapsed = time.monotonic() - began
        await client.close()
    message = str(raised.value)
    assert f"PostgreSQL task hub 'hub' at 127.0.0.1:{port}/db: cannot connect" in message
    assert "timeout" in message.lower()
    assert "pool" not in message
    assert 4 < elapsed < 8, elapsed
