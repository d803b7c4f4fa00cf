"""Analyses and their messages: submit, the page-refresh status, history, one message,
its logs, cancel, retry, and the result as CSV."""

from __future__ import annotations

import csv
import io
from typing import Annotated, cast

from litestar import Controller, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, QueryParameter

from runstream.contracts import utcnow
from runstream.gateway.dependencies import (
    CommandsDep,
    GatewayDep,
    ModelsDep,
    OwnerDep,
    SettingsDep,
)
from runstream.gateway.errors import ApiError
from runstream.gateway.openapi import API_SECURITY, READ, ApiOperation, errors
from runstream.gateway.ratelimit import WRITES
from runstream.gateway.schemas import (
    MAX_JSON_BYTES,
    AnalysisStatus,
    Cancelled,
    LogPage,
    Message,
    MessageHistory,
    MessageId,
    MinSeq,
    Prefer,
    SessionId,
    SubmitAccepted,
    SubmitAnalysis,
    load,
)

IfNoneMatch = Annotated[str, HeaderParameter(name="If-None-Match", max_length=200)]
Cursor = Annotated[int, QueryParameter(ge=0, description="Only logs after this stream sequence.")]
SETTLED_IN_TIME = ResponseSpec(
    data_container=Message, generate_examples=False,
    description="With `Prefer: wait=N`: the analysis settled in time; the settled message.")
LOCATION = ResponseHeader(name="Location", description="The analysis message.",
                          documentation_only=True)


def prefer_wait(prefer: str, cap: float) -> float | None:
    """`Prefer: wait=N` (RFC 7240), capped; None when absent. A preference the server
    cannot read is ignored, as the RFC asks."""
    for part in prefer.split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None
            return min(seconds, cap) if seconds > 0 else None
    return None


def _answer(result: SubmitAccepted | Message, wait_s: float | None) -> Response[SubmitAccepted]:
    if isinstance(result, Message):
        # Documented as the 200 answer; the annotation names the usual 202 one.
        return cast(Response[SubmitAccepted], Response(
            result, status_code=200, headers={"Preference-Applied": f"wait={wait_s:g}"}))
    return Response(result, status_code=202,
                    headers={"Location": f"/api/messages/{result.message_id}"})


