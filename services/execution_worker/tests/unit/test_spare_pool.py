"""The pool of spare sandbox children, run for real: bounded, reaped, closed, never leaked.

Children are counted through /proc as children of this process; every wait is a
condition polled against a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from runstream.bus import Bus
from runstream.execution_worker.pool import CHILD_MODULE, SparePool, spawn_child
from runstream.execution_worker.sandbox import SandboxError, SandboxLimits, run_sandboxed
from runstream.execution_worker.settings import ExecutionWorkerSettings
from runstream.execution_worker.worker import ExecutionWorker
from runstream.pipeline import run_pipeline_worker
from runstream.testing import wait_until
from runstream.testing.procs import children, gone

CSV = b"x\n1\n2\n3\n"
SUM = "SELECT sum(x) AS s FROM data"
ENDLESS = "SELECT count(*) FROM range(1000000000000)"


def sandbox_children() -> list[int]:
    """Live sandbox children of this process (a zombie has no cmdline, so is not one)."""
    return [c.pid for c in children(os.getpid()) if CHILD_MODULE in c.cmdline]


def zombies() -> list[int]:
    return [c.pid for c in children(os.getpid()) if c.zombie]


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    async def probe() -> Any:
        return condition()

    return await wait_until(probe, timeout=timeout, interval=0.02)


async def query(pool: SparePool | None, sql: str = SUM, **kw: Any) -> Any:
    return await run_sandboxed(
        data=CSV, fmt="csv", table_name="data", sql=sql,
        limits=SandboxLimits(timeout_s=kw.pop("timeout_s", 30.0)), pool=pool, **kw,
    )  # fmt: skip


@pytest.fixture(autouse=True)
async def no_sandbox_child_outlives_a_test():
    # Each test starts and ends with no sandbox child of this process, and no zombie.
    await until(lambda: not sandbox_children() and not zombies())
    yield
    assert sandbox_children() == [], "a sandbox child outlived its test"
    assert zombies() == [], "a child was never reaped"


async def test_a_spare_child_serves_the_next_query_and_is_never_reused():
    pids: list[int] = []
    async with SparePool(1, idle_s=60) as pool:
        for _ in range(3):
            waiting = await until(pool.pids)
            result = await query(pool, on_start=pids.append)
            assert result.rows == [[6]]
            assert pids[-1] == waiting[0], "the query ran on the spare that was waiting"
        [spare] = await until(pool.pids)
        assert spare not in pids, "a fresh spare is waiting"
    assert len(set(pids)) == 3, "one child per query"
    assert gone(spare), "closing the pool kills and reaps the spare"


async def test_concurrent_queries_never_grow_the_pool_beyond_its_bound():
    # The old single-spare slot leaked one child per overlapping take: 29 -> 57 processes.
    bound, in_flight = 2, 6
    most = 0

    async def sample() -> None:
        nonlocal most
        while True:
            most = max(most, len(sandbox_children()))
            await asyncio.sleep(0.005)

    async with SparePool(bound, idle_s=60) as pool:
        sampler = asyncio.create_task(sample())
        try:
            for _ in range(3):
                results = await asyncio.gather(*(query(pool) for _ in range(in_flight)))
                assert [r.rows for r in results] == [[[6]]] * in_flight
                assert pool.pending <= bound
                assert len(sandbox_children()) <= bound, sandbox_children()
                assert zombies() == []
        finally:
            sampler.cancel()
        await until(lambda: len(pool.pids()) == bound)
        assert sorted(pool.pids()) == sorted(sandbox_children())
    assert most <= in_flight + bound, f"{most} sandbox children at once"


async def test_an_idle_spare_is_killed_and_reaped_after_the_idle_timeout():
    idle_s = 0.5
    started = time.monotonic()
    async with SparePool(1, idle_s=idle_s) as pool:
        [spare] = await until(pool.pids)
        await until(lambda: gone(spare), timeout=idle_s + 10)
        lived = time.monotonic() - started
        assert lived >= idle_s, f"reaped after {lived:.2f} s, before its idle timeout"
        assert pool.pending == 0 and sandbox_children() == [], "not replaced while idle"
        # The next query starts its own child and the pool fills up behind it (with a long
        # timeout now, so a slow machine cannot reap the new spare before we look).
        pool.idle_s = 60
        pids: list[int] = []
        assert (await query(pool, on_start=pids.append)).rows == [[6]]
        [fresh] = await until(pool.pids)
        assert fresh not in (spare, *pids)


async def test_a_spare_that_died_is_reaped_and_replaced_on_the_next_take():
    async with SparePool(1, idle_s=60) as pool:
        [spare] = await until(pool.pids)
        os.kill(spare, signal.SIGKILL)
        await until(lambda: gone(spare))
        pids: list[int] = []
        assert (await query(pool, on_start=pids.append)).rows == [[6]]
        assert pids[0] != spare, "the dead spare was skipped"
        [fresh] = await until(pool.pids)
        assert fresh != spare and sandbox_children() == [fresh]


async def test_a_cancelled_query_and_a_crashed_child_leave_only_the_spares():
    async with SparePool(1, idle_s=60) as pool:
        running = asyncio.Event()
        pids: list[int] = []
        task = asyncio.create_task(
            query(pool, ENDLESS, on_start=pids.append, on_running=running.set, timeout_s=60)
        )
        await asyncio.wait_for(running.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(pids[0]), "cancel kills and reaps the running child"

        running.clear()
        task = asyncio.create_task(
            query(pool, ENDLESS, on_start=pids.append, on_running=running.set, timeout_s=60)
        )
        await asyncio.wait_for(running.wait(), 30)
        os.kill(pids[1], signal.SIGKILL)  # the child crashes mid-query
        with pytest.raises(SandboxError):
            await task
        assert gone(pids[1])
        await until(lambda: len(pool.pids()) == 1)
        assert sandbox_children() == pool.pids() and zombies() == []


async def test_closing_the_pool_kills_even_spares_still_starting_and_later_takes_add_none():
    started: list[int] = []
    gate = asyncio.Event()

    async def slow_spawn() -> Any:  # a spare whose start is not over when the pool closes
        proc = await spawn_child()
        started.append(proc.pid)
        await gate.wait()
        return proc

    pool = SparePool(2, idle_s=60, spawn=slow_spawn)
    await pool.__aenter__()
    await until(lambda: len(started) == 2)
    assert pool.pids() == [] and pool.pending == 2
    closing = asyncio.create_task(pool.close())
    await until(lambda: pool.closed)
    gate.set()
    await asyncio.wait_for(closing, 10)
    assert pool.pending == 0
    assert all(gone(pid) for pid in started)
    assert (await query(pool)).rows == [[6]]  # a fresh child; nothing refills a closed pool
    assert pool.pending == 0


async def test_the_worker_caps_its_spares_and_kills_them_when_it_stops(bus: Bus):
    s = bus.settings
    settings = ExecutionWorkerSettings(
        nats_url=s.url, stream=s.stream, prefix=s.prefix, datasets_bucket=s.datasets_bucket,
        concurrency=1, sandbox_spares=3,
    )  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    workers: list[ExecutionWorker] = []
    task = asyncio.create_task(run_pipeline_worker(
        "execution-worker", settings, ExecutionWorker.builder(settings, out=workers), stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        [worker] = workers
        assert worker.spares is not None
        assert worker.spares.size == 1, "no more spares than concurrent queries"
        [spare] = await until(worker.spares.pids)
        assert sandbox_children() == [spare]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert gone(spare), "the worker's shutdown killed and reaped its spare"
