"""Issue 2 figures: submits per second (p50/p99 latency) at 32 concurrent clients against
one gateway process, and projector events folded per second.

Submits: the gateway and the projector run as subprocesses; each of 32 client tasks
holds one keep-alive connection and submits to sessions of its own (a session takes one
analysis at a time), created beforehand and not timed. Afterwards every submitted
message must be in the read models as `pending`.

Folding: N mixed events (whole analyses: requested, started, steps with progress and
logs, script, execution, settled) are published first; then the projector starts and
the clock runs from its consumer being ready until its checkpoint reaches the last
sequence. Afterwards the read models must hold every analysis, step and log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runstream.bus import Bus
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    Column,
    Event,
    ExecutionCompleted,
    ExecutionStarted,
    Lock,
    LogAppended,
    ScriptGenerated,
    SessionCreated,
    StepCompleted,
    StepProgressed,
    StepStarted,
    new_id,
)
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


# --- projector folding ----------------------------------------------------------------


def _analysis(sid: str, owner: str, t: datetime) -> list[Event]:
    """The events of one whole analysis, as the pipeline writes them (36 events)."""
    mid, umid = new_id(), new_id()
    lock = Lock(message_id=mid, acquired_at=t, expires_at=t + timedelta(minutes=30))

    def at(i: int) -> datetime:
        return t + timedelta(milliseconds=10 * i)

    events: list[Event] = [
        AnalysisRequested(
            event_id=new_id(),
            at=at(0),
            session_id=sid,
            lock=lock,
            message_id=mid,
            user_message_id=umid,
            owner=owner,
            question="average revenue by region",
        ),
        AnalysisStarted(
            event_id=new_id(), at=at(1), session_id=sid, message_id=mid, worker="bench"
        ),
    ]
    i = 2
    for index, step in enumerate(STEPS, 1):
        m: dict[str, Any] = {"session_id": sid, "message_id": mid}
        events += [
            StepStarted(event_id=new_id(), at=at(i), step=step, index=index, total=len(STEPS), **m),
            LogAppended(
                event_id=new_id(), at=at(i), text=f"Step {index}/5: {step}...", step=step, **m
            ),
            StepProgressed(event_id=new_id(), at=at(i + 1), step=step, progress=50.0, **m),
            StepProgressed(event_id=new_id(), at=at(i + 2), step=step, progress=90.0, **m),
            LogAppended(
                event_id=new_id(),
                at=at(i + 3),
                level="success",
                text=f"{step} done",
                step=step,
                **m,
            ),
            StepCompleted(event_id=new_id(), at=at(i + 3), step=step, duration_ms=30, **m),
        ]
        i += 4
        if step == "script":
            events.append(
                ScriptGenerated(
                    event_id=new_id(),
                    at=at(i),
                    sql="SELECT region, avg(revenue) FROM data GROUP BY region",
                    explanation="average by region",
                    planner="rules",
                    **m,
                )
            )
        if step == "execute":
            events += [
                ExecutionStarted(event_id=new_id(), at=at(i), **m),
                ExecutionCompleted(
                    event_id=new_id(),
                    at=at(i + 1),
                    row_count=4,
                    columns=[
                        Column(name="region", type="VARCHAR"),
                        Column(name="avg_revenue", type="DOUBLE"),
                    ],
                    rows=[["North", 1.5], ["South", 2.5], ["East", 3.5], ["West", 4.5]],
                    **m,
                ),
            ]
    events.append(
        AnalysisSettled(
            event_id=new_id(),
            at=at(i + 2),
            session_id=sid,
            lock=None,
            message_id=mid,
            status="completed",
            summary="4 rows",
        )
    )
    return events


@pytest.mark.timeout(600)
async def test_bench_projector_events_folded_per_second(bench_env: BenchEnv) -> None:
    from runstream.projector.service import ProjectorSettings, run_projector

    t0 = datetime.now(UTC)
    analyses: list[list[Event]] = []
    sessions: list[Event] = []
    count = 0
    while count < FOLD_EVENTS:
        sid = new_id()
        sessions.append(SessionCreated(event_id=new_id(), at=t0, session_id=sid, owner="bench"))
        for k in range(4):  # four analyses per session, one after the other
            analyses.append(_analysis(sid, "bench", t0 + timedelta(seconds=k)))
        count += 1 + sum(len(a) for a in analyses[-4:])
    n_logs = sum(isinstance(e, LogAppended) for a in analyses for e in a)

    async with Bus.connect(bench_env.bus_settings(), name="bench-publisher") as bus:
        await bus.provision()
        await asyncio.gather(*(bus.publish(e) for e in sessions))
        # One task per session: its analyses in order; sessions interleave in the stream.
        by_session = [analyses[i : i + 4] for i in range(0, len(analyses), 4)]
        gate = asyncio.Semaphore(64)

        async def publish_session(group: list[list[Event]]) -> None:
            async with gate:
                for events in group:
                    for event in events:
                        await bus.publish(event)

        began = time.perf_counter()
        await asyncio.gather(*(publish_session(g) for g in by_session))
        publish_s = time.perf_counter() - began
        last = await bus.last_seq()
    assert last == count

    settings = ProjectorSettings(
        nats_url=bench_env.nats_url,
        stream=bench_env.stream,
        prefix=bench_env.prefix,
        datasets_bucket=f"DS_{bench_env.stream}",
        database_url=bench_env.database_url,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        began = time.perf_counter()
        conn = await asyncpg.connect(bench_env.database_url)
        try:
            await conn.execute("SET search_path TO runstream")
            deadline = time.monotonic() + 300
            while (
                await conn.fetchval(
                    "SELECT seq FROM projection_checkpoints WHERE name = 'projector'"
                )
                or 0
            ) < last:
                assert not task.done(), task.result()
                assert time.monotonic() < deadline, "projector did not finish within 300 s"
                await asyncio.sleep(0.01)
            fold_s = time.perf_counter() - began
            completed = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'completed'"
            )
            steps = await conn.fetchval(
                "SELECT count(*) FROM message_steps WHERE status = 'completed'"
            )
            logs = await conn.fetchval("SELECT count(*) FROM message_logs")
            results = await conn.fetchval("SELECT count(*) FROM messages WHERE result IS NOT NULL")
            poison = await conn.fetchval("SELECT count(*) FROM poison_events")
            idle = await conn.fetchval(
                "SELECT count(*) FROM sessions WHERE status = 'idle' AND active_message_id IS NULL"
            )
        finally:
            await conn.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)

    assert poison == 0
    assert completed == results == len(analyses)
    assert steps == len(analyses) * len(STEPS)
    assert logs == n_logs
    assert idle == len(sessions)
    print(
        f"\n[bench fold] published {last} events ({len(analyses)} analyses in "
        f"{len(sessions)} sessions) in {publish_s:.2f} s ({last / publish_s:.0f} events/s "
        f"publish, 64 concurrent publishers); projector folded {last} events in "
        f"{fold_s:.2f} s -> {last / fold_s:.0f} events/s "
        f"(batch {settings.batch_size}, in-process, checkpoint polled every 10 ms)"
    )
