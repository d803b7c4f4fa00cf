"""Migrations: numbered files, applied once, safe when two processes start together."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from runstream.store import InvalidSchemaName, create_pool, migrate, migrations, open_store


async def test_migrations_are_the_numbered_sql_files_in_order() -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions)
    assert versions[0] == "0001_read_models.sql"


async def test_migrating_twice_applies_nothing_the_second_time(database_url: str) -> None:
    pool = await create_pool(database_url, schema="rs_a")
    try:
        assert await migrate(pool, "rs_a") == [m.version for m in migrations()]
        assert await migrate(pool, "rs_a") == []
        tables = await pool.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'rs_a'"
        )
        assert {
            "sessions", "messages", "message_logs", "message_steps", "step_durations",
            "session_locks", "datasets", "chart_tasks", "charts", "dead_letters",
            "projection_checkpoints", "poison_events", "schema_migrations",
        } == {r["table_name"] for r in tables}  # fmt: skip
    finally:
        await pool.close()


async def test_two_processes_migrating_at_once_both_succeed_and_apply_once(
    database_url: str,
) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, "rs_race") for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations())]
        count = await conns[0].fetchval("SELECT count(*) FROM rs_race.schema_migrations")
        assert count == len(migrations())
    finally:
        for c in conns:
            await c.close()


async def test_a_schema_name_that_could_inject_sql_is_refused(database_url: str) -> None:
    with pytest.raises(InvalidSchemaName):
        await create_pool(database_url, schema='x"; DROP TABLE y; --')


async def test_open_store_migrates_and_decodes_jsonb_with_msgspec(database_url: str) -> None:
    async with open_store(database_url, schema="rs_open") as store:
        value = await store.pool.fetchval(
            "SELECT $1::jsonb", {"rows": [[1, "a", None]], "ok": True}
        )
        assert value == {"rows": [[1, "a", None]], "ok": True}
        assert await store.pool.fetchval("SHOW search_path") == "rs_open"
        assert await store.read_models.checkpoint() == 0
