"""Fixtures for store tests: a migrated schema in a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from runstream.store import ReadModels, create_pool, migrate


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=4)
    try:
        await migrate(pool, "runstream")
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def read_models(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[ReadModels]:
    rm = ReadModels(pool, dsn=database_url, poll_interval=30.0)  # only NOTIFY wakes quickly
    try:
        yield rm
    finally:
        await rm.close()