class AnalysisController(Controller):
    path = "/api"
    tags = ["analyses"]
    security = API_SECURITY

    @post("/sessions/{session_id:str}/analyses", status_code=202, operation_class=ApiOperation,
          opt=WRITES, request_max_body_size=MAX_JSON_BYTES, response_headers=[LOCATION],
          responses={200: SETTLED_IN_TIME, **errors(400, 401, 404, 413, 422, 429, 503,
                                                    lock_held=True)})
    async def submit(self, commands: CommandsDep, session_id: SessionId,
                     data: JSONBody[SubmitAnalysis],
                     prefer: Prefer = "") -> Response[SubmitAccepted]:
        """Starts an analysis of the question: one at a time per session (409 otherwise)."""
        wait_s = prefer_wait(prefer, commands.g.settings.prefer_wait_max_s)
        result = await commands.submit(session_id, data.question, data.dataset_id, wait_s=wait_s)
        return _answer(result, wait_s)

    @get("/sessions/{session_id:str}/analysis-status", operation_class=ApiOperation,
         responses=errors(*READ))
    async def analysis_status(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                              session_id: SessionId, min_seq: MinSeq = 0) -> AnalysisStatus:
        """The page-refresh recovery call: the active analysis, else the latest one."""
        await gateway.session_for(owner, session_id, min_seq)
        status = await models.analysis_status(session_id)
        if status is None:  # a session row is never deleted; be exact all the same
            raise ApiError(404, "not_found", f"session {session_id} not found")
        return load(AnalysisStatus, {**status, "server_time": utcnow()})

    @get("/sessions/{session_id:str}/messages", operation_class=ApiOperation,
         responses=errors(*READ))
    async def list_messages(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                            session_id: SessionId, min_seq: MinSeq = 0) -> MessageHistory:
        """The session's history, oldest first, with status and results."""
        await gateway.session_for(owner, session_id, min_seq)
        return load(MessageHistory, await models.list_messages(session_id))

    @get("/messages/{message_id:str}", operation_class=ApiOperation,
         response_headers=[ResponseHeader(name="ETag", documentation_only=True,
                                          description="Send as If-None-Match to poll cheaply.")],
         responses={304: ResponseSpec(data_container=None, description="Unchanged since the "
                                      "ETag sent as If-None-Match.", generate_examples=False),
                    **errors(*READ)})
    async def get_message(self, gateway: GatewayDep, owner: OwnerDep, message_id: MessageId,
                          min_seq: MinSeq = 0, if_none_match: IfNoneMatch = "",
                          ) -> Response[Message]:
        row = await gateway.message_for(owner, message_id, min_seq)
        etag = f'W/"{row["message_id"]}-{row.get("last_seq") or 0}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in {t.strip() for t in if_none_match.split(",")}:
            return cast(Response[Message], Response(b"", status_code=304, headers=headers))
        return Response(load(Message, row), headers=headers)

    @get("/messages/{message_id:str}/logs", operation_class=ApiOperation,
         responses=errors(*READ))
    async def get_logs(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                       message_id: MessageId, after_seq: Cursor = 0,
                       min_seq: MinSeq = 0) -> LogPage:
        """Logs after a sequence (with `has_more`, ask again from the last one)."""
        await gateway.message_for(owner, message_id, min_seq)
        return load(LogPage, await models.get_logs(message_id, after_seq=after_seq))

    @post("/messages/{message_id:str}/cancel", status_code=202, operation_class=ApiOperation,
          responses=errors(401, 404, 409, 422, 503))
    async def cancel(self, commands: CommandsDep, message_id: MessageId) -> Cancelled:
        """Settles the analysis `cancelled` at once (the session is free again)."""
        return await commands.cancel(message_id)

    @post("/messages/{message_id:str}/retry", status_code=202, operation_class=ApiOperation,
          opt=WRITES, response_headers=[LOCATION],
          responses={200: SETTLED_IN_TIME, **errors(401, 404, 422, 429, 503,
                                                    lock_held=True)})
    async def retry(self, commands: CommandsDep, settings: SettingsDep, message_id: MessageId,
                    prefer: Prefer = "") -> Response[SubmitAccepted]:
        """A new analysis of the same question (and dataset)."""
        wait_s = prefer_wait(prefer, settings.prefer_wait_max_s)
        return _answer(await commands.retry(message_id, wait_s=wait_s), wait_s)

    @get("/messages/{message_id:str}/result.csv", media_type="text/csv",
         operation_class=ApiOperation, responses=errors(401, 404, 409, 422, 503),
         response_headers=[
             ResponseHeader(name="X-Runstream-Truncated", documentation_only=True,
                            description="`true` when the result holds fewer rows than the query "
                                        "returned."),
             ResponseHeader(name="X-Runstream-Row-Count", documentation_only=True,
                            description="The rows the query returned.")])
    async def result_csv(self, gateway: GatewayDep, owner: OwnerDep,
                         message_id: MessageId) -> Response[str]:
        """The result as CSV (409 while there is none)."""
        message = await gateway.message_for(owner, message_id)
        result = message.get("result")
        if not result:
            raise ApiError(409, "no_result", "this message has no result (yet)",
                           {"status": message["status"]})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([c["name"] for c in result["columns"]])
        writer.writerows(result["rows"])
        return Response(out.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{message_id}.csv"',
            "X-Runstream-Truncated": "true" if result.get("truncated") else "false",
            "X-Runstream-Row-Count": str(result.get("row_count", len(result["rows"]))),
        })
