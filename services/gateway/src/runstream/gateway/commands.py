"""The write side: every request that publishes an event, for one owner.

Each command checks what it can before it writes, so a refused request writes nothing,
and answers with the stream sequence it wrote (`as_of_seq`).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import structlog

from runstream.bus import Committed, put_dataset
from runstream.contracts import (
    MESSAGE_END_TYPE,
    CancelRequested,
    ChartCancelled,
    ChartCancelRequested,
    ChartRequested,
    derived_id,
    is_task_terminal,
    is_terminal,
    new_id,
    utcnow,
)
from runstream.gateway.datasets import Inspected, UnreadableDataset, detect_format, inspect_dataset
from runstream.gateway.errors import ApiError, unavailable_dependency
from runstream.gateway.fanout import Scope
from runstream.gateway.schemas import (
    Cancelled,
    ChartRequest,
    ChartTaskAccepted,
    ChartTaskCancelled,
    DatasetCreated,
    Message,
    Session,
    StreamToken,
    SubmitAccepted,
    load,
)
from runstream.gateway.state import Gateway

logger = structlog.get_logger()


class Commands:
    def __init__(self, gateway: Gateway, owner: str) -> None:
        self.g = gateway
        self.owner = owner

    # --- sessions -----------------------------------------------------------------------
    async def create_session(self, title: str) -> Session:
        g = self.g
        title = title.strip()
        if len(title) > g.settings.title_max_chars:
            raise ApiError(422, "invalid_request", f"title is limited to "
                           f"{g.settings.title_max_chars} characters", {"field": "title"})
        # The answer is read back from Postgres: make sure it answers before writing, so
        # that a 503 for Postgres means nothing was written (a retry makes no second session).
        await g.models.checkpoint()
        sid = new_id()
        committed = await g.sessions.create(sid, owner=self.owner, title=title)
        g.recent.add(sid, committed.seq)
        last = committed.seq
        if g.settings.sample_dataset:
            last = await self._attach_sample(sid) or last
        try:
            await g.caught_up(last, sid)
            row = await g.models.get_session(sid)
        except Exception as exc:
            if unavailable_dependency(exc) != "postgres":
                raise
            row = None  # the session exists now: say so, even if it cannot be read back yet
        if row is not None:
            return load(Session, row)
        # The projector lags: answer from the event itself.
        at = committed.event.at
        return Session(session_id=sid, owner=self.owner, title=title, created_at=at,
                       status="idle", last_activity_at=at, projected=False)

    async def _attach_sample(self, sid: str) -> int | None:
        """Attach the bundled sample dataset so a newcomer can ask at once."""
        g = self.g
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

    async def rename(self, sid: str, title: str) -> Session:
        g = self.g
        await g.session_for(self.owner, sid)
        committed = await g.sessions.rename(sid, owner=self.owner, title=title.strip())
        await g.caught_up(committed.seq, sid)
        return load(Session, await g.session_for(self.owner, sid))

    async def mark_read(self, sid: str) -> Session:
        g = self.g
        await g.session_for(self.owner, sid)
        committed = await g.sessions.mark_read(sid, owner=self.owner)
        await g.caught_up(committed.seq, sid)
        return load(Session, await g.session_for(self.owner, sid))

    # --- datasets -----------------------------------------------------------------------
    async def attach_dataset(self, sid: str, data: bytes, *, name: str,
                             declared: str | None, content_type: str | None) -> DatasetCreated:
        g = self.g
        name = name.strip()
        if not name:
            raise ApiError(422, "invalid_request", "name must not be blank", {"field": "name"})
        if not data:
            raise ApiError(422, "empty_dataset", "the request body is empty: send CSV or Parquet")
        try:
            fmt = detect_format(data, declared, content_type)
            inspected: Inspected = await inspect_dataset(data, fmt)
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
        await g.caught_up(committed.seq, sid)
        return DatasetCreated(
            dataset_id=dataset_id, session_id=sid, name=name, format=fmt,
            size_bytes=len(data), row_count=inspected.row_count, columns=inspected.columns,
            sample_rows=inspected.sample_rows, as_of_seq=committed.seq,
        )

    # --- analyses -----------------------------------------------------------------------
    async def submit(self, sid: str, question: str, dataset_id: str | None = None, *,
                     wait_s: float | None = None) -> SubmitAccepted | Message:
        question = question.strip()
        limit = self.g.settings.question_max_bytes
        if len(question.encode()) > limit:
            raise ApiError(422, "question_too_long", f"question is limited to {limit} bytes",
                           {"field": "question", "limit": limit})
        await self.g.check_session(self.owner, sid)
        return await self._request_analysis(sid, question, dataset_id, wait_s=wait_s)

    async def retry(self, mid: str, *, wait_s: float | None = None) -> SubmitAccepted | Message:
        message = await self.g.message_for(self.owner, mid)
        if message["role"] != "assistant":
            raise ApiError(409, "not_an_analysis", "only an analysis message can be retried")
        return await self._request_analysis(message["session_id"], message["question"],
                                            message.get("dataset_id"), retry_of=mid,
                                            wait_s=wait_s)

    async def _request_analysis(
        self, sid: str, question: str, dataset_id: str | None, *,
        retry_of: str | None = None, wait_s: float | None = None,
    ) -> SubmitAccepted | Message:
        """One conditional `analysis_requested`; with `wait_s`, the settled message when it
        settles in time."""
        g = self.g
        if dataset_id is not None:
            ds = await g.models.get_dataset(dataset_id)
            if ds is None or ds["session_id"] != sid:
                raise ApiError(404, "not_found", f"dataset {dataset_id} not found in this "
                               "session", {"kind": "dataset", "id": dataset_id})
        mid, umid = new_id(), new_id()
        # Subscribe before the write, so a fast settle cannot slip past the waiter.
        waiter = _SettleWaiter(g, sid, mid) if wait_s else None
        try:
            committed: Committed = await g.sessions.request_analysis(
                sid, owner=self.owner, question=question, message_id=mid,
                user_message_id=umid, dataset_id=dataset_id, retry_of=retry_of,
            )
            g.recent.add(mid, committed.seq)
            g.recent.add(umid, committed.seq)
            if waiter is not None and wait_s:
                settled_seq = await waiter.wait(wait_s)
                if settled_seq is not None:
                    await g.caught_up(settled_seq, sid)
                    return load(Message, await g.message_for(self.owner, mid))
        finally:
            if waiter is not None:
                waiter.close()
        return SubmitAccepted(message_id=mid, user_message_id=umid, session_id=sid,
                              as_of_seq=committed.seq, retry_of=retry_of)

    async def cancel(self, mid: str) -> Cancelled:
        g = self.g
        message = await g.message_for(self.owner, mid)
        if message["role"] != "assistant":
            raise ApiError(409, "not_an_analysis", "only an analysis message can be cancelled")
        if is_terminal(message["status"]):
            raise ApiError(409, "already_settled", f"the analysis is already {message['status']}",
                           {"status": message["status"]})
        sid = message["session_id"]
        await g.bus.publish(CancelRequested(
            event_id=derived_id(mid, "cancel_requested"), at=utcnow(), session_id=sid,
            message_id=mid, requested_by=self.owner,
        ))
        # Settle at once: the lock frees now, whatever the workers are doing.
        committed = await g.sessions.settle(sid, mid, "cancelled", summary="cancelled by the user")
        return Cancelled(message_id=mid, as_of_seq=committed.seq)

    # --- charts -------------------------------------------------------------------------
    async def request_chart(self, mid: str, request: ChartRequest) -> ChartTaskAccepted:
        g = self.g
        message = await g.message_for(self.owner, mid)
        if not message.get("result"):
            raise ApiError(409, "no_result", "a chart needs a completed result",
                           {"status": message["status"]})
        if not request.force_create and not request.adjustment_query:
            charts = await g.models.list_charts(mid)
            if charts["has_active_tasks"]:
                task = charts["active_tasks"][0]
                return ChartTaskAccepted(task_id=task["task_id"], message_id=mid,
                                         status=task["status"], reused=True,
                                         as_of_seq=charts["as_of_seq"])
        tid = new_id()
        pub = await g.bus.publish(ChartRequested(
            event_id=new_id(), at=utcnow(), session_id=message["session_id"], task_id=tid,
            message_id=mid, owner=self.owner, adjustment_query=request.adjustment_query,
            force_create=request.force_create,
        ))
        g.recent.add(tid, pub.seq)
        return ChartTaskAccepted(task_id=tid, message_id=mid, status="pending", reused=False,
                                 as_of_seq=pub.seq)

    async def cancel_chart(self, tid: str) -> ChartTaskCancelled:
        g = self.g
        task = await g.chart_task_for(self.owner, tid)
        if is_task_terminal(task["status"]):
            raise ApiError(409, "already_finished", f"the chart task is already {task['status']}",
                           {"status": task["status"]})
        common: dict[str, Any] = {"at": utcnow(), "session_id": task["session_id"],
                                  "task_id": tid, "message_id": task["message_id"]}
        await g.bus.publish(ChartCancelRequested(
            event_id=derived_id(tid, "chart_cancel_requested"), requested_by=self.owner,
            **common))
        pub = await g.bus.publish(ChartCancelled(event_id=derived_id(tid, "chart_cancelled"),
                                                 **common))
        return ChartTaskCancelled(task_id=tid, as_of_seq=pub.seq)

    # --- tokens -------------------------------------------------------------------------
    def stream_token(self) -> StreamToken:
        ttl = self.g.settings.stream_token_ttl_s
        token, exp = self.g.tokens.issue(self.owner, ttl_s=ttl, typ="stream")
        return StreamToken(token=token, expires_at=exp, ttl_s=ttl)


class _SettleWaiter:
    """A private fan-out client on one message, to answer `Prefer: wait=N`."""

    def __init__(self, g: Gateway, sid: str, mid: str) -> None:
        self.g = g
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
            if frame.type == MESSAGE_END_TYPE:
                return frame.seq
        return None

    def close(self) -> None:
        self.g.hub.unregister(self.client)
