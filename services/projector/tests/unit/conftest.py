"""Fixtures for projector tests: a migrated schema, a stream, and an event script."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from nats.js import JetStreamContext

from runstream.bus import stream_identity
from runstream.projector.projector import Projector
from runstream.store import ReadModels, create_pool, migrate
from services.projector.tests.unit.projector_helpers import SCHEMA, Fold, Script


@pytest_asyncio.fixture
async def stream(js: JetStreamContext, stream_names: Any) -> AsyncIterator[Any]:
    await js.add_stream(
        name=stream_names.stream, subjects=[f"{stream_names.prefix}.>"], duplicate_window=120
    )
    try:
        yield stream_names
    finally:
        await js.delete_stream(stream_names.stream)


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, schema=SCHEMA, max_size=5)
    try:
        await migrate(pool, SCHEMA)
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def projector(pool: asyncpg.Pool, js: JetStreamContext, stream: Any) -> Projector:
    """A live projector bound to the test's stream (as the service binds it at start)."""
    p = Projector(pool)
    await p.position(await stream_identity(js, stream.stream))
    return p


@pytest_asyncio.fixture
async def read_models(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[ReadModels]:
    rm = ReadModels(pool, dsn=database_url)
    try:
        yield rm
    finally:
        await rm.close()


@pytest.fixture
def script(js: JetStreamContext, stream: Any) -> Script:
    return Script(js, stream.prefix)


@pytest.fixture
def fold(script: Script, projector: Projector, js: JetStreamContext, stream: Any) -> Fold:
    return Fold(script, projector, js, stream)
