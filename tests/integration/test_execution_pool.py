"""Bursts of concurrent analyses against an execution worker process: its spare sandbox
children stay within their bound, none is left a zombie, and its memory stays flat.

The execution worker runs as its own process (`python -m runstream.execution_worker`),
so its children and its RSS are its own; the gateway, projector (real Postgres),
analysis and chart workers run in the test process, on a real nats-server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.analysis_worker.worker import run_worker as run_analysis
from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import run_worker as run_chart
from runstream.execution_worker.pool import CHILD_MODULE
from runstream.testing import wait_until
from runstream.testing.procs import children, gone, proc
from tests.integration.conftest import HIGH_RATE_LIMITS, new_session
from tests.integration.pipeline_support import running, sales_csv

CONCURRENCY = 3
SPARES = 2
IN_FLIGHT = 6  # analyses per burst: twice the worker's concurrency
BURSTS = 10
MiB = 1024 * 1024
# Less than half a spare (~44 MiB each): one leaked child fails it; the worker's own heap
# settling after burst 1 does not.
RSS_SLACK = 20 * MiB


def sandbox_children(pid: int) -> list[int]:
    return [c.pid for c in children(pid) if CHILD_MODULE in c.cmdline]


def zombies(pid: int) -> list[int]:
    return [c.pid for c in children(pid) if c.zombie]


def rss_with_children(pid: int) -> int:
    me = proc(pid)
    assert me is not None, "the execution worker died"
    return me.rss + sum(c.rss for c in children(pid))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def settled_rss(pid: int, timeout: float = 20.0) -> int:
    """RSS of the worker plus children once its spares are up and the figure holds still
    (a refilled spare is still importing DuckDB right after a burst)."""
    samples: list[int] = []

    async def steady() -> bool:
        if len(sandbox_children(pid)) == SPARES:
            samples.append(rss_with_children(pid))
        else:
            samples.clear()
        last = samples[-3:]
        return len(last) == 3 and max(last) - min(last) <= MiB

    await wait_until(steady, timeout=timeout, interval=0.25)
    return samples[-1]


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runstream.execution_worker"], env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _settings(cls: type, s: Any, **kw: Any) -> Any:
    return cls(nats_url=s.nats_url, stream=s.stream, prefix=s.prefix,
               datasets_bucket=s.datasets_bucket, backoff_s=(0.05, 0.1, 0.2), **kw)


async def test_bursts_of_concurrent_analyses_keep_the_spare_children_bounded_and_memory_flat(
    stack_factory, tmp_path: Path,
):
    async with stack_factory(overrides=HIGH_RATE_LIMITS) as stack:
        s = stack.settings
        env = {
            **os.environ,
            "RUNSTREAM_NATS_URL": s.nats_url, "RUNSTREAM_STREAM": s.stream,
            "RUNSTREAM_PREFIX": s.prefix, "RUNSTREAM_DATASETS_BUCKET": s.datasets_bucket,
            "RUNSTREAM_CONCURRENCY": str(CONCURRENCY), "RUNSTREAM_SANDBOX_SPARES": str(SPARES),
            "RUNSTREAM_LOG_JSON": "true",
        }
        log = tmp_path / "execution-worker.log"
        worker = _start_worker(env, log)
        most = 0

        async def sample() -> None:  # the most sandbox children alive at once, mid-burst
            nonlocal most
            while True:
                most = max(most, len(sandbox_children(worker.pid)))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        figures: dict[int, tuple[int, int, int]] = {}
        try:
            await wait_until(lambda: _async(len(sandbox_children(worker.pid)) == SPARES),
                             timeout=30)
            async with running(partial(run_analysis, _settings(AnalysisWorkerSettings, s)),
                               partial(run_chart, _settings(ChartWorkerSettings, s))), \
                    stack.client(timeout=120) as c:
                sids = []
                for _ in range(IN_FLIGHT):  # a session runs one analysis at a time
                    sid = await new_session(c)
                    up = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"},
                                      content=sales_csv())
                    assert up.status_code == 201, up.text
                    sids.append(sid)

                async def analyse(sid: str) -> dict[str, Any]:
                    r = await c.post(f"/api/sessions/{sid}/analyses",
                                     json={"question": "average revenue by region"},
                                     headers={"Prefer": "wait=60"})
                    assert r.status_code == 200, r.text
                    return dict(r.json())

                for burst in range(1, BURSTS + 1):
                    answers = await asyncio.gather(*(analyse(sid) for sid in sids))
                    assert [a["status"] for a in answers] == ["completed"] * IN_FLIGHT, (
                        answers, log.read_text()[-3000:])
                    assert all(a["result"]["row_count"] == 4 for a in answers)
                    # Every execution is over: only spares may be left, and no zombie.
                    live = sandbox_children(worker.pid)
                    assert len(live) <= SPARES, f"burst {burst}: {len(live)} sandbox children"
                    assert zombies(worker.pid) == [], f"burst {burst}: unreaped children"
                    if burst in (1, BURSTS):
                        figures[burst] = (await settled_rss(worker.pid),
                                          len(sandbox_children(worker.pid)),
                                          open_fds(worker.pid))
            spares = sandbox_children(worker.pid)
        finally:
            sampler.cancel()
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    assert worker.returncode == 0, log.read_text()[-3000:]
    await wait_until(lambda: _async(all(gone(p) for p in spares)), timeout=10)

    (rss1, kids1, fds1), (rss10, kids10, fds10) = figures[1], figures[BURSTS]
    print(f"\nexecution worker + children after burst 1: {rss1 / MiB:.1f} MiB, "
          f"{kids1} sandbox children, {fds1} fds; after burst {BURSTS}: {rss10 / MiB:.1f} MiB, "
          f"{kids10} sandbox children, {fds10} fds; most at once {most} "
          f"(concurrency {CONCURRENCY} + {SPARES} spares)")
    assert most <= CONCURRENCY + SPARES
    assert rss10 <= rss1 + RSS_SLACK, f"RSS grew {rss1 / MiB:.1f} -> {rss10 / MiB:.1f} MiB"
    assert fds10 <= fds1 + 4, f"open fds grew {fds1} -> {fds10}"


async def _async(value: Any) -> Any:
    return value
