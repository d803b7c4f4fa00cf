"""Benchmark fixtures: the session's nats-server, a fresh stream and a fresh database."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

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


@pytest.fixture(autouse=True)
def quiet_in_process_logs() -> Iterator[None]:
    """Only errors from in-process library code (publishers, an in-process projector):
    the figures are the output; the subprocess services log to files under tmp_path."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.reset_defaults()
