"""Issue 2 figures: submits per second (p50/p99 latency) at 32 concurrent clients against
one gateway process.

Submits: the gateway and the projector run as subprocesses; each of 32 client tasks
holds one keep-alive connection and submits to sessions of its own (a session takes one
analysis at a time), created beforehand and not timed. Afterwards every submitted
message must be in the read models as `pending`.
(The projector's figures: test_bench_projector.py.)
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runstream.bus import Bus
from runstream.contracts import SessionCreated, encode, new_id
from tests.bench.support import (
    BenchEnv,
    RawHttp,
    run_services,
    summary_ms,
    tree_cpu_s,
)

CLIENTS = 32
SUBMITS_PER_CLIENT = int(os.environ.get("BENCH_SUBMITS_PER_CLIENT", "40"))
WARMUP_PER_CLIENT = 2


@pytest.mark.timeout(600)
async def test_bench_submits_per_second_at_32_concurrent_clients(
    bench_env: BenchEnv, tmp_path: Path
) -> None:
    total = CLIENTS * (SUBMITS_PER_CLIENT + WARMUP_PER_CLIENT)
    async with run_services(bench_env, tmp_path) as stack:
        # Sessions first (not timed): one per submit.
        async with stack.client() as http:
            gate = asyncio.Semaphore(CLIENTS)

            async def create() -> str:
                async with gate:
                    r = await http.post("/api/sessions", json={"title": "bench"})
                    assert r.status_code == 201, r.text
                    return str(r.json()["session_id"])

            sessions = await asyncio.gather(*(create() for _ in range(total)))
        per_client = [sessions[i::CLIENTS] for i in range(CLIENTS)]
        host, port = stack.url.removeprefix("http://").split(":")
        latencies: list[float] = []
        accepted: list[dict[str, Any]] = []
        start = asyncio.Event()

        async def client(mine: list[str]) -> tuple[float, float]:
            async with RawHttp(host, int(port), stack.headers()) as conn:
                for sid in mine[:WARMUP_PER_CLIENT]:  # warm the connection and the gateway
                    status, body = await conn.request(
                        "POST", f"/api/sessions/{sid}/analyses", {"question": "warm-up"}
                    )
                    assert status == 202, body
                    accepted.append(body)
                await start.wait()
                began = time.perf_counter()
                for sid in mine[WARMUP_PER_CLIENT:]:
                    t0 = time.perf_counter()
                    status, body = await conn.request(
                        "POST",
                        f"/api/sessions/{sid}/analyses",
                        {"question": "average revenue by region"},
                    )
                    latencies.append(time.perf_counter() - t0)
                    assert status == 202, body
                    accepted.append(body)
                return began, time.perf_counter()

        tasks = [asyncio.create_task(client(mine)) for mine in per_client]
        await asyncio.sleep(0.5)  # every connection open and warmed
        start.set()
        spans = await asyncio.gather(*tasks)
        elapsed = max(end for _, end in spans) - min(began for began, _ in spans)
        measured = CLIENTS * SUBMITS_PER_CLIENT
        stack.gateway().check_alive()

        # Correctness: every accepted submit is folded into the read models as pending.
        last = max(int(b["as_of_seq"]) for b in accepted)
        conn = await asyncpg.connect(bench_env.database_url)
        try:
            await conn.execute("SET search_path TO runstream")
            deadline = time.monotonic() + 60
            while (
                await conn.fetchval(
                    "SELECT seq FROM projection_checkpoints WHERE name = 'projector'"
                )
                or 0
            ) < last:
                assert time.monotonic() < deadline, "projector did not catch up within 60 s"
                await asyncio.sleep(0.05)
            pending = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'pending'"
                " AND message_id = ANY($1::text[])",
                [b["message_id"] for b in accepted],
            )
        finally:
            await conn.close()
        assert len({b["message_id"] for b in accepted}) == total
        assert pending == total

    print(
        f"\n[bench submit] {measured} submits by {CLIENTS} concurrent clients "
        f"(keep-alive, one session each) in {elapsed:.2f} s -> "
        f"{measured / elapsed:.0f} submits/s; latency {summary_ms(latencies)}; "
        f"mean {1000 * sum(latencies) / len(latencies):.1f} ms"
    )



# --- open loop: a fixed offered rate, whatever the answers ------------------------------

OPEN_LOOP = [
    (float(rate), float(seconds))
    for rate, seconds in (
        phase.split(":") for phase in os.environ.get("BENCH_OPEN_LOOP", "500:30,1000:30").split(",")
    )
]
OPEN_LOOP_CONNECTIONS = 128
# > 1: the gateway as that many worker processes on one port (SO_REUSEPORT)
OPEN_LOOP_GATEWAY_WORKERS = int(os.environ.get("BENCH_SUBMIT_GATEWAY_WORKERS", "1"))


def _nearest(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@pytest.mark.timeout(900)
async def test_bench_submit_open_loop(bench_env: BenchEnv, tmp_path: Path) -> None:
    """Submits offered at a fixed rate (500/s for 30 s, then 1,000/s for 30 s) by 128
    owners, one keep-alive connection each (the sessions are dealt round-robin); each
    submit is sent at its intended time (after the owner's previous one, when that is
    still in flight) and its answer time is measured from that intended time, so a slow
    gateway cannot hide its queue (no coordinated omission). Each submit goes to a
    session of its own, created beforehand straight on the stream (not timed)."""
    total = sum(int(rate * seconds) for rate, seconds in OPEN_LOOP)
    owners = [f"bench-{i}" for i in range(OPEN_LOOP_CONNECTIONS)]
    workers = {"RUNSTREAM_GATEWAY_WORKERS": str(OPEN_LOOP_GATEWAY_WORKERS)}
    async with run_services(bench_env, tmp_path, gateway=workers) as stack:
        async with Bus.connect(bench_env.bus_settings(), name="bench-sessions") as bus:
            t0 = datetime.now(UTC)
            sessions = [new_id() for _ in range(total)]
            acks = [
                await bus.js.publish_async(bus.subjects.session(sid), encode(SessionCreated(
                    event_id=new_id(), at=t0, session_id=sid, owner=owners[i % len(owners)])),
                    stream=bus.stream)
                for i, sid in enumerate(sessions)
            ]  # fmt: skip
            last = max(ack.seq for ack in await asyncio.gather(*acks))
        await _wait_folded(bench_env.database_url, last)
        host, port = stack.url.removeprefix("http://").split(":")
        conns = [RawHttp(host, int(port), stack.headers(owner)) for owner in owners]
        locks = [asyncio.Lock() for _ in conns]
        for conn in conns:
            await conn.__aenter__()
        results: list[list[tuple[float, int, float]]] = [[] for _ in OPEN_LOOP]

        async def submit(phase: int, i: int, intended: float) -> None:
            k = i % len(conns)
            async with locks[k]:
                status, _ = await conns[k].request(
                    "POST", f"/api/sessions/{sessions[i]}/analyses", {"question": "avg revenue"}
                )
            done = time.perf_counter()
            results[phase].append((done - intended, status, done))

        tasks: list[asyncio.Task[None]] = []
        spans: list[tuple[float, float]] = []
        gateway_cpu: list[float] = []
        # The load generator's own full collections (pytest's heap and the sessions made
        # above, ~100k objects) paused every submit in flight for up to ~90 ms, counted
        # as the gateway's latency: out of the collector's sight while timing.
        gc.collect()
        gc.freeze()
        start = time.perf_counter()
        i = 0
        for phase, (rate, seconds) in enumerate(OPEN_LOOP):
            cpu0 = tree_cpu_s(stack.gateway().pid)
            for n in range(int(rate * seconds)):
                intended = start + n / rate
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(submit(phase, i, intended)))
                i += 1
            spans.append((start, start + seconds))
            start += seconds
            await asyncio.gather(*tasks)  # its answers, before the next phase's clock
            gateway_cpu.append(tree_cpu_s(stack.gateway().pid) - cpu0)
        gc.unfreeze()
        for conn in conns:
            await conn.__aexit__()
        stack.gateway().check_alive()

    print(f"\n[bench submit open-loop] {total} submits by {len(owners)} owners (one keep-alive "
          "connection each), each to its own session; latency from the intended send time; "
          f"the gateway as {OPEN_LOOP_GATEWAY_WORKERS} process(es)")
    print("  offered/s  achieved/s   p50 ms   p99 ms  p99.9 ms   max ms  non-202"
          "  gateway CPU/submit")
    for phase, (rate, seconds) in enumerate(OPEN_LOOP):
        got = results[phase]
        latencies = [1000 * latency for latency, _, _ in got]
        errors = sum(1 for _, status, _ in got if status != 202)
        # Answers per second from the phase's start to its last answer.
        achieved = len(got) / (max(done for _, _, done in got) - spans[phase][0])
        print(f"  {rate:9.0f}  {achieved:10.0f}  {_nearest(latencies, 50):7.1f}  "
              f"{_nearest(latencies, 99):7.1f}  {_nearest(latencies, 99.9):8.1f}  "
              f"{max(latencies):7.1f}  {errors:7d}  "
              f"{1000 * gateway_cpu[phase] / len(got):.2f} ms")
        assert len(got) == int(rate * seconds) and errors == 0


async def _wait_folded(database_url: str, seq: int, timeout: float = 120) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while (await conn.fetchval(
            "SELECT coalesce(max(seq), 0) FROM runstream.projection_checkpoints"
        )) < seq:
            assert time.monotonic() < deadline, "the sessions were not folded in time"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
