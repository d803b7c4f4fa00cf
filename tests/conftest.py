"""Fixtures for the cross-service suites: a whole stack (projector + gateways, optionally
the workers) in this process, on the session's nats-server and a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from runstream.testing.plugin import StreamNames
from tests.stack import run_stack


@pytest_asyncio.fixture
async def stack(nats_url: str, stream_names: StreamNames, database_url: str) -> AsyncIterator[Any]:
    """Projector + one gateway on a fresh stream and database (no workers)."""
    async with run_stack(nats_url=nats_url, stream=stream_names.stream,
                         prefix=stream_names.prefix, database_url=database_url) as s:
        yield s


@pytest.fixture
def stack_factory(nats_url: str, stream_names: StreamNames, database_url: str) -> Any:
    """`async with stack_factory(gateways=2, workers=True, overrides={...}) as stack:`"""
    def make(**kw: Any) -> Any:
        return run_stack(nats_url=nats_url, stream=stream_names.stream,
                         prefix=stream_names.prefix, database_url=database_url, **kw)

    return make
