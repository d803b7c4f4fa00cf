"""Fault injection in `make test`: more work than the workers' concurrency, the projector
killed with SIGKILL mid-burst, Postgres restarted mid-burst. Each run ends with every
invariant of `support.verify` (all settled once, read models equal a rebuild, nothing
twice, no lock held)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest_asyncio

from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.bus import Bus
from runstream.contracts import Lock, SessionRead, StepCompleted, new_id, utcnow
from runstream.testing import PostgresCluster, wait_until
from tests.faults.support import (
    Services,
    burst,
    bus_settings,
    measure,
    open_sessions,
    position_sql,
    service_env,
    verify,
    wait_settled,
)
from tests.integration.conftest import HIGH_RATE_LIMITS
from tests.stack import TEST_PARTITIONS, run_stack

# With partitions, two projector replicas share them (and are both killed).
PROJECTORS = ["projector"] if TEST_PARTITIONS <= 1 else ["projector", "projector-2"]

# A burst of 4x the largest default worker concurrency (the analysis worker's), which is
# 16x the execution worker's.
BURST = 4 * AnalysisWorkerSettings().concurrency


async def _checkpoint(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(position_sql("runstream.projection_checkpoints")))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0
    finally:
        await conn.close()


async def _last_seq(bus: Bus) -> int:
    return await bus.last_seq()


async def test_a_burst_four_times_the_worker_concurrency_drains_at_default_settings(
    stack_factory: Any, database_url: str,
) -> None:
    async with stack_factory(workers=True, overrides=HIGH_RATE_LIMITS) as stack, \
            stack.client(timeout=60) as c:
        sessions = await open_sessions(c, BURST)
        async with Bus.connect(bus_settings(stack.settings), name="faults") as bus:
            b = await burst(c, sessions)
            drained = await wait_settled(bus, b.messages, timeout=120)
            verdict = await verify(bus, database_url, b.messages)
    print(f"\nburst: {BURST} concurrent analyses at default settings drained in "
          f"{drained:.1f} s ({verdict.completed}/{verdict.submitted} completed)")


async def test_the_verdict_counts_a_lost_row_a_duplicate_and_a_held_lock(
    stack_factory: Any, database_url: str,
) -> None:
    """The counts are measured: tamper with a clean run and each one moves."""
    async with stack_factory(workers=True) as stack, stack.client(timeout=60) as c:
        [sid, idle] = await open_sessions(c, 2)
        async with Bus.connect(bus_settings(stack.settings), name="faults") as bus:
            b = await burst(c, [sid])
            await wait_settled(bus, b.messages, timeout=60)
            assert (await verify(bus, database_url, b.messages)).clean
            [mid] = b.messages
            # A step completed twice (another event id, so the stream keeps both)...
            await bus.publish(StepCompleted(
                event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
                step="chart", duration_ms=1))
            # ... a lock left held on another session (by an event no worker acts on) ...
            now = utcnow()
            await bus.publish(SessionRead(
                event_id=new_id(), at=now, session_id=idle, owner="alice",
                lock=Lock(message_id=new_id(), acquired_at=now,
                          expires_at=now + timedelta(hours=1))))
            # ... and a log row gone from the live read models.
            await wait_until(lambda: _caught_up(database_url, bus), timeout=30)
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(
                    "DELETE FROM runstream.message_logs WHERE seq = (SELECT min(seq) FROM "
                    "runstream.message_logs WHERE message_id = $1)", mid)
            finally:
                await conn.close()
            verdict = await measure(bus, database_url, b.messages)
    assert (verdict.lost, verdict.duplicates) == (1, 1), verdict.problems
    assert verdict.stuck == 2, verdict.problems  # held in the stream and in session_locks


async def test_the_projector_killed_mid_burst_loses_and_repeats_nothing(
    stack_factory: Any, database_url: str, tmp_path: Any,
) -> None:
    async with stack_factory(projector=False, workers=True, overrides=HIGH_RATE_LIMITS) as stack, \
            stack.client(timeout=60) as c:
        services = Services(service_env(stack.settings, database_url), tmp_path)
        for name in PROJECTORS:
            services.start(name, "projector")
        try:
            if TEST_PARTITIONS > 1:  # every partition claimed and folding
                await wait_until(lambda: _partitions_up(database_url), timeout=60)
            sessions = await open_sessions(c, BURST)
            async with Bus.connect(bus_settings(stack.settings), name="faults") as bus:
                await wait_until(lambda: _caught_up(database_url, bus), timeout=30)
                b = await burst(c, sessions)
                for _ in range(2):  # twice, each time with more work arriving meanwhile
                    mark = await _checkpoint(database_url)
                    await wait_until(lambda m=mark: _beyond(database_url, m + 150),
                                     timeout=60, interval=0.01)
                    for name in PROJECTORS:
                        services.kill9(name)
                    down_at = await _last_seq(bus)
                    await wait_until(lambda d=down_at: _stream_beyond(bus, d + 100),
                                     timeout=60)
                    for name in PROJECTORS:
                        services.start(name, "projector")
                await wait_settled(bus, b.messages, timeout=120)
                await verify(bus, database_url, b.messages)
        finally:
            services.stop_all()


@pytest_asyncio.fixture
async def own_postgres() -> AsyncIterator[tuple[PostgresCluster, str]]:
    """A Postgres this test may restart, with one fresh database."""
    cluster = await asyncio.to_thread(PostgresCluster().start)
    try:
        name = f"rs_faults_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(cluster.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        yield cluster, cluster.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await asyncio.to_thread(cluster.cleanup)


async def test_a_postgres_restart_mid_burst_loses_and_repeats_nothing(
    own_postgres: tuple[PostgresCluster, str], nats_url: str, stream_names: Any,
) -> None:
    cluster, dsn = own_postgres
    async with run_stack(nats_url=nats_url, stream=stream_names.stream,
                         prefix=stream_names.prefix, database_url=dsn, workers=True,
                         overrides=HIGH_RATE_LIMITS, projectors=len(PROJECTORS)) as stack, \
            stack.client(timeout=60) as c:
        sessions = await open_sessions(c, BURST)
        async with Bus.connect(bus_settings(stack.settings), name="faults") as bus:
            b = await burst(c, sessions)
            mark = await _checkpoint(dsn)
            await wait_until(lambda: _beyond(dsn, mark + 150), timeout=60, interval=0.01)
            await asyncio.to_thread(cluster.stop)
            down_at = await _last_seq(bus)
            # The workers go on (they need only NATS); the projector waits for Postgres.
            await wait_until(lambda: _stream_beyond(bus, down_at + 200), timeout=60)
            await asyncio.to_thread(cluster.start)
            await wait_settled(bus, b.messages, timeout=120)
            await verify(bus, dsn, b.messages)


async def _caught_up(dsn: str, bus: Bus) -> bool:
    return await _checkpoint(dsn) >= await bus.last_seq()


async def _partitions_up(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM runstream.projection_checkpoints")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return False
    finally:
        await conn.close()
    return int(rows) >= TEST_PARTITIONS


async def _beyond(dsn: str, seq: int) -> bool:
    return await _checkpoint(dsn) >= seq


async def _stream_beyond(bus: Bus, seq: int) -> bool:
    return await bus.last_seq() >= seq
