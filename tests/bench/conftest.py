"""Benchmark fixtures: the session's nats-server, a fresh stream and a fresh database."""

from __future__ import annotations

import pytest

from runstream.testing.plugin import StreamNames
from tests.bench.support import BenchEnv, raise_fd_limit


@pytest.fixture
def bench_env(nats_url: str, stream_names: StreamNames, database_url: str) -> BenchEnv:
    raise_fd_limit()  # the services started from here inherit it
    return BenchEnv(
        nats_url=nats_url,
        stream=stream_names.stream,
        prefix=stream_names.prefix,
        database_url=database_url,
    )
