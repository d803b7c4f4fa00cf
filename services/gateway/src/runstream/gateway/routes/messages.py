"""Messages: read (with ETag for cheap polling), logs, cancel, retry, CSV, charts."""

from __future__ import annotations

import csv
import io
from typing import Any

from litestar import Response, delete, get, post
from litestar.params import FromPath

from runstream.contracts import (
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
from runstream.gateway.bodies import ChartRequest, read_json
from runstream.gateway.errors import ApiError
from runstream.gateway.routes.common import Req, gw, ident, min_seq, owner
from runstream.gateway.routes.sessions import submit_analysis


def _etag(message: dict[str, Any]) -> str:
    return f'W/"{message["message_id"]}-{message.get("last_seq") or 0}"'


@get("/api/messages/{message_id:str}")
async def get_message(request: Req, message_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    message = await g.message_for(owner(request), ident(message_id, "message_id"),
                                  min_seq(request))
    etag = _etag(message)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(b"", status_code=304, headers=headers)
    return Response(message, headers=headers)


@get("/api/messages/{message_id:str}/logs")
async def get_logs(request: Req, message_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    await g.message_for(owner(request), mid, min_seq(request))
    raw = request.query_params.get("after_seq", "0")
    if not raw.isdigit():
        raise ApiError(422, "invalid_cursor", "after_seq must be a stream sequence")
    return await g.models.get_logs(mid, after_seq=int(raw))


@post("/api/messages/{message_id:str}/cancel", status_code=202)
async def cancel(request: Req, message_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    message = await g.message_for(owner(request), mid)
    if message["role"] != "assistant":
        raise ApiError(409, "not_an_analysis", "only an analysis message can be cancelled")
    if is_terminal(message["status"]):
        raise ApiError(409, "already_settled", f"the analysis is already {message['status']}",
                       {"status": message["status"]})
    sid = message["session_id"]
    await g.bus.publish(CancelRequested(
        event_id=derived_id(mid, "cancel_requested"), at=utcnow(), session_id=sid,
        message_id=mid, requested_by=owner(request),
    ))
    # Settle at once: the lock frees now, whatever the workers are doing.
    committed = await g.sessions.settle(sid, mid, "cancelled", summary="cancelled by the user")
    return Response({"message_id": mid, "status": "cancelled", "as_of_seq": committed.seq},
                    status_code=202)


@post("/api/messages/{message_id:str}/retry", status_code=202)
async def retry(request: Req, message_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    message = await g.message_for(owner(request), mid)
    if message["role"] != "assistant":
        raise ApiError(409, "not_an_analysis", "only an analysis message can be retried")
    return await submit_analysis(g, request, message["session_id"], message["question"],
                                 message.get("dataset_id"), retry_of=mid)


@get("/api/messages/{message_id:str}/result.csv", media_type="text/csv")
async def result_csv(request: Req, message_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    message = await g.message_for(owner(request), mid)
    result = message.get("result")
    if not result:
        raise ApiError(409, "no_result", "this message has no result (yet)",
                       {"status": message["status"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c["name"] for c in result["columns"]])
    writer.writerows(result["rows"])
    return Response(out.getvalue(), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{mid}.csv"',
        "X-Runstream-Truncated": "true" if result.get("truncated") else "false",
        "X-Runstream-Row-Count": str(result.get("row_count", len(result["rows"]))),
    })


@post("/api/messages/{message_id:str}/charts", status_code=202)
async def request_chart(request: Req, message_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    body = await read_json(request, ChartRequest, optional=True)
    if body.adjustment_query is not None and len(body.adjustment_query) > 1000:
        raise ApiError(422, "invalid_request", "adjustment_query is limited to 1000 characters")
    message = await g.message_for(owner(request), mid)
    if not message.get("result"):
        raise ApiError(409, "no_result", "a chart needs a completed result",
                       {"status": message["status"]})
    if not body.force_create and not body.adjustment_query:
        charts = await g.models.list_charts(mid)
        if charts["has_active_tasks"]:
            task = charts["active_tasks"][0]
            return Response({"task_id": task["task_id"], "status": task["status"],
                             "reused": True, "as_of_seq": charts["as_of_seq"]}, status_code=202)
    tid = new_id()
    pub = await g.bus.publish(ChartRequested(
        event_id=new_id(), at=utcnow(), session_id=message["session_id"], task_id=tid,
        message_id=mid, owner=owner(request), adjustment_query=body.adjustment_query,
        force_create=body.force_create,
    ))
    g.recent.add(tid, pub.seq)
    return Response({"task_id": tid, "message_id": mid, "status": "pending", "reused": False,
                     "as_of_seq": pub.seq}, status_code=202,
                    headers={"Location": f"/api/charts/{tid}"})


@get("/api/messages/{message_id:str}/charts")
async def list_charts(request: Req, message_id: FromPath[str]) -> dict[str, Any]:
    g = gw(request)
    mid = ident(message_id, "message_id")
    await g.message_for(owner(request), mid)
    return await g.models.list_charts(mid)


@get("/api/charts/{task_id:str}")
async def get_chart_task(request: Req, task_id: FromPath[str]) -> dict[str, Any]:
    return await gw(request).chart_task_for(
        owner(request), ident(task_id, "task_id"), min_seq(request))


@delete("/api/charts/{task_id:str}", status_code=202)
async def cancel_chart(request: Req, task_id: FromPath[str]) -> Response[Any]:
    g = gw(request)
    tid = ident(task_id, "task_id")
    task = await g.chart_task_for(owner(request), tid)
    if is_task_terminal(task["status"]):
        raise ApiError(409, "already_finished", f"the chart task is already {task['status']}",
                       {"status": task["status"]})
    common = {"at": utcnow(), "session_id": task["session_id"], "task_id": tid,
              "message_id": task["message_id"]}
    await g.bus.publish(ChartCancelRequested(
        event_id=derived_id(tid, "chart_cancel_requested"), requested_by=owner(request),
        **common))
    pub = await g.bus.publish(ChartCancelled(event_id=derived_id(tid, "chart_cancelled"),
                                             **common))
    return Response({"task_id": tid, "status": "cancelled", "as_of_seq": pub.seq},
                    status_code=202)


ROUTES = [get_message, get_logs, cancel, retry, result_csv, request_chart, list_charts,
          get_chart_task, cancel_chart]
