"""Streams: SSE for a session, a message, a chart task and the owner's sessions; the
session's frames over WebSocket too."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.openapi import ResponseSpec
from litestar.response import Stream

from runstream.contracts import is_task_terminal
from runstream.gateway.dependencies import GatewayDep, OwnerDep
from runstream.gateway.errors import unavailable_dependency
from runstream.gateway.fanout import Scope
from runstream.gateway.openapi import READ, STREAM_SECURITY, ApiOperation, errors
from runstream.gateway.schemas import AfterSeq, LastEventId, MessageId, SessionId, TaskId
from runstream.gateway.state import Gateway
from runstream.gateway.streams import Heartbeat, Item, Snapshot, open_stream, parse_cursor
from runstream.gateway.transport import sink_of

logger = structlog.get_logger()
_json = msgspec.json.Encoder()
SSE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
HEARTBEAT = b": heartbeat\n\n"
FRAMES = {200: ResponseSpec(
    data_container=str, media_type=SSE, generate_examples=False,
    description="Server-sent events: `id: <stream sequence>`, `event: <type>`, `data: <event "
                "JSON>`; `event: reset` with a fresh snapshot when the cursor is older than the "
                "retained stream; comment heartbeats; a `retry:` hint.")}


def _scope_sse(gateway: Gateway, request: Request[Any, Any, Any], scope: Scope,
               cursor: int | None, snapshot: Any, **kw: Any) -> Stream:
    """One scope's stream (replay after `cursor`, then live) with the gateway's settings.
    Once live, the hub writes frames into the response's transport when it can."""
    limit = gateway.settings.client_buffer_bytes
    return _sse(open_stream(gateway.hub, scope, cursor, snapshot=snapshot,
                            heartbeat_s=gateway.settings.sse_heartbeat_s,
                            max_s=gateway.settings.sse_max_s,
                            direct=lambda: sink_of(request.scope, limit), **kw), gateway)


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

    return Stream(body(), media_type=SSE, headers=SSE_HEADERS)


def _session_snapshot(g: Gateway, sid: str) -> Snapshot:
    async def snapshot() -> dict[str, Any]:
        return {"status": await g.models.analysis_status(sid),
                **await g.models.list_messages(sid)}
    return snapshot


def _cursor(last_event_id: str, after_seq: str) -> int | None:
    """`Last-Event-ID` wins over `?after_seq=` (both checked against SEQ_TEXT already)."""
    raw = last_event_id or after_seq
    return int(raw) if raw else None


class StreamController(Controller):
    path = "/api"
    tags = ["streams"]
    security = STREAM_SECURITY

    @get("/sessions/{session_id:str}/events", media_type=SSE, operation_class=ApiOperation,
         responses={**FRAMES, **errors(*READ)})
    async def session_events(self, request: Request[Any, Any, Any], gateway: GatewayDep,
                             owner: OwnerDep, session_id: SessionId,
                             last_event_id: LastEventId = "",
                             after_seq: AfterSeq = "") -> Stream:
        """Everything about the session: a replay after the cursor, then live."""
        cursor = _cursor(last_event_id, after_seq)
        await gateway.session_for(owner, session_id)
        scope = Scope(kind="session", session_id=session_id)
        return _scope_sse(gateway, request, scope, cursor, _session_snapshot(gateway, session_id))

    @get("/messages/{message_id:str}/events", media_type=SSE, operation_class=ApiOperation,
         responses={**FRAMES, **errors(*READ)})
    async def message_events(self, request: Request[Any, Any, Any], gateway: GatewayDep,
                             owner: OwnerDep, message_id: MessageId,
                             last_event_id: LastEventId = "",
                             after_seq: AfterSeq = "") -> Stream:
        """One message; the stream ends after it settles."""
        cursor = _cursor(last_event_id, after_seq)
        message = await gateway.message_for(owner, message_id)

        async def snapshot() -> dict[str, Any]:
            return await gateway.models.get_message(message_id) or {}

        scope = Scope(kind="message", session_id=message["session_id"], message_id=message_id)
        settled_seq = message.get("settled_seq")
        settled = settled_seq is not None and (cursor or 0) >= settled_seq
        return _scope_sse(gateway, request, scope, cursor, snapshot, already_ended=settled)

    @get("/charts/{task_id:str}/events", media_type=SSE, operation_class=ApiOperation,
         responses={**FRAMES, **errors(*READ)})
    async def chart_events(self, request: Request[Any, Any, Any], gateway: GatewayDep,
                           owner: OwnerDep, task_id: TaskId,
                           last_event_id: LastEventId = "",
                           after_seq: AfterSeq = "") -> Stream:
        """One chart task; the stream ends when the task does."""
        cursor = _cursor(last_event_id, after_seq)
        task = await gateway.chart_task_for(owner, task_id)

        async def snapshot() -> dict[str, Any]:
            return await gateway.models.get_chart_task(task_id) or {}

        scope = Scope(kind="chart", session_id=task["session_id"], task_id=task_id)
        ended = is_task_terminal(task["status"]) and (cursor or 0) >= task["as_of_seq"]
        return _scope_sse(gateway, request, scope, cursor, snapshot, already_ended=ended)

    @get("/events", media_type=SSE, operation_class=ApiOperation,
         responses={**FRAMES, **errors(401, 422, 503)})
    async def owner_events(self, request: Request[Any, Any, Any], gateway: GatewayDep,
                           owner: OwnerDep,
                           last_event_id: LastEventId = "",
                           after_seq: AfterSeq = "") -> Stream:
        """Session-level changes of all the owner's sessions, for a sidebar without polling."""
        cursor = _cursor(last_event_id, after_seq)
        listing = await gateway.models.list_sessions(owner)
        sessions = {s["session_id"] for s in listing["sessions"]}

        async def snapshot() -> dict[str, Any]:
            return await gateway.models.list_sessions(owner)

        scope = Scope(kind="owner", owner=owner)
        if cursor is not None:
            return _scope_sse(gateway, request, scope, cursor, snapshot, owner_sessions=sessions)
        # From the listing: what each session's row already shows is not sent again.
        reflected = {s["session_id"]: int(s["last_seq"]) for s in listing["sessions"]}
        return _scope_sse(gateway, request, scope, listing["as_of_seq"], snapshot,
                          owner_sessions=sessions, reflected=reflected)

    @websocket("/sessions/{session_id:str}/ws")
    async def session_ws(self, socket: WebSocket[Any, Any, Any], gateway: GatewayDep,
                         owner: OwnerDep, session_id: SessionId) -> None:
        """The session's frames as `{seq, type, data}`; resume with `?after_seq=`."""
        await gateway.session_for(owner, session_id)
        cursor = parse_cursor(None, socket.query_params.get("after_seq"))
        await socket.accept()
        stream = open_stream(gateway.hub, Scope(kind="session", session_id=session_id), cursor,
                             snapshot=_session_snapshot(gateway, session_id),
                             heartbeat_s=gateway.settings.sse_heartbeat_s)
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
