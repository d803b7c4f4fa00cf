"""The SSE contract, WebSocket, notifications and polling, through real servers."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import websockets

from runstream.bus import Bus, BusSettings, SessionAggregate
from runstream.contracts import LogAppended, new_id, utcnow
from runstream.testing import wait_until
from tests.integration.conftest import collect, new_session


def _bus_settings(stack) -> BusSettings:
    s = stack.settings
    return BusSettings(url=s.nats_url, stream=s.stream, prefix=s.prefix)


async def _submit(c: httpx.AsyncClient, sid: str, question: str = "q") -> dict:
    r = await c.post(f"/api/sessions/{sid}/analyses", json={"question": question})
    assert r.status_code == 202, r.text
    return r.json()


def _log(sid: str, mid: str, i: int) -> LogAppended:
    return LogAppended(event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
                       text=f"line {i}")


async def test_a_stream_opened_at_as_of_seq_gives_exactly_what_the_snapshot_lacks(stack):
    total = 150
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid = await new_session(c)
        mid = (await _submit(c, sid))["message_id"]
        first = 60
        for i in range(first):
            await bus.publish(_log(sid, mid, i))

        async def writer() -> None:  # events keep arriving during the hand-off
            for i in range(first, total):
                await bus.publish(_log(sid, mid, i))
                if i % 5 == 0:
                    await asyncio.sleep(0.002)

        task = asyncio.create_task(writer())
        snap = (await c.get(f"/api/messages/{mid}")).json()
        in_snapshot = [log["text"] for log in snap["logs"]]
        async with c.stream("GET", f"/api/messages/{mid}/events",
                            params={"after_seq": snap["as_of_seq"]}) as r:
            frames = await collect(r, lambda f: len(in_snapshot) + sum(
                x.event == "log_appended" for x in f) >= total)
        await task
    streamed = [f.data["text"] for f in frames if f.event == "log_appended"]
    assert all(f.id > snap["as_of_seq"] for f in frames)
    assert in_snapshot + streamed == [f"line {i}" for i in range(total)]


async def test_a_cursor_older_than_the_retained_stream_gets_a_reset_with_a_snapshot(
    stack_factory,
):
    async with stack_factory(overrides={"stream_max_msgs": 40}) as stack:
        async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
            sid = await new_session(c)
            mid = (await _submit(c, sid))["message_id"]
            for i in range(100):
                last = (await bus.publish(_log(sid, mid, i))).seq
            first = await bus.first_seq()
            assert first > 2, "old events were discarded"
            # The scenario is an old cursor, not a lagging projector: let it catch up so
            # the snapshot is inside the retained stream (else the events between the
            # snapshot and the stream's head are gone for the projector too).
            async def caught_up() -> bool:
                r = await c.get(f"/api/sessions/{sid}/messages", params={"min_seq": last})
                return bool(r.json()["as_of_seq"] >= last)

            await wait_until(caught_up, timeout=20)
            async with c.stream("GET", f"/api/sessions/{sid}/events",
                                headers={"Last-Event-ID": "1"}) as r:
                # the reset's snapshot, then whatever the snapshot lacks, up to the last event
                frames = await collect(r, lambda f: f[-1].id >= last)
    reset = frames[0]
    assert reset.event == "reset"
    assert reset.data["reason"] == "cursor_expired"
    assert reset.data["snapshot"]["as_of_seq"] == reset.id
    assert [m["role"] for m in reset.data["snapshot"]["messages"]] == ["user", "assistant"]
    after = [f.id for f in frames[1:]]
    assert all(f.event == "log_appended" for f in frames[1:])
    assert after == list(range(reset.id + 1, last + 1)), "exactly what the snapshot lacks"


async def test_a_message_stream_ends_after_the_message_settles(stack):
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid = await new_session(c)
        mid = (await _submit(c, sid))["message_id"]

        async def finish() -> None:
            await bus.publish(_log(sid, mid, 0))
            await SessionAggregate(bus).settle(sid, mid, "completed", summary="done")
            await bus.publish(_log(sid, mid, 1))  # after the settle: not part of the stream

        async with c.stream("GET", f"/api/messages/{mid}/events") as r:
            task = asyncio.create_task(finish())
            frames = await collect(r, lambda f: False)  # until the server ends the stream
            await task
    types = [f.event for f in frames]
    assert types[0] == "analysis_requested"
    assert types[-1] == "analysis_settled"
    assert frames[-1].data["status"] == "completed"
    # a settled message's stream, opened later from its snapshot, ends at once
    async with stack.client() as c:
        snap = (await c.get(f"/api/messages/{mid}", params={"min_seq": frames[-1].id})).json()
        assert snap["status"] == "completed"
        async with c.stream("GET", f"/api/messages/{mid}/events",
                            params={"after_seq": snap["as_of_seq"]}) as r:
            later = await collect(r, lambda f: False, timeout=5)
    assert later == []


async def test_streams_send_a_retry_hint_and_heartbeat_comments(stack_factory):
    async with stack_factory(overrides={"sse_heartbeat_s": 0.2}) as stack, stack.client() as c:
        sid = await new_session(c)
        lines: list[str] = []
        async with c.stream("GET", f"/api/sessions/{sid}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache"

            async def read() -> None:
                async for line in r.aiter_lines():
                    lines.append(line)
                    if sum(x.startswith(": heartbeat") for x in lines) >= 2:
                        return

            await asyncio.wait_for(read(), 10)
    assert any(x.startswith("retry: ") for x in lines)
    assert sum(x.startswith(": heartbeat") for x in lines) >= 2


async def test_the_websocket_carries_the_same_frames_and_resumes_after_a_sequence(stack):
    async with stack.client() as c:
        sid = await new_session(c)
        sub = await _submit(c, sid)
    ws_url = stack.url.replace("http", "ws") + f"/api/sessions/{sid}/ws"
    headers = {"Authorization": f"Bearer {stack.token()}"}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        second = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert first["type"] == "session_created" and first["data"]["session_id"] == sid
    assert second["type"] == "analysis_requested" and second["seq"] == sub["as_of_seq"]
    async with stack.client() as c:
        token = (await c.post("/api/stream-tokens")).json()["token"]
    async with websockets.connect(f"{ws_url}?after_seq={first['seq']}&token={token}") as ws:
        resumed = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert resumed == second


async def test_notifications_follow_background_work_and_clear_when_read(stack):
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid = await new_session(c)
        async with c.stream("GET", "/api/events") as feed:
            sub = await _submit(c, sid)
            mid = sub["message_id"]
            listed = (await c.get("/api/sessions", params={"min_seq": sub["as_of_seq"]})).json()
            listed = {s["session_id"]: s for s in listed["sessions"]}
            assert listed[sid]["status"] == "analyzing"
            assert listed[sid]["active_message_id"] == mid
            settled = await SessionAggregate(bus).settle(sid, mid, "completed", summary="ok")
            listed = (await c.get("/api/sessions", params={"min_seq": settled.seq})).json()
            listed = {s["session_id"]: s for s in listed["sessions"]}
            assert listed[sid]["has_notification"] is True
            assert listed[sid]["status"] == "idle"
            read = await c.post(f"/api/sessions/{sid}/read")
            assert read.status_code == 200 and read.json()["has_notification"] is False
            frames = await collect(feed, lambda f: any(x.event == "session_read" for x in f))
    assert [f.event for f in frames] == ["analysis_requested", "analysis_settled", "session_read"]


async def test_the_owner_feed_never_shows_another_owners_sessions(stack):
    async with stack.client("alice") as a, stack.client("bob") as b:
        async with b.stream("GET", "/api/events") as feed:
            await new_session(a, "alice's")
            mine = await new_session(b, "bob's")
            frames = await collect(feed, lambda f: any(x.event == "session_created" for x in f))
    assert [f.data["session_id"] for f in frames] == [mine]


async def test_polling_a_message_is_cheap_with_etags(stack):
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid = await new_session(c)
        mid = (await _submit(c, sid))["message_id"]
        first = await c.get(f"/api/messages/{mid}")
        etag = first.headers["etag"]
        again = await c.get(f"/api/messages/{mid}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        p = await bus.publish(_log(sid, mid, 0))
        changed = await c.get(f"/api/messages/{mid}", params={"min_seq": p.seq},
                              headers={"If-None-Match": etag})
        await SessionAggregate(bus).settle(sid, mid, "failed")
    assert changed.status_code == 200 and changed.headers["etag"] != etag


async def test_prefer_wait_answers_with_the_settled_message_when_it_settles_in_time(stack):
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid = await new_session(c)
        quick = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "q"},
                             headers={"Prefer": "wait=0.2"})
        assert quick.status_code == 202, "nothing settles it: the usual 202"
        await SessionAggregate(bus).settle(sid, quick.json()["message_id"], "failed")

        async def settle_when_requested() -> None:
            state = SessionAggregate(bus)
            while True:
                current = await state.load(sid)
                lock = current.lock
                if lock is not None and lock.message_id != quick.json()["message_id"]:
                    await state.settle(sid, lock.message_id, "completed", summary="quick")
                    return
                await asyncio.sleep(0.01)

        helper = asyncio.create_task(settle_when_requested())
        waited = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "q2"},
                              headers={"Prefer": "wait=10"})
        await helper
    assert waited.status_code == 200, waited.text
    assert waited.json()["status"] == "completed" and waited.json()["summary"] == "quick"
    assert waited.headers["preference-applied"] == "wait=10"


async def test_cancel_frees_the_session_at_once_and_cannot_be_repeated(stack):
    async with stack.client() as c:
        sid = await new_session(c)
        mid = (await _submit(c, sid))["message_id"]
        r = await c.post(f"/api/messages/{mid}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        nxt = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "next"})
        assert nxt.status_code == 202, "the lock was freed by the cancel"
        msg = (await c.get(f"/api/messages/{mid}", params={"min_seq": r.json()["as_of_seq"]}))
        assert msg.json()["status"] == "cancelled"
        again = await c.post(f"/api/messages/{mid}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "already_settled"
        retry = await c.post(f"/api/messages/{mid}/retry")
        assert retry.status_code == 409, "retry while another analysis runs is refused"


async def test_datasets_are_inspected_and_bad_ones_refused(stack_factory):
    async with stack_factory(overrides={"dataset_max_bytes": 2000}) as stack, \
            stack.client() as c:
        sid = await new_session(c)
        csv = b"region,revenue\nNorth,10.5\nSouth,20\nNorth,4.5\n"
        r = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"}, content=csv,
                         headers={"content-type": "text/csv"})
        assert r.status_code == 201, r.text
        ds = r.json()
        assert ds["row_count"] == 3 and ds["format"] == "csv"
        assert [col["name"] for col in ds["columns"]] == ["region", "revenue"]
        too_big = await c.post(f"/api/sessions/{sid}/datasets", content=b"a,b\n" + b"1,2\n" * 600)
        assert too_big.status_code == 413
        bad = await c.post(f"/api/sessions/{sid}/datasets", params={"format": "parquet"},
                           content=b"this is not parquet")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unreadable_dataset"
        listed = (await c.get(f"/api/sessions/{sid}/datasets")).json()["datasets"]
        assert [d["dataset_id"] for d in listed] == [ds["dataset_id"]]


async def test_a_rename_is_projected_streamed_and_only_the_owners(stack):
    async with stack.client("alice") as a, stack.client("bob") as b:
        unnamed = (await a.post("/api/sessions")).json()["session_id"]
        async with a.stream("GET", "/api/events") as feed:
            renamed = await a.patch(f"/api/sessions/{unnamed}", json={"title": "  Q3 revenue "})
            assert renamed.status_code == 200, renamed.text
            assert renamed.json()["title"] == "Q3 revenue"
            frames = await collect(feed, lambda f: any(x.event == "session_renamed" for x in f))
        assert frames[-1].data["title"] == "Q3 revenue"
        listed = (await a.get("/api/sessions")).json()["sessions"]
        assert {s["session_id"]: s["title"] for s in listed}[unnamed] == "Q3 revenue"
        # Another owner's session is not there; a blank or missing title is refused.
        other = await b.patch(f"/api/sessions/{unnamed}", json={"title": "mine"})
        assert other.status_code == 404
        for body in ({"title": "   "}, {"title": ""}, {}, {"title": "x" * 201}):
            bad = await a.patch(f"/api/sessions/{unnamed}", json=body)
            assert bad.status_code in (400, 422), (body, bad.text)
            assert set(bad.json()["error"]) >= {"code", "message", "details"}
        assert (await a.get(f"/api/sessions/{unnamed}")).json()["title"] == "Q3 revenue"


async def test_a_session_nobody_named_takes_its_first_question(stack):
    async with stack.client() as c:
        sid = (await c.post("/api/sessions")).json()["session_id"]
        sub = await _submit(c, sid, "average revenue by region")
        session = (await c.get(f"/api/sessions/{sid}", params={"min_seq": sub["as_of_seq"]}))
        assert session.json()["title"] == "average revenue by region"
        named = await new_session(c, "kept")
        sub = await _submit(c, named, "total revenue by month")
        session = (await c.get(f"/api/sessions/{named}", params={"min_seq": sub["as_of_seq"]}))
        assert session.json()["title"] == "kept"


async def _stats(c: httpx.AsyncClient) -> dict:
    r = await c.get("/api/stats")
    assert r.status_code == 200, r.text
    return r.json()["gateway"]


async def test_live_frames_go_straight_to_the_connection_in_order_and_once(stack):
    """Once live, the hub writes each frame into the client's connection itself."""
    async with stack.client() as c, Bus.connect(_bus_settings(stack), name="w") as bus:
        sid, other = await new_session(c), await new_session(c)
        mid = (await _submit(c, sid))["message_id"]
        got: list = []
        async with c.stream("GET", f"/api/sessions/{sid}/events") as r:
            reader = asyncio.create_task(collect(
                r, lambda f: sum(x.event == "log_appended" for x in f) == 300, timeout=30))

            async def live() -> bool:
                return (await _stats(c))["stream_clients_direct"] == 1
            await wait_until(live, timeout=10)
            for i in range(300):  # another session's lines in between are not this stream's
                await bus.publish(_log(sid, mid, i))
                await bus.publish(_log(other, mid, i))
            got = await reader
    assert [f.data["text"] for f in got if f.event == "log_appended"] == [
        f"line {i}" for i in range(300)]
    assert [f.event for f in got[:2]] == ["session_created", "analysis_requested"]
    assert all(f.data["session_id"] == sid for f in got)
    seqs = [f.id for f in got]
    assert seqs == sorted(set(seqs)), "in stream order, each once"


