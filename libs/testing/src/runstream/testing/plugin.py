"""Pytest fixtures chaining real resources: nats-server -> client; Postgres -> fresh database.

Postgres comes from DATABASE_URL when set, else a throwaway cluster started from the
machine's binaries. Where a Docker engine exists and RUNSTREAM_TESTCONTAINERS=1, the
servers come from testcontainers instead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from runstream.testing.servers import NatsServer, PostgresCluster


def _use_testcontainers() -> bool:
    return os.environ.get("RUNSTREAM_TESTCONTAINERS") == "1" and shutil.which("docker") is not None


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    if _use_testcontainers():  # pragma: no cover - needs a Docker engine
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster.dsn
    finally:
        cluster.cleanup()


def _with_db(dsn: str, db: str) -> str:
    base, _, _ = dsn.rpartition("/")
    query = ""
    if "?" in dsn.rsplit("/", 1)[1]:
        query = "?" + dsn.rsplit("?", 1)[1]
    return f"{base}/{db}{query}"


@pytest_asyncio.fixture
async def database_url(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"rs_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_db(postgres_admin_dsn, name)
    finally:
        admin = await asyncpg.connect(postgres_admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass(frozen=True)
class StreamNames:
    """A fresh stream and subject prefix for one test, so tests never see each other."""

    stream: str
    prefix: str


@pytest.fixture
def stream_names() -> StreamNames:
    tag = secrets.token_hex(4)
    return StreamNames(stream=f"RS_{tag.upper()}", prefix=f"t{tag}")


@pytest_asyncio.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url, name="rs-test")
    try:
        yield client
    finally:
        await client.drain()


@pytest_asyncio.fixture
async def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def bus_settings(nats_url: str, stream_names: StreamNames) -> object:
    from runstream.bus import BusSettings

    return BusSettings(
        url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix,
        datasets_bucket=f"DS_{stream_names.stream}",
    )


@pytest_asyncio.fixture
async def bus(bus_settings: object) -> AsyncIterator[object]:
    """A connected, provisioned Bus on a fresh stream; the stream is deleted afterwards."""
    from runstream.bus import Bus

    async with Bus.connect(bus_settings, name="rs-test") as b:  # type: ignore[arg-type]
        await b.provision()
        try:
            yield b
        finally:
            with contextlib.suppress(Exception):
                await b.js.delete_stream(b.stream)
            with contextlib.suppress(Exception):
                await b.js.delete_object_store(b.settings.datasets_bucket)
