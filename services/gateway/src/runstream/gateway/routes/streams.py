"""SSE (three scopes plus the owner's session feed), WebSocket, and stream tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import WebSocket, get, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath
from litestar.response import Stream

from runstream.contracts import is_task_terminal
from runstream.gateway.errors import unavailable_dependency
from runstream.gateway.fanout import Scope
from runstream.gateway.routes.common import Req, gw, ident, owner
from runstream.gateway.state import Gateway
from runstream.gateway.streams import Heartbeat, Item, open_stream, parse_cursor

logger = structlog.get_logger()
_json = msgspec.json.Encoder()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HEARTBEAT = b": heartbeat\n\n"


def _sse(items: AsyncIterator[Item], g: Gateway) -> Stream:
    """Server-sent events, framed by hand on purpose: each event's bytes are encoded once
    in the hub and shared by every client, and whatever is ready goes out in one write."""

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: %d\n\n" % g.settings.sse_retry_ms
        try:
            async for item in items:
                if isinstance(item, list):
                    yield b"".join(frame.sse() for frame in item)
                elif isinstance(item, Heartbeat):
                    yield HEARTBEAT
                else:
                    payload = _json.encode({"reason": item.reason, "snapshot": item.snapshot})
                    yield b"id: %d\nevent: reset\ndata: %s\n\n" % (item.seq, payload)
        except Exception as exc:
            # The replay or a snapshot needs NATS or Postgres. End the response properly
            # (not a torn connection): EventSource comes back after `retry:` ms with
            # Last-Event-ID and resumes exactly where this stream stopped.
            dependency = unavailable_dependency(exc)
            if dependency is None:
                raise
            logger.warning("stream.ended_dependency_unavailable", dependency=dependency,
                           error=type(exc).__name__)
            yield b": %s unavailable, reconnect\n\n" % dependency.encode()

    return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def _cursor(request: Req) -> int | None:
    return parse_cursor(request.headers.get("last-event-id"),
                        request.query_params.get("after_seq"))


@get("/api/sessions/{session_id:str}/events")
async def session_events(request: Req, session_id: FromPath[str]) -> Stream:
    g = gw(request)
    sid = ident(session_id, "session_id")
    cursor = _cursor(request)
    await g.session_for(owner(request), sid)

    async def snapshot() -> dict[str, Any]:
        return {"status": await g.models.analysis_status(sid),
                **await g.models.list_messages(sid)}

    scope = Scope(kind="session", session_id=sid)
    return _sse(open_stream(g.hub, scope, cursor, snapshot=snapshot,
                            heartbeat_s=g.settings.sse_heartbeat_s), g)


@get("/api/messages/{message_id:str}/events")
async def message_events(request: Req, message_id: FromPath[str]) -> Stream:
    g = gw(request)
    mid = ident(message_id, "message_id")
    cursor = _cursor(request)
    message = await g.message_for(owner(request), mid)

    async def snapshot() -> dict[str, Any]:
        return await g.models.get_message(mid) or {}

    scope = Scope(kind="message", session_id=message["session_id"], message_id=mid)
    settled_seq = message.get("settled_seq")
    settled = settled_seq is not None and (cursor or 0) >= settled_seq
    return _sse(open_stream(g.hub, scope, cursor, snapshot=snapshot,
                            heartbeat_s=g.settings.sse_heartbeat_s, already_ended=settled), g)


@get("/api/charts/{task_id:str}/events")
async def chart_events(request: Req, task_id: FromPath[str]) -> Stream:
    g = gw(request)
    tid = ident(task_id, "task_id")
    cursor = _cursor(request)
    task = await g.chart_task_for(owner(request), tid)

    async def snapshot() -> dict[str, Any]:
        return await g.models.get_chart_task(tid) or {}

    scope = Scope(kind="chart", session_id=task["session_id"], task_id=tid)
    ended = is_task_terminal(task["status"]) and (cursor or 0) >= task["as_of_seq"]
    return _sse(open_stream(g.hub, scope, cursor, snapshot=snapshot,
                            heartbeat_s=g.settings.sse_heartbeat_s, already_ended=ended), g)


@get("/api/events")
async def owner_events(request: Req) -> Stream:
    """Session-level changes of all the owner's sessions, for a sidebar without polling."""
    g = gw(request)
    who = owner(request)
    cursor = _cursor(request)
    listing = await g.models.list_sessions(who)
    sessions = {s["session_id"] for s in listing["sessions"]}

    async def snapshot() -> dict[str, Any]:
        return await g.models.list_sessions(who)

    scope = Scope(kind="owner", owner=who)
    start = cursor if cursor is not None else listing["as_of_seq"]
    return _sse(open_stream(g.hub, scope, start, snapshot=snapshot,
                            heartbeat_s=g.settings.sse_heartbeat_s, owner_sessions=sessions), g)


@post("/api/stream-tokens", status_code=201)
async def stream_token(request: Req) -> dict[str, Any]:
    g = gw(request)
    token, exp = g.tokens.issue(owner(request), ttl_s=g.settings.stream_token_ttl_s, typ="stream")
    return {"token": token, "expires_at": exp, "ttl_s": g.settings.stream_token_ttl_s}


@websocket("/api/sessions/{session_id:str}/ws")
async def session_ws(socket: WebSocket[Any, Any, Any], session_id: FromPath[str]) -> None:
    g = gw(socket)  # type: ignore[arg-type]
    sid = ident(session_id, "session_id")
    await g.session_for(str(socket.user), sid)
    cursor = parse_cursor(None, socket.query_params.get("after_seq"))
    await socket.accept()

    async def snapshot() -> dict[str, Any]:
        return {"status": await g.models.analysis_status(sid),
                **await g.models.list_messages(sid)}

    scope = Scope(kind="session", session_id=sid)
    stream = open_stream(g.hub, scope, cursor, snapshot=snapshot,
                         heartbeat_s=g.settings.sse_heartbeat_s)
    try:
        async for item in stream:
            if isinstance(item, list):
                for frame in item:
                    await socket.send_text(frame.ws())
            elif isinstance(item, Heartbeat):
                await socket.send_json({"type": "heartbeat"})
            else:
                await socket.send_json({"seq": item.seq, "type": "reset",
                                        "data": {"reason": item.reason,
                                                 "snapshot": item.snapshot}})
    except WebSocketDisconnect:
        pass
    except Exception as exc:
        dependency = unavailable_dependency(exc)
        if dependency is None:
            raise
        logger.warning("stream.ended_dependency_unavailable", dependency=dependency,
                       error=type(exc).__name__)
        with contextlib.suppress(Exception):  # 1013: try again later; resume with after_seq
            await socket.close(code=1013, reason=f"{dependency} unavailable")
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            await socket.close()


ROUTES = [session_events, message_events, chart_events, owner_events, stream_token, session_ws]
