"""duratask never touches data that is not its own.

A SQLite file or PostgreSQL schema holding another application's tables is refused with
:class:`NotATaskHubError` (CLI exit code 5) by every command and by the library, and is left
exactly as it was; read-only commands create nothing anywhere; ``hub delete`` drops only
duratask's own objects. A hub is marked as duratask's own, and a hub whose schema version
this duratask cannot use says which versions it found and supports.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask.backends import open_store
from duratask.backends._migrations import load_logic, load_migrations
from duratask.backends._ownership import MARKER, MARKER_LAYOUT, own_objects
from duratask.backends.sqlite import SqliteOrchestrationService
from tests.cli.conftest import Cli, one_line_error

from .conftest import POSTGRES_URL, drop_schema, new_schema, require_postgres
from .test_migrations import postgres_hub_at, sqlite_hub_at

APP_ROWS = [(1, "espresso"), (2, "flat white")]


class Place:
    """A SQLite file or PostgreSQL schema, and what a test can see in it."""

    kind: str
    url: str

    def run(self, statement: str) -> None:
        raise NotImplementedError

    def tables(self) -> dict[str, int]:
        """Every table in the place, with its row count."""
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def add_app_table(self) -> None:
        """Another application's table, with two rows."""
        self.run("CREATE TABLE orders (id INTEGER PRIMARY KEY, drink TEXT NOT NULL)")
        for number, drink in APP_ROWS:
            self.run(f"INSERT INTO orders (id, drink) VALUES ({number}, '{drink}')")


class SqlitePlace(Place):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def run(self, statement: str) -> None:
        with sqlite3.connect(self.path) as conn:
            conn.execute(statement)

    def tables(self) -> dict[str, int]:
        with sqlite3.connect(self.path) as conn:
            names = [
                n
                for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name != "
                    "'sqlite_sequence'"
                )
            ]
            return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}

    def exists(self) -> bool:
        return self.path.exists()

    def journal_mode(self) -> str:
        with sqlite3.connect(self.path) as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


class PostgresPlace(Place):
    kind = "postgres"

    def __init__(self, server: str, schema: str) -> None:
        self.schema = schema
        self.url = f"{server}{'&' if '?' in server else '?'}schema={schema}"

    def _execute(self, statement: str, params: Any = None) -> list[Any]:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{self.schema}"')
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def run(self, statement: str) -> None:
        self._execute(statement)

    def create_schema(self) -> None:
        self._execute(f'CREATE SCHEMA "{self.schema}"')

    def tables(self) -> dict[str, int]:
        rows = self._execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (self.schema,),
        )
        return {
            name: self._execute(f'SELECT count(*) FROM "{self.schema}"."{name}"')[0][0]
            for (name,) in rows
        }

    def functions(self) -> list[str]:
        rows = self._execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            (self.schema,),
        )
        return sorted(name for (name,) in rows)

    def exists(self) -> bool:
        rows = self._execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        return bool(rows)


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "sqlite":
        yield SqlitePlace(tmp_path / "app.db")
        return
    server = require_postgres()
    schema = new_schema()
    yield PostgresPlace(server, schema)
    drop_schema(schema)


@pytest.fixture
def foreign(place: Place) -> Place:
    """A place that holds another application's table, and nothing of duratask's."""
    if isinstance(place, PostgresPlace):
        place.create_schema()
    place.add_app_table()
    return place


def untouched(place: Place) -> None:
    assert place.tables() == {"orders": 2}
    if isinstance(place, SqlitePlace):
        assert place.journal_mode() == "delete", "not even switched to WAL mode"


