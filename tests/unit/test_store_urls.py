"""Store URLs are read with a URL parser: each form either opens the file it documents or
is refused with an :class:`InvalidStoreUrlError` that shows the right form, and a refused
URL leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import duratask as dt
from duratask.backends import open_store
from duratask.backends.sqlite import SqliteOrchestrationService


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///hub.db", "hub.db"),
        ("sqlite:///dir/hub.db", "dir/hub.db"),
        ("sqlite:////var/lib/hub.db", "/var/lib/hub.db"),
        ("SQLite:///hub.db", "hub.db"),
        ("sqlite:///a%20b.db", "a b.db"),
        ("sqlite:///what%3F.db", "what?.db"),
    ],
)
def test_well_formed_sqlite_urls_name_their_file(url: str, path: str) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteOrchestrationService)
    assert store.path == path


def test_sqlite_url_parameters_reach_the_store() -> None:
    store = open_store("sqlite:///hub.db?synchronous=normal&busy_timeout=2.5")
    assert isinstance(store, SqliteOrchestrationService)
    assert store._db._synchronous == "NORMAL"
    assert store._db._busy_timeout == 2.5


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # one slash: once read as 'rders.db'
        ("sqlite:/orders.db", "for 'orders.db' here write sqlite:///orders.db"),
        ("sqlite:orders.db", "for '/orders.db' write sqlite:////orders.db"),
        # two slashes: the name stands where a host would
        ("sqlite://relative", "'relative' stands where a host would"),
        ("sqlite://relative", "four slashes: an absolute path"),
        ("sqlite://host/hub.db", "a SQLite URL has none"),
        ("sqlite:///hub.db?mode=ro", "unknown parameter 'mode'"),
        ("sqlite:///hub.db?synchronous=sometimes", "synchronous must be one of"),
        ("sqlite:///hub.db?busy_timeout=soon", "busy_timeout must be a number of seconds"),
        ("sqlite:///hub.db?busy_timeout=1&busy_timeout=2", "gives 'busy_timeout' twice"),
        ("sqlite:///hub.db#frag", "write a '#' in a file name as %23"),
        ("sqlite:///:memory:", "use memory://NAME"),
        ("sqlite:///file:hub.db?mode=memory", "use memory://NAME"),
        ("sqlite:///a%00b.db", "NUL character"),
        ("sqlite:///a\x00b.db", "NUL character"),
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///dir/", "names no file"),
        ("redis://localhost/0", "unsupported store URL"),
        ("hub.db", "unsupported store URL"),
        ("memory://x?y=1", "takes no parameters"),
        ("memory:/x", "use memory://NAME"),
        ("memory:x", "use memory://NAME"),
        # libpq would read these as key=value text, with a message quoting the URL
        ("postgresql:/db.example/orders", "use postgresql://USER[:PASSWORD]@HOST"),
        ("postgres:orders", "has two slashes after the scheme"),
        ("postgresql://app:pw@[::1/orders", "malformed store URL (Invalid IPv6 URL)"),
        ("postgresql://app@db/orders?schema=Orders", "invalid task hub schema name 'Orders'"),
        ("postgresql://app@db/orders?schema=pg_hub", "reserved by PostgreSQL"),
        ("postgresql://app@db/orders?schema=a&schema=b", "gives schema more than once"),
        ("postgresql://app@db/orders?shema=hub", 'invalid URI query parameter: "shema"'),
    ],
)
def test_malformed_urls_are_refused_with_the_right_form(url: str, says: str, in_tmp: Path) -> None:
    with pytest.raises(dt.InvalidStoreUrlError) as raised:
        open_store(url)
    assert says in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert os.listdir(in_tmp) == [], "nothing was created"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cret@db/orders?schema=Orders",
        "postgresql://app:s3cret@db/orders?shema=hub",
        "postgresql://app:s3cret@[::1/orders",
        "postgresql:/app:s3cret@db/orders",
    ],
)
def test_a_refused_postgres_url_shows_the_form_and_never_the_password(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(dt.InvalidStoreUrlError) as raised:
        open_store(url)
    assert "postgresql://USER[:PASSWORD]@HOST" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_the_client_refuses_a_malformed_url_too() -> None:
    with pytest.raises(dt.InvalidStoreUrlError, match=r"sqlite:///orders\.db"):
        dt.TaskHubClient("sqlite:/orders.db")


@pytest.mark.parametrize("path", [":memory:", "file:x?mode=memory", "a\x00b.db"])
def test_the_sqlite_store_refuses_paths_it_cannot_share(path: str) -> None:
    with pytest.raises(ValueError):
        SqliteOrchestrationService(path)


async def test_a_relative_path_in_a_missing_directory_says_four_slashes_make_it_absolute() -> None:
    client = dt.AsyncTaskHubClient("sqlite:///tmp/x.db")
    with pytest.raises(dt.StoreError) as raised:
        await client.schedule_new_orchestration("anything")
    await client.close()
    message = str(raised.value)
    assert "the path is relative to" in message
    assert "four slashes make an absolute path: sqlite:////tmp/x.db" in message


async def test_the_library_and_the_cli_agree_opening_never_makes_a_directory(
    in_tmp: Path,
) -> None:
    """A worker or client (like ``duratask start``) creates a missing file in a directory
    that exists, never the directory; ``create_task_hub()`` (``duratask hub create``) does."""
    client = dt.AsyncTaskHubClient("sqlite:///absent/hub.db")
    with pytest.raises(dt.StoreError, match="the directory 'absent' does not exist"):
        await client.schedule_new_orchestration("anything")
    await client.close()
    assert not (in_tmp / "absent").exists()
    store = open_store("sqlite:///absent/hub.db")
    await store.create_task_hub()
    await store.close()
    assert (in_tmp / "absent" / "hub.db").exists()
