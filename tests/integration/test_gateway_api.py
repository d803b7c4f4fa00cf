"""The spine through HTTP: submit, the lock across gateways, read-after-write, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import httpx

from runstream.contracts import LogAppended, new_id, utcnow
from tests.integration.conftest import HIGH_RATE_LIMITS, collect, new_session


async def _table_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for t in ("sessions", "messages", "message_logs", "session_locks", "datasets"):
            out[t] = await conn.fetchval(f"SELECT count(*) FROM runstream.{t}")
        return out
    finally:
        await conn.close()


async def test_a_submit_answers_at_once_and_the_message_is_readable_right_after(stack):
    async with stack.client() as c:
        sid = await new_session(c)
        r = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "how many rows?"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "pending" and body["as_of_seq"] > 0
        assert body["message_id"] != body["user_message_id"]
        m = await c.get(f"/api/messages/{body['message_id']}")
        assert m.status_code == 200, m.text
        msg = m.json()
        assert msg["status"] == "pending" and msg["question"] == "how many rows?"
        assert msg["as_of_seq"] >= body["as_of_seq"]
        status = (await c.get(f"/api/sessions/{sid}/analysis-status")).json()
        assert status["is_analyzing"] is True and status["message_id"] == body["message_id"]
        history = (await c.get(f"/api/sessions/{sid}/messages")).json()["messages"]
        assert [h["role"] for h in history] == ["user", "assistant"]


async def test_the_page_refresh_call_carries_what_a_steady_eta_needs(stack, database_url):
    """The gateway's clock and the running mean of each step: with a step row's
    `started_at`, a page that reloads mid-step finds the same time left as before."""
    async with stack.client() as c:
        sid = await new_session(c)
        before = datetime.now(UTC)
        status = (await c.get(f"/api/sessions/{sid}/analysis-status")).json()
        after = datetime.now(UTC)
        assert before <= datetime.fromisoformat(status["server_time"]) <= after
        assert isinstance(status["step_estimates"], dict)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO runstream.step_durations (step, count, mean_ms)"
                " VALUES ('execute', 2, 3210.4)")
        finally:
            await conn.close()
        status = (await c.get(f"/api/sessions/{sid}/analysis-status")).json()
        assert status["step_estimates"]["execute"] == 3210


async def test_two_gateways_and_200_concurrent_submits_have_exactly_one_winner(stack_factory):
    async with stack_factory(gateways=2, overrides=HIGH_RATE_LIMITS) as stack:
        async with stack.client(index=0) as a, stack.client(index=1) as b:
            sid = await new_session(a)
            await b.get(f"/api/sessions/{sid}")  # both gateways see it
            results = await asyncio.gather(*(
                (a if i % 2 else b).post(f"/api/sessions/{sid}/analyses",
                                         json={"question": f"q{i}"})
                for i in range(200)
            ))
    codes = [r.status_code for r in results]
    assert codes.count(202) == 1, codes
    assert codes.count(409) == 199
    winner = next(r.json()["message_id"] for r in results if r.status_code == 202)
    for r in results:
        if r.status_code == 409:
            body = r.json()
            assert body["active_message_id"] == winner
            assert body["error"]["code"] == "analysis_in_progress"
            assert body["error"]["details"]["active_message_id"] == winner


async def test_an_expired_lock_lets_the_next_submit_in(stack_factory):
    async with stack_factory(overrides={"lock_ttl_s": 0.3}) as stack, stack.client() as c:
        sid = await new_session(c)
        first = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "a"})
        assert first.status_code == 202
        refused = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "b"})
        assert refused.status_code == 409
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the lock expires by wall clock; poll the API, bounded
            second = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "b"})
            if second.status_code == 202 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert second.status_code == 202
        assert second.json()["message_id"] != first.json()["message_id"]


async def test_sse_resumes_from_last_event_id_with_no_gap_and_no_duplicate(stack):
    """A client disconnects mid-stream and resumes while events keep arriving."""
    from runstream.bus import Bus, BusSettings

    async with stack.client() as c:
        sid = await new_session(c)
        sub = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "q"})
        mid = sub.json()["message_id"]
        s = stack.settings
        bus_settings = BusSettings(url=s.nats_url, stream=s.stream, prefix=s.prefix)
        async with Bus.connect(bus_settings, name="writer") as bus:
            total = 120
            published: list[int] = []

            async def writer() -> None:
                for i in range(total):
                    p = await bus.publish(LogAppended(
                        event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
                        text=f"line {i}"))
                    published.append(p.seq)
                    if i % 10 == 0:
                        await asyncio.sleep(0.005)  # keep events arriving across the resume

            task = asyncio.create_task(writer())
            seen: list[int] = []
            texts: list[str] = []
            async with c.stream("GET", f"/api/sessions/{sid}/events") as r:
                assert r.status_code == 200
                assert r.headers["x-accel-buffering"] == "no"
                frames = await collect(r, lambda f: sum(x.event == "log_appended" for x in f) >= 30)
            seen += [f.id for f in frames]
            texts += [f.data["text"] for f in frames if f.event == "log_appended"]
            last = frames[-1].id
            async with c.stream("GET", f"/api/sessions/{sid}/events",
                                headers={"Last-Event-ID": str(last)}) as r:
                frames = await collect(r, lambda f: len(texts) + sum(
                    x.event == "log_appended" for x in f) >= total)
            await task
        seen += [f.id for f in frames]
        texts += [f.data["text"] for f in frames if f.event == "log_appended"]
    assert texts == [f"line {i}" for i in range(total)], "every event exactly once, in order"
    assert seen == sorted(set(seen)), "no duplicate sequence, strictly increasing"
    assert set(published) <= set(seen)


async def test_bad_input_gets_a_clear_4xx_and_writes_nothing(stack, database_url):
    async with stack.client() as c, stack.client("mallory") as m:
        sid = await new_session(c)
        before = await _table_counts(database_url)
        cases = [
            ("malformed json", c.post(f"/api/sessions/{sid}/analyses", content=b"{not json",
                                      headers={"content-type": "application/json"}), 400),
            ("missing question", c.post(f"/api/sessions/{sid}/analyses", json={}), 422),
            ("wrong type", c.post(f"/api/sessions/{sid}/analyses", json={"question": 5}), 422),
            ("empty question", c.post(f"/api/sessions/{sid}/analyses",
                                      json={"question": "  "}), 422),
            ("question over 8 KiB", c.post(f"/api/sessions/{sid}/analyses",
                                           json={"question": "x" * 8193}), 422),
            ("unknown field", c.post(f"/api/sessions/{sid}/analyses",
                                     json={"question": "q", "sneaky": 1}), 422),
            ("id with a dot", c.post("/api/sessions/a.b/analyses", json={"question": "q"}), 422),
            ("id with a star", c.get("/api/sessions/a*/messages"), 422),
            ("id with >", c.get("/api/messages/a%3Eb"), 422),
            ("unknown session", c.post(f"/api/sessions/{new_id()}/analyses",
                                       json={"question": "q"}), 404),
            ("unknown message", c.get(f"/api/messages/{new_id()}"), 404),
            ("unknown chart", c.get(f"/api/charts/{new_id()}"), 404),
            ("another owner's session", m.post(f"/api/sessions/{sid}/analyses",
                                               json={"question": "q"}), 404),
            ("another owner's history", m.get(f"/api/sessions/{sid}/messages"), 404),
            ("another owner's stream", m.get(f"/api/sessions/{sid}/events"), 404),
            ("bad cursor", c.get(f"/api/sessions/{sid}/events?after_seq=abc"), 422),
            ("unknown dataset", c.post(f"/api/sessions/{sid}/analyses",
                                       json={"question": "q", "dataset_id": new_id()}), 404),
            ("empty dataset", c.post(f"/api/sessions/{sid}/datasets?name=x", content=b""), 422),
            ("title too long", c.post("/api/sessions", json={"title": "t" * 500}), 422),
        ]
        for name, request, expected in cases:
            r = await request
            assert r.status_code == expected, (name, r.status_code, r.text)
            err = r.json()["error"]
            assert set(err) == {"code", "message", "details"}, name
            assert err["code"] and err["message"], name
        async with httpx.AsyncClient(base_url=stack.url) as anon:
            for headers in ({}, {"Authorization": "Bearer nope"},
                            {"Authorization": f"Bearer {stack.token('x')}x"}):
                r = await anon.get("/api/sessions", headers=headers)
                assert r.status_code == 401, r.text
                assert r.json()["error"]["code"] == "unauthorized"
            stream_token = (await c.post("/api/stream-tokens")).json()["token"]
            r = await anon.get("/api/sessions", headers={"Authorization": f"Bearer {stream_token}"})
            assert r.status_code == 401, "a stream token opens streams only"
            r = await anon.get(f"/api/sessions?token={stream_token}")
            assert r.status_code == 401
    # nothing was written by any of it
    seq_before = before
    assert await _table_counts(database_url) == seq_before


async def test_a_stream_token_opens_a_stream_without_headers(stack):
    async with stack.client() as c:
        sid = await new_session(c)
        token = (await c.post("/api/stream-tokens")).json()["token"]
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as anon:
        async with anon.stream("GET", f"/api/sessions/{sid}/events?token={token}") as r:
            assert r.status_code == 200
            frames = await collect(r, lambda f: any(x.event == "session_created" for x in f))
    assert frames[0].data["session_id"] == sid


async def test_health_and_readiness_answer(stack):
    async with httpx.AsyncClient(base_url=stack.url) as anon:
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        ready = await anon.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "nats": "ok", "postgres": "ok"}
        metrics = await anon.get("/metrics")
        assert "runstream_events_published_total" in metrics.text




async def test_the_dev_token_is_offered_to_loopback_only_when_configured(stack_factory):
    async with stack_factory(overrides={"dev_token": "dev-token-value"}) as stack:
        async with httpx.AsyncClient(base_url=stack.url) as anon:
            ok = await anon.get("/dev-token")
            assert ok.status_code == 200 and ok.json() == {"token": "dev-token-value"}
            rebound = await anon.get("/dev-token", headers={"Host": "evil.example:8000"})
            assert rebound.status_code == 404
    async with stack_factory() as stack, httpx.AsyncClient(base_url=stack.url) as anon:
        assert (await anon.get("/dev-token")).status_code == 404