# -- a foreign file or schema --------------------------------------------------------------------
async def test_the_library_refuses_a_foreign_place_and_leaves_it_as_it_was(foreign: Place) -> None:
    for create in (True, False):
        store = open_store(foreign.url)
        with pytest.raises(dt.NotATaskHubError) as raised:
            await store.open(create=create)
        assert "is not a duratask task hub: it holds other tables (orders)" in str(raised.value)
        assert raised.value.foreign == ["orders"]
        assert isinstance(raised.value, dt.StoreError)
    with pytest.raises(dt.NotATaskHubError):
        await open_store(foreign.url).create_task_hub()
    client = dt.AsyncTaskHubClient(foreign.url)
    with pytest.raises(dt.NotATaskHubError):
        await client.schedule_new_orchestration("anything")
    await client.close()
    untouched(foreign)


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["status", "x"],
        ["history", "x"],
        ["hub", "info"],
        ["start", "greet"],
        ["hub", "create"],
        ["hub", "delete", "--yes"],
        ["dashboard", "--port", "0"],
    ],
    ids=lambda args: " ".join(args),
)
def test_every_command_refuses_a_foreign_place_with_exit_code_5(
    foreign: Place, args: list[str]
) -> None:
    result = Cli(foreign.url).run(*args, code=5)
    assert "is not a duratask task hub: it holds other tables (orders)" in one_line_error(result)
    untouched(foreign)


def test_a_view_or_a_lone_index_makes_a_place_foreign_too(place: Place) -> None:
    if isinstance(place, PostgresPlace):
        place.create_schema()
    place.run("CREATE VIEW recent AS SELECT 1 AS one")
    result = Cli(place.url).run("start", "greet", code=5)
    assert "recent (view)" in one_line_error(result)
    assert place.tables() == ({"recent": 1} if place.kind == "postgres" else {})


# -- read-only commands create nothing -----------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [["list"], ["status", "x"], ["history", "x"], ["hub", "info"], ["dashboard", "--port", "0"]],
)
def test_read_only_commands_create_nothing_where_no_hub_is(place: Place, args: list[str]) -> None:
    result = Cli(place.url).run(*args, code=5)
    assert "no such task hub" in one_line_error(result) or "no SQLite task hub" in (
        one_line_error(result)
    )
    assert not place.exists(), "a mistyped path or schema stays absent"


def test_a_read_only_command_on_an_empty_place_creates_nothing(place: Place) -> None:
    if isinstance(place, PostgresPlace):
        place.create_schema()
    elif isinstance(place, SqlitePlace):
        place.path.touch()
    Cli(place.url).run("list", code=5)
    assert place.tables() == {}


# -- hub delete drops only duratask's own objects ------------------------------------------------
def test_hub_delete_keeps_another_applications_table_beside_the_hub(place: Place) -> None:
    cli = Cli(place.url)
    cli.run("hub", "create")
    cli.start("greet", "a")
    place.add_app_table()  # added later, beside the hub
    assert cli.json("list")["total"] == 1, "a marked hub still opens"
    cli.run("hub", "delete", "--yes")
    untouched_but_wal = place.tables()
    assert untouched_but_wal == {"orders": 2}
    assert place.exists()
    if isinstance(place, PostgresPlace):
        assert place.functions() == [], "the hub's functions went with it"


def test_hub_delete_drops_a_schema_only_if_duratask_made_it(
    request: pytest.FixtureRequest,
) -> None:
    server = require_postgres()
    made, given = PostgresPlace(server, new_schema()), PostgresPlace(server, new_schema())
    request.addfinalizer(lambda: drop_schema(made.schema))
    request.addfinalizer(lambda: drop_schema(given.schema))
    given.create_schema()  # an empty schema somebody made for the hub
    for place in (made, given):
        Cli(place.url).run("hub", "create")
        Cli(place.url).run("hub", "delete", "--yes")
    assert not made.exists()
    assert given.exists() and given.tables() == {} and given.functions() == []


def test_hub_delete_of_a_hub_made_before_the_mark_keeps_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite_hub_at(path, 2)
    place = SqlitePlace(path)
    place.add_app_table()
    cli = Cli(place.url)
    assert cli.json("list")["total"] == 0, "a hub made before the mark is still a hub"
    cli.run("hub", "delete", "--yes")
    assert place.tables() == {"orders": 2}


