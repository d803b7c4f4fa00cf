"""Outages: Postgres or NATS stops while clients use the gateway, then comes back.

While a dependency is down every route a client uses answers 503 `unavailable` with
`Retry-After` (never 500), a 503 writes nothing, and `/readyz` names what is down. When
the server comes back on the same port and data, everything serves again with no
restart of any service: the gateway's pool and its LISTEN connection, the publish path
and the live fan-out, the projector and the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from runstream.testing import NatsServer, PostgresCluster, free_port, wait_until
from tests.integration.conftest import SseFrame, collect, new_session, sse_frames
from tests.integration.pipeline_support import sales_csv
from tests.stack import run_stack

RECOVERY_S = 30.0


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster this test may stop and start (same port, same data directory)."""
    cluster = PostgresCluster(port=free_port()).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def own_nats(tmp_path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "js", port=free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()


def assert_unavailable(r: httpx.Response, dependency: str) -> None:
    where = f"{r.request.method} {r.request.url.path}"
    assert r.status_code == 503, f"{where}: {r.status_code} {r.text}"
    assert int(r.headers["Retry-After"]) >= 1, where
    error = r.json()["error"]
    assert error["code"] == "unavailable" and error["message"], where
    assert error["details"]["dependency"] == dependency, f"{where}: {error}"


async def _listeners(dsn: str) -> int:
    """Backends whose last statement was the gateway's LISTEN for projector wake-ups."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%rs_projected%'"))
    finally:
        await conn.close()


async def test_a_postgres_restart_answers_503_then_the_gateway_serves_again_by_itself(
    own_postgres, nats_url, stream_names,
):
    async with run_stack(
        nats_url=nats_url, stream=stream_names.stream, prefix=stream_names.prefix,
        database_url=own_postgres.dsn,
    ) as stack, stack.client() as c, httpx.AsyncClient(base_url=stack.url) as probe:
        sid = await new_session(c)
        idle_sid = await new_session(c)
        submitted = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "rows?"})
        assert submitted.status_code == 202, submitted.text
        mid = submitted.json()["message_id"]
        assert (await c.get(f"/api/messages/{mid}")).status_code == 200
        assert await _listeners(own_postgres.dsn) == 1  # the wake-up path is in place

        await asyncio.to_thread(own_postgres.stop)
        routes = [
            ("GET", "/api/sessions", None),
            ("GET", f"/api/sessions/{sid}", None),
            ("GET", f"/api/messages/{mid}", None),
            ("GET", f"/api/messages/{mid}", {"min_seq": "999999"}),
            ("POST", "/api/sessions", None),
            ("POST", f"/api/sessions/{idle_sid}/analyses", None),
        ]
        bodies = {"/api/sessions": {"title": "during"}}
        answers = await asyncio.gather(*(
            c.request(method, path, params=params,
                      json=bodies.get(path, {"question": "q"}) if method == "POST" else None)
            for _ in range(3) for method, path, params in routes
        ))
        for answer in answers:
            assert_unavailable(answer, "postgres")
        ready = await probe.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
        assert ready.json()["status"] == "unavailable"
        checks = ready.json()["checks"]
        assert checks["nats"] == "ok" and checks["postgres"].startswith("down: "), checks

        await asyncio.to_thread(own_postgres.start)  # same port, same data

        async def listed() -> dict[str, Any] | None:
            r = await c.get("/api/sessions")
            assert r.status_code in (200, 503), r.text
            return r.json() if r.status_code == 200 else None

        sessions = await wait_until(listed, timeout=RECOVERY_S, interval=0.1)
        # every 503 above wrote nothing: still the two sessions from before the outage
        assert {s["session_id"] for s in sessions["sessions"]} == {sid, idle_sid}
        assert (await probe.get("/readyz")).json() == {
            "status": "ready", "checks": {"nats": "ok", "postgres": "ok"}}
        assert (await c.get(f"/api/messages/{mid}")).json()["status"] == "pending"

        created = await c.post("/api/sessions", json={"title": "after"})
        assert created.status_code == 201 and created.json()["as_of_seq"] > 0, created.text
        again = await c.post(f"/api/sessions/{idle_sid}/analyses", json={"question": "rows?"})
        assert again.status_code == 202, again.text
        seq = again.json()["as_of_seq"]
        # min_seq waits on the projector, woken through LISTEN/NOTIFY after the restart
        read = await c.get(f"/api/messages/{again.json()['message_id']}",
                           params={"min_seq": str(seq)})
        assert read.status_code == 200 and read.json()["as_of_seq"] >= seq, read.text
        await wait_until(lambda: _listeners(own_postgres.dsn), timeout=RECOVERY_S)
        assert await _listeners(own_postgres.dsn) == 1


async def test_a_nats_restart_answers_503_to_writes_then_publish_fan_out_and_workers_resume(
    own_nats, database_url, stream_names,
):
    async with run_stack(
        nats_url=own_nats.url, stream=stream_names.stream, prefix=stream_names.prefix,
        database_url=database_url, workers=True,
    ) as stack, stack.client() as c, httpx.AsyncClient(base_url=stack.url) as probe:
        sid = await new_session(c)
        up = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"},
                          content=sales_csv())
        assert up.status_code == 201, up.text
        other_sid = await new_session(c)

        seen: list[SseFrame] = []

        async def follow() -> None:  # one live stream, open across the whole outage
            async with c.stream("GET", f"/api/sessions/{sid}/events",
                                params={"after_seq": "0"}) as r:
                assert r.status_code == 200
                async for frame in sse_frames(r):
                    seen.append(frame)

        follower = asyncio.create_task(follow())
        try:
            async def attached() -> bool:
                return any(f.event == "dataset_attached" for f in seen)

            await wait_until(attached, timeout=RECOVERY_S)

            await asyncio.to_thread(own_nats.stop)
            writes = await asyncio.gather(
                c.post("/api/sessions", json={"title": "during"}),
                c.post(f"/api/sessions/{other_sid}/analyses", json={"question": "rows?"}),
                c.post(f"/api/sessions/{sid}/analyses",
                       json={"question": "total revenue by region"}),
            )
            for answer in writes:
                assert_unavailable(answer, "nats")
            # a stream opened now needs a replay from JetStream: it ends cleanly (no torn
            # connection), and the client resumes it later from its last id
            async with c.stream("GET", f"/api/sessions/{sid}/events",
                                params={"after_seq": "0"}) as r:
                assert r.status_code == 200
                text = await asyncio.wait_for(r.aread(), 10)
            assert text.endswith(b": nats unavailable, reconnect\n\n"), text
            ws_url = stack.url.replace("http", "ws") + f"/api/sessions/{sid}/ws?after_seq=0"
            async with websockets.connect(
                ws_url, additional_headers={"Authorization": f"Bearer {stack.token()}"},
            ) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013  # try later
            # reads come from Postgres and keep working
            listing = await c.get("/api/sessions")
            assert listing.status_code == 200 and len(listing.json()["sessions"]) == 2
            ready = await probe.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
            checks = ready.json()["checks"]
            assert checks["postgres"] == "ok" and checks["nats"].startswith("down: "), checks

            await asyncio.to_thread(own_nats.start)  # same port, same store

            async def ready_again() -> bool:
                return (await probe.get("/readyz")).status_code == 200

            await wait_until(ready_again, timeout=RECOVERY_S, interval=0.1)

            async def submitted() -> httpx.Response | None:
                r = await c.post(f"/api/sessions/{sid}/analyses",
                                 json={"question": "total revenue by region"})
                assert r.status_code in (202, 503), r.text
                return r if r.status_code == 202 else None

            answer = await wait_until(submitted, timeout=RECOVERY_S, interval=0.2)
            mid, seq = answer.json()["message_id"], answer.json()["as_of_seq"]
            # the projector folds again: a read at that position answers
            read = await c.get(f"/api/messages/{mid}", params={"min_seq": str(seq)})
            assert read.status_code == 200 and read.json()["as_of_seq"] >= seq, read.text

            async def settled() -> dict[str, Any] | None:
                m = (await c.get(f"/api/messages/{mid}")).json()
                return m if m["status"] not in ("pending", "running") else None

            final = await wait_until(settled, timeout=90, interval=0.2)
            assert final["status"] == "completed", final.get("error")

            async def streamed_to_the_end() -> bool:
                return any(f.event == "analysis_settled" and f.data["message_id"] == mid
                           for f in seen)

            await wait_until(streamed_to_the_end, timeout=RECOVERY_S)
            # what the stream open across the outage delivered is what a fresh replay has
            async with c.stream("GET", f"/api/sessions/{sid}/events",
                                params={"after_seq": "0"}) as r:
                replayed = await collect(r, lambda fs: fs[-1].event == "analysis_settled")
            live = [f.id for f in seen]
            assert live[:len(replayed)] == [f.id for f in replayed]
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await follower
        created = await c.post("/api/sessions", json={"title": "after"})
        assert created.status_code == 201, created.text
        titles = [s["title"] for s in (await c.get("/api/sessions")).json()["sessions"]]
        assert "during" not in titles  # the 503 wrote nothing
    ids = [f.id for f in seen if f.id is not None]
    assert ids == sorted(set(ids)), "the live stream has no gap-filling duplicate, in order"
    types = [f.event for f in seen]
    assert types.count("analysis_requested") == 1 and types.count("analysis_settled") == 1
