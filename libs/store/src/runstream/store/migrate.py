"""Plain numbered SQL migrations, applied once each and recorded in `schema_migrations`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from runstream.store.pool import validate_schema

logger = structlog.get_logger()

# pg_advisory_xact_lock(int, int): the first key says "Runstream migrations", the
# second is hashtext(schema), so two processes migrating one schema run one at a time.
_MIGRATE_LOCK_CLASS = 0x52_53_4D_47  # "RSMG"


@dataclass(frozen=True)
class Migration:
    version: str  # the file name, e.g. "0001_read_models.sql"
    sql: str


def migrations() -> list[Migration]:
    """Every migration file shipped with the package, in order."""
    folder = resources.files("runstream.store") / "migrations"
    found = [
        Migration(version=entry.name, sql=entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return sorted(found, key=lambda m: m.version)


async def migrate(conn_or_pool: asyncpg.Connection | asyncpg.Pool, schema: str) -> list[str]:
    """Create `schema` if missing and apply the migrations it lacks; returns those applied.

    Everything runs in one transaction under an advisory lock, so two processes starting
    at once serialise and the second finds nothing to do.
    """
    validate_schema(schema)
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _migrate(conn, schema)
    return await _migrate(conn_or_pool, schema)


async def _migrate(conn: asyncpg.Connection, schema: str) -> list[str]:
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _MIGRATE_LOCK_CLASS, schema
        )
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        # SET LOCAL: the migration files use unqualified names; restored at commit.
        await conn.execute(f'SET LOCAL search_path = "{schema}"')
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
            )
            applied.append(migration.version)
    if applied:
        logger.info("store.migrated", schema=schema, applied=applied)
    return applied