async def test_a_live_client_that_stops_reading_is_dropped_and_ends_with_a_reset(stack_factory):
    limit = 64 * 1024
    async with (
        stack_factory(overrides={"client_buffer_bytes": limit}) as stack,
        stack.client() as c,
        Bus.connect(_bus_settings(stack), name="w") as bus,
    ):
        sid = await new_session(c)
        mid = (await _submit(c, sid))["message_id"]
        host, port = stack.url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        writer.write(f"GET /api/sessions/{sid}/events HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {stack.token()}\r\n\r\n".encode())
        await writer.drain()

        async def live() -> bool:
            return (await _stats(c))["stream_clients_direct"] == 1
        await wait_until(live, timeout=10)
        text = "x" * 2000
        published = 0
        while (await _stats(c))["stream_clients_direct"] == 1:  # the client reads nothing
            for _ in range(100):
                await bus.publish(LogAppended(event_id=new_id(), at=utcnow(), session_id=sid,
                                              message_id=mid, text=f"{published} {text}"))
                published += 1
            assert published < 20_000, "a client that reads nothing was never dropped"
        assert (await _stats(c))["stream_clients"] == 1  # still owed its reset
        # The client reads again: what was written, then a reset, then the end.
        body = await asyncio.wait_for(_read_response(reader), 30)
        writer.close()

        async def released() -> bool:
            return (await _stats(c))["stream_clients"] == 0
        await wait_until(released, timeout=10)
    events = _sse_events(_dechunk(body.split(b"\r\n\r\n", 1)[1]))
    lines = [int(json.loads(data)["text"].split()[0]) for kind, _, data in events
             if kind == "log_appended"]
    assert lines == list(range(len(lines))) and 0 < len(lines) < published
    kind, seq, data = events[-1]
    reset = json.loads(data)
    assert kind == "reset" and reset["reason"] == "client_too_slow"
    # the client starts again from the snapshot, and resumes after the position it shows
    assert reset["snapshot"]["as_of_seq"] == seq and reset["snapshot"]["messages"]


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """Everything up to the end of a chunked response."""
    body = b""
    while not body.endswith(b"\r\n0\r\n\r\n"):
        more = await reader.read(1 << 16)
        assert more, "the connection closed before the response ended"
        body += more
    return body


def _dechunk(raw: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2:end + 2 + size]
        at = end + 2 + size + 2


def _sse_events(body: bytes) -> list[tuple[str, int, str]]:
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n")
                      if line and not line.startswith(":") and ": " in line)
        if "event" in fields:
            events.append((fields["event"], int(fields["id"]), fields["data"]))
    return events