# -- the mark -------------------------------------------------------------------------------------
async def test_a_new_hub_is_marked_and_an_old_one_gets_the_mark(tmp_path: Path) -> None:
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    await open_store(f"sqlite:///{new}").create_task_hub()
    sqlite_hub_at(old, 1)
    store = SqliteOrchestrationService(str(old))
    await store.open(create=False)
    await store.close()
    for path in (new, old):
        with sqlite3.connect(path) as conn:
            assert conn.execute(f"SELECT layout FROM {MARKER}").fetchall() == [(MARKER_LAYOUT,)]


async def test_duratask_knows_every_table_its_hub_holds(tmp_path: Path) -> None:
    """The list of own objects (read from the migration scripts) is what a hub really holds:
    ``hub delete`` relies on it to leave no table of its own behind and drop no other."""
    path = tmp_path / "hub.db"
    await open_store(f"sqlite:///{path}").create_task_hub()
    scripts = [m.script for m in load_migrations("duratask.backends.sqlite", "SQLite")]
    own = {name for kind, name in own_objects(scripts) if kind == "table"}
    assert set(SqlitePlace(path).tables()) == own


def test_duratask_knows_every_object_its_postgres_hub_holds(request: pytest.FixtureRequest) -> None:
    place = PostgresPlace(require_postgres(), new_schema())
    request.addfinalizer(lambda: drop_schema(place.schema))
    Cli(place.url).run("hub", "create")
    scripts = [m.script for m in load_migrations("duratask.backends.postgres", "PostgreSQL")]
    own = own_objects([*scripts, load_logic("duratask.backends.postgres").script])
    assert set(place.tables()) == {name for kind, name in own if kind == "table"}
    assert set(place.functions()) == {name for kind, name in own if kind == "function"}


# -- schema versions ------------------------------------------------------------------------------
async def make_hub(url: str) -> None:
    store = open_store(url)
    await store.create_task_hub()
    await store.close()


async def test_a_newer_schema_version_names_both_versions(place: Place) -> None:
    await make_hub(place.url)
    place.run("INSERT INTO schema_version (version, applied_at) VALUES (99, '2024-01-01')")
    store = open_store(place.url)
    with pytest.raises(dt.SchemaVersionError) as raised:
        await store.open()
    supported = len(
        load_migrations(
            f"duratask.backends.{'postgres' if place.kind == 'postgres' else 'sqlite'}", "x"
        )
    )
    assert (raised.value.found, raised.value.supported) == (99, supported)
    assert f"schema version 99, newer than this duratask supports ({supported})" in str(
        raised.value
    )


def test_the_cli_names_the_versions_too(place: Place) -> None:
    Cli(place.url).run("hub", "create")
    place.run("INSERT INTO schema_version (version, applied_at) VALUES (99, '2024-01-01')")
    for args in (["list"], ["start", "greet"]):
        result = Cli(place.url).run(*args, code=5)
        assert "has schema version 99, newer than this duratask supports" in one_line_error(result)


async def test_a_hub_whose_tables_do_not_match_its_version_says_so(place: Place) -> None:
    """Tables of a hub whose version record was lost: once "table instances already exists"."""
    if isinstance(place, PostgresPlace):
        postgres_hub_at(place.schema, 2)
    elif isinstance(place, SqlitePlace):
        sqlite_hub_at(place.path, 2)
    place.run("DELETE FROM schema_version")
    with pytest.raises(dt.SchemaVersionError) as raised:
        await open_store(place.url).open()
    message = str(raised.value)
    assert "records schema version 0, but its tables do not match that version" in message
    assert "migration 001_initial.sql" in message
    assert raised.value.found == 0


async def test_some_of_the_hubs_tables_alone_are_a_damaged_hub(place: Place) -> None:
    if isinstance(place, PostgresPlace):
        place.create_schema()
    place.run("CREATE TABLE instances (instance_id TEXT PRIMARY KEY)")
    with pytest.raises(dt.SchemaVersionError, match="only some of duratask's tables"):
        await open_store(place.url).open()
    assert place.tables() == {"instances": 0}
