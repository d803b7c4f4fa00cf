"""A store: one pool over one schema, migrated, with its read-model queries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from runstream.store.migrate import migrate as run_migrations
from runstream.store.pool import DEFAULT_SCHEMA, create_pool
from runstream.store.queries import ReadModels


@dataclass
class Store:
    """A pool over one schema, its DSN, and the read-model queries."""

    dsn: str
    schema: str
    pool: asyncpg.Pool
    read_models: ReadModels

    async def close(self, timeout: float = 10.0) -> None:
        await self.read_models.close()
        try:
            await asyncio.wait_for(self.pool.close(), timeout)
        except (TimeoutError, asyncpg.InterfaceError):
            # A connection still busy (its task was cancelled mid-query): drop them all
            # rather than hang the shutdown.
            self.pool.terminate()


@asynccontextmanager
async def open_store(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    min_size: int = 1,
    max_size: int = 10,
    migrate: bool = True,
    connect_timeout: float = 60.0,
    command_timeout: float | None = None,
    settings: Mapping[str, str] | None = None,
    partitions: int = 1,
) -> AsyncIterator[Store]:
    """Open a pool (migrating the schema first, unless told not to) and close it on exit."""
    pool = await create_pool(dsn, schema=schema, min_size=min_size, max_size=max_size,
                             connect_timeout=connect_timeout, command_timeout=command_timeout,
                             settings=settings)
    read_models = ReadModels(pool, dsn=dsn, connect_timeout=min(connect_timeout, 10.0),
                             partitions=partitions)
    store = Store(dsn=dsn, schema=schema, pool=pool, read_models=read_models)
    try:
        if migrate:
            await run_migrations(pool, schema)
        yield store
    finally:
        await store.close()
