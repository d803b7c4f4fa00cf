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
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.bench.support import BenchEnv, RawHttp, run_services, summary_ms

CLIENTS = 32
SUBMITS_PER_CLIENT = int(os.environ.get("BENCH_SUBMITS_PER_CLIENT", "40"))
WARMUP_PER_CLIENT = 2
FOLD_EVENTS = int(os.environ.get("BENCH_FOLD_EVENTS", "20000"))
STEPS = ("context", "plan", "script", "execute", "chart")


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

