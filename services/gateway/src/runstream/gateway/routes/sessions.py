"""Sessions, datasets and submitting analyses."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import structlog
from litestar import Response, get, post
from litestar.params import FromPath

from runstream.bus import Committed, put_dataset
from runstream.contracts import new_id
from runstream.gateway.bodies import CreateSession, Submit, read_json
from runstream.gateway.datasets import UnreadableDataset, detect_format, inspect_dataset
from runstream.gateway.errors import ApiError, unavailable_dependency
from runstream.gateway.fanout import Scope
from runstream.gateway.routes.common import Req, gw, ident, min_seq, owner, prefer_wait
from runstream.gateway.state import Gateway

logger = structlog.get_logger()


@post("/api/sessions", status_code=201)
async def create_session(request: Req) -> Response[Any]:
    g = gw(request)
    body = await read_json(request, CreateSession, optional=True)
    title = body.title.strip()
    if len(title) > g.settings.title_max_chars:
        raise ApiError(422, "invalid_request", f"title is limited to {g.settings.title_max_chars} "
                       "characters", {"field": "title"})
    # The answer is read back from Postgres: make sure it answers before writing, so that
    # a 503 for Postgres means nothing was written (a retry then makes no second session).
    await g.models.checkpoint()
    sid = new_id()
    committed = await g.sessions.create(sid, owner=owner(request), title=title)
    g.recent.add(sid, committed.seq)
    last = committed.seq
    if g.settings.sample_dataset:
        last = await _attach_sample(g, sid) or last
    try:
        await g.caught_up(last)
        session = await g.models.get_session(sid)
    except Exception as exc:
        if unavailable_dependency(exc) != "postgres":
            raise
        session = None  # the session exists now: say so, even if it cannot be read back yet
    if session is None:  # the projector lags: answer from the event itself
        event = committed.event
        session = {
            "session_id": sid, "owner": owner(request), "title": title,
            "created_at": event.at, "status": "idle", "active_message_id": None,
            "last_activity_at": event.at, "has_notification": False, "lock": None,
            "as_of_seq": 0, "projected": False,
        }
    return Response(session, status_code=201, headers={"Location": f"/api/sessions/{sid}"})


async def _attach_sample(g: Gateway, sid: str) -> int | None:
    """Attach the bundled sample dataset so a newcomer can ask at once."""
    path = Path(g.settings.sample_dataset or "")
    async with g.sample_lock:
        if g.sample_object is None:
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError:
                logger.warning("gateway.sample_dataset_missing", path=str(path))
                return None
            digest = hashlib.sha256(data).hexdigest()[:16]
            fmt = detect_format(data, None, None)
            inspected = await inspect_dataset(data, fmt)
            object_name = f"sample-{digest}"
            await put_dataset(g.bus, object_name, data)
            g.sample_object = (object_name, {
                "name": path.stem, "fmt": fmt, "size_bytes": len(data),
                "row_count": inspected.row_count, "columns": inspected.columns,
                "sample_rows": inspected.sample_rows,
            })
    object_name, meta = g.sample_object
    committed = await g.sessions.attach_dataset(
        sid, dataset_id=new_id(), object_name=object_name, **meta
    )
    return committed.seq


@get("/api/sessions")
async def list_sessions(request: Req) -> dict[str, Any]:
    g = gw(request)
    await g.caught_up(min_seq(request))
    return await g.models.list_sessions(owner(request))


@get("/api/sessions/{session_id:str}")
async def get_session(request: Req, session_id: FromPath[str]) -> dict[str, Any]:
    return await gw(request).session_for(
        owner(request), ident(session_id, "session_id"), min_seq(request))


@post("/api/sessions/{session_id:str}/read", status_code=200)
async def mark_read(request: Req, session_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    await g.session_for(owner(request), sid)
    committed = await g.sessions.mark_read(sid, owner=owner(request))
    await g.caught_up(committed.seq)
    return await g.session_for(owner(request), sid)


@post("/api/sessions/{session_id:str}/datasets", status_code=201)
async def upload_dataset(request: Req, session_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    await g.session_for(owner(request), sid)
    limit = g.settings.dataset_max_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, "payload_too_large", f"datasets are limited to {limit} bytes",
                       {"limit": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"datasets are limited to {limit} bytes",
                           {"limit": limit})
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise ApiError(422, "empty_dataset", "the request body is empty: send CSV or Parquet")
    name = (request.query_params.get("name") or "dataset").strip()
    if not name or len(name) > 200:
        raise ApiError(422, "invalid_request", "name must be 1-200 characters", {"field": "name"})
    try:
        fmt = detect_format(data, request.query_params.get("format"),
                            request.headers.get("content-type"))
        inspected = await inspect_dataset(data, fmt)
    except UnreadableDataset as exc:
        raise ApiError(422, "unreadable_dataset", str(exc)) from None
    dataset_id = new_id()
    object_name = f"{sid}-{dataset_id}"
    await put_dataset(g.bus, object_name, data)
    committed = await g.sessions.attach_dataset(
        sid, dataset_id=dataset_id, name=name, fmt=fmt, object_name=object_name,
        size_bytes=len(data), row_count=inspected.row_count, columns=inspected.columns,
        sample_rows=inspected.sample_rows,
    )
    await g.caught_up(committed.seq)
    return Response({
        "dataset_id": dataset_id, "session_id": sid, "name": name, "format": fmt,
        "size_bytes": len(data), "row_count": inspected.row_count,
        "columns": [{"name": c.name, "type": c.type} for c in inspected.columns],
        "sample_rows": inspected.sample_rows, "as_of_seq": committed.seq,
    }, status_code=201)


@get("/api/sessions/{session_id:str}/datasets")
async def list_datasets(request: Req, session_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    await g.session_for(owner(request), sid)
    return {"datasets": await g.models.list_datasets(sid)}


async def submit_analysis(
    g: Gateway, request: Req, sid: str, question: str,
    dataset_id: str | None, retry_of: str | None = None,
) -> Response[Any]:
    if dataset_id is not None:
        ident(dataset_id, "dataset_id")
        ds = await g.models.get_dataset(dataset_id)
        if ds is None or ds["session_id"] != sid:
            raise ApiError(404, "not_found", f"dataset {dataset_id} not found in this session")
    wait_s = prefer_wait(request, g.settings.prefer_wait_max_s)
    mid, umid = new_id(), new_id()
    # Subscribe before the write, so a fast settle cannot slip past the waiter.
    waiter = _SettleWaiter(g, sid, mid) if wait_s else None
    try:
        committed: Committed = await g.sessions.request_analysis(
            sid, owner=owner(request), question=question, message_id=mid,
            user_message_id=umid, dataset_id=dataset_id, retry_of=retry_of,
        )
        g.recent.add(mid, committed.seq)
        g.recent.add(umid, committed.seq)
        if waiter is not None and wait_s:
            settled_seq = await waiter.wait(wait_s)
            if settled_seq is not None:
                await g.caught_up(settled_seq)
                message = await g.message_for(owner(request), mid)
                return Response(message, status_code=200,
                                headers={"Preference-Applied": f"wait={wait_s:g}"})
    finally:
        if waiter is not None:
            waiter.close()
    return Response(
        {"message_id": mid, "user_message_id": umid, "session_id": sid, "status": "pending",
         "as_of_seq": committed.seq, "retry_of": retry_of},
        status_code=202, headers={"Location": f"/api/messages/{mid}"},
    )


class _SettleWaiter:
    def __init__(self, g: Gateway, sid: str, mid: str) -> None:
        self.g = g
        self.mid = mid
        self.client, _ = g.hub.register(Scope(kind="message", session_id=sid, message_id=mid))

    async def wait(self, seconds: float) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(self.client.queue.get(), left)
            except TimeoutError:
                return None
            if frame is None:
                return None
            if frame.type == "analysis_settled":
                return frame.seq
        return None

    def close(self) -> None:
        self.g.hub.unregister(self.client)


@post("/api/sessions/{session_id:str}/analyses", status_code=202)
async def submit(request: Req, session_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    body = await read_json(request, Submit)
    question = body.question.strip()
    if not question:
        raise ApiError(422, "invalid_request", "question must not be empty",
                       {"field": "question"})
    if len(question.encode()) > g.settings.question_max_bytes:
        raise ApiError(422, "question_too_long",
                       f"question is limited to {g.settings.question_max_bytes} bytes",
                       {"field": "question", "limit": g.settings.question_max_bytes})
    await g.session_for(owner(request), sid)
    return await submit_analysis(g, request, sid, question, body.dataset_id)


@get("/api/sessions/{session_id:str}/analysis-status")
async def analysis_status(request: Req, session_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    await g.session_for(owner(request), sid, min_seq(request))
    status = await g.models.analysis_status(sid)
    assert status is not None
    return status


@get("/api/sessions/{session_id:str}/messages")
async def list_messages(request: Req, session_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    sid = ident(session_id, "session_id")
    await g.session_for(owner(request), sid, min_seq(request))
    return await g.models.list_messages(sid)


ROUTES = [create_session, list_sessions, get_session, mark_read, upload_dataset, list_datasets,
          submit, analysis_status, list_messages]
