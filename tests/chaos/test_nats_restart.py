"""Chaos: the NATS server restarts in the middle of an analysis.

Every service reconnects; JetStream (file storage) keeps the stream and the consumers;
the analysis completes; a client that lost its stream resumes from its last id and
sees every event exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from runstream.testing import NatsServer, free_port
from tests.integration.conftest import new_session, sse_frames
from tests.integration.pipeline_support import FakeChatCompletions, sales_csv
from tests.stack import run_stack

SLOW_SQL = (
    "SELECT region, avg(revenue) AS avg_revenue, "
    "(SELECT count(*) FROM range(14000) a, range(14000) b "
    " WHERE (a.range * 7 + b.range) % 13 = 5) AS pairs "
    "FROM data GROUP BY region ORDER BY region"
)


@pytest.fixture
def own_nats(tmp_path):
    server = NatsServer(store_dir=tmp_path / "js", port=free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_an_analysis_survives_a_nats_restart_and_streams_resume(
    own_nats, stream_names, database_url,
):
    async with FakeChatCompletions(stalls=0, sql=SLOW_SQL) as fake, run_stack(
        nats_url=own_nats.url, stream=stream_names.stream, prefix=stream_names.prefix,
        database_url=database_url, workers=True,
        worker_overrides={"planner": "openai", "openai_base_url": fake.base_url,
                          "openai_model": "fake", "openai_api_key": "k",
                          "ack_wait_s": 3.0, "sandbox_timeout_s": 60.0},
    ) as stack, stack.client() as c:
        sid = await new_session(c)
        up = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "s"},
                          content=sales_csv())
        assert up.status_code == 201
        mid = (await c.post(f"/api/sessions/{sid}/analyses",
                            json={"question": "average revenue by region"})).json()["message_id"]
        seen: list[tuple[int, str]] = []

        async def read_until(pred) -> None:
            last = seen[-1][0] if seen else 0
            async with c.stream("GET", f"/api/messages/{mid}/events",
                                params={"after_seq": last}) as r:
                async for f in sse_frames(r):
                    seen.append((f.id, f.event))
                    if pred():
                        return

        await asyncio.wait_for(read_until(lambda: seen[-1][1] == "execution_started"), 60)
        await asyncio.to_thread(own_nats.restart)  # same port, same store

        async def finish() -> None:
            while not seen or seen[-1][1] != "analysis_settled":
                try:
                    await read_until(lambda: seen[-1][1] == "analysis_settled")
                except (httpx.HTTPError, httpx.StreamError):
                    await asyncio.sleep(0.2)  # the gateway is reconnecting; try again

        await asyncio.wait_for(finish(), 120)
        final = (await c.get(f"/api/messages/{mid}", params={"min_seq": seen[-1][0]})).json()
    ids = [i for i, _ in seen]
    assert ids == sorted(set(ids)), "no gap-filling duplicate, in order"
    counts = Counter(t for _, t in seen)
    assert counts["analysis_settled"] == 1 and counts["execution_completed"] == 1
    assert final["status"] == "completed", final.get("error")
    assert [s["step"] for s in final["steps"]] == [
        "context", "plan", "script", "execute", "chart"]
