"""Schema migrations: a hub created at any earlier schema version, opened by this duratask,
ends exactly like a hub this duratask creates (tables, columns, indexes, functions), and
keeps its data.

An earlier version's hub is built by applying the migrations up to it, as the release that
stopped there did. Where a migration's text has changed since it was released (PostgreSQL's
002 defined the store functions, which now live in logic.sql), the text as released is
kept beside this test and used instead.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from duratask.backends._migrations import Migration, load_migrations
from duratask.backends.base import InstanceQuery, OrchestrationMessage
from duratask.backends.sqlite import SqliteOrchestrationService
from duratask.backends.sqlite import _queries as sqlite_queries
from duratask.backends.sqlite._database import split_statements
from duratask.history import ExecutionStarted

from .conftest import POSTGRES_URL, T0, drop_schema, new_schema, require_postgres

RELEASED = Path(__file__).parent / "schemas"
SQLITE_MIGRATIONS = load_migrations("duratask.backends.sqlite", "SQLite")
POSTGRES_MIGRATIONS = load_migrations("duratask.backends.postgres", "PostgreSQL")
# The migrations whose text changed after their release: version -> the text as released.
AS_RELEASED = {("postgresql", 2): RELEASED / "postgres_002_as_released.sql"}


def released(kind: str, migration: Migration) -> str:
    path = AS_RELEASED.get((kind, migration.version))
    return path.read_text("utf-8") if path is not None else migration.script


def start_message(instance_id: str) -> OrchestrationMessage:
    event = ExecutionStarted(
        timestamp=T0, name="Greet", input='"x"', instance_id=instance_id, execution_id="e1"
    )
    return OrchestrationMessage(instance_id, event)


# -- SQLite --------------------------------------------------------------------------------------
def sqlite_schema(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index of the file with its SQL, the schema's bookkeeping left out."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_version' ORDER BY type, name"
        ).fetchall()
    return [(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows]


def sqlite_hub_at(path: Path, version: int) -> None:
    """A hub file as a duratask that stopped at schema ``version`` made it."""
    with sqlite3.connect(path) as conn:
        conn.execute(sqlite_queries.CREATE_SCHEMA_VERSION)
        for migration in SQLITE_MIGRATIONS[:version]:
            for statement in split_statements(released("sqlite", migration)):
                conn.execute(statement)
            conn.execute(sqlite_queries.INSERT_SCHEMA_VERSION, (migration.version, 0))


@pytest.mark.parametrize("version", range(1, len(SQLITE_MIGRATIONS) + 1))
async def test_a_sqlite_hub_of_every_version_upgrades_to_a_fresh_one(
    tmp_path: Path, version: int
) -> None:
    fresh_path, old_path = tmp_path / "fresh.db", tmp_path / "old.db"
    fresh = SqliteOrchestrationService(str(fresh_path))
    await fresh.open()
    await fresh.close()

    sqlite_hub_at(old_path, version)
    old = SqliteOrchestrationService(str(old_path))
    await old.open()
    try:
        await old.create_instance(start_message("a"), frozenset())
        assert [s.instance_id for s in (await old.query_instances(InstanceQuery())).states] == ["a"]
    finally:
        await old.close()
    assert sqlite_schema(old_path) == sqlite_schema(fresh_path)
    with sqlite3.connect(old_path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, len(SQLITE_MIGRATIONS) + 1))


# -- PostgreSQL ----------------------------------------------------------------------------------
def postgres_schema(schema: str) -> dict[str, Any]:
    """Columns, indexes and functions of a hub's schema, its name taken out."""
    import psycopg

    with psycopg.connect(POSTGRES_URL) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, "
            "coalesce(column_default, ''), coalesce(collation_name, '') "
            "FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name != 'schema_version' ORDER BY 1, 2",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, replace(indexdef, %s, 'S') FROM pg_indexes "
            "WHERE schemaname = %s AND tablename != 'schema_version' ORDER BY 1",
            (schema, schema),
        ).fetchall()
        functions = conn.execute(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid), "
            "md5(replace(p.prosrc, %s, 'S')) FROM pg_proc AS p "
            "JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = %s ORDER BY 1",
            (schema, schema),
        ).fetchall()
        logic = conn.execute(f'SELECT digest FROM "{schema}".logic').fetchall()
    columns = [(*c[:4], str(c[4]).replace(schema, "S"), c[5]) for c in columns]
    return {"columns": columns, "indexes": indexes, "functions": functions, "logic": logic}


def postgres_hub_at(schema: str, version: int) -> None:
    """A hub schema as a duratask that stopped at schema ``version`` made it."""
    import psycopg
    from psycopg import sql

    from duratask.backends.postgres import _queries as postgres_queries

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn, conn.transaction():
        ident = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL(postgres_queries.CREATE_SCHEMA_VERSION).format(schema=ident))
        for migration in POSTGRES_MIGRATIONS[:version]:
            conn.execute(sql.SQL(released("postgresql", migration)).format(schema=ident))
            conn.execute(
                sql.SQL(postgres_queries.INSERT_SCHEMA_VERSION).format(schema=ident),
                {"version": migration.version},
            )


@pytest.mark.parametrize("version", range(1, len(POSTGRES_MIGRATIONS) + 1))
async def test_a_postgres_hub_of_every_version_upgrades_to_a_fresh_one(
    version: int, request: pytest.FixtureRequest
) -> None:
    url = require_postgres()
    from duratask.backends.postgres import PostgresOrchestrationService

    fresh_schema, old_schema = new_schema(), new_schema()
    request.addfinalizer(lambda: drop_schema(fresh_schema))
    request.addfinalizer(lambda: drop_schema(old_schema))
    fresh = PostgresOrchestrationService(url, schema=fresh_schema)
    await fresh.open()
    await fresh.close()

    postgres_hub_at(old_schema, version)
    old = PostgresOrchestrationService(url, schema=old_schema)
    await old.open()
    try:
        await old.create_instance(start_message("a"), frozenset())
        work_item = await old.lock_next_orchestration_work_item("w", timedelta(seconds=30))
        assert work_item is not None and work_item.instance_id == "a"
    finally:
        await old.close()
    assert postgres_schema(old_schema) == postgres_schema(fresh_schema)
