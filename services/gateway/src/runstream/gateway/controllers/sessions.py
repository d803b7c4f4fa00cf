"""Sessions: create, list, read one, rename, mark completed work seen."""

from __future__ import annotations

from litestar import Controller, Response, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.params import JSONBody

from runstream.gateway.dependencies import CommandsDep, GatewayDep, ModelsDep, OwnerDep
from runstream.gateway.openapi import API_SECURITY, READ, ApiOperation, errors
from runstream.gateway.ratelimit import WRITES
from runstream.gateway.schemas import (
    MAX_JSON_BYTES,
    CreateSession,
    MinSeq,
    RenameSession,
    Session,
    SessionId,
    SessionList,
    load,
)

LOCATION = ResponseHeader(name="Location", description="The new resource.",
                          documentation_only=True)


class SessionController(Controller):
    path = "/api/sessions"
    tags = ["sessions"]
    security = API_SECURITY

    @post("/", status_code=201, operation_class=ApiOperation, opt=WRITES,
          request_max_body_size=MAX_JSON_BYTES, response_headers=[LOCATION],
          responses=errors(400, 401, 413, 422, 429, 503))
    async def create_session(self, commands: CommandsDep,
                             data: JSONBody[CreateSession | None] = None) -> Response[Session]:
        """A new chat session (with the sample dataset attached when one is configured)."""
        session = await commands.create_session(data.title if data else "")
        return Response(session, status_code=201,
                        headers={"Location": f"/api/sessions/{session.session_id}"})

    @get("/", operation_class=ApiOperation, responses=errors(401, 422, 503))
    async def list_sessions(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                            min_seq: MinSeq = 0) -> SessionList:
        """The owner's sessions, most recently active first."""
        await gateway.caught_up(min_seq)
        return load(SessionList, await models.list_sessions(owner))

    @get("/{session_id:str}", operation_class=ApiOperation, responses=errors(*READ))
    async def get_session(self, gateway: GatewayDep, owner: OwnerDep, session_id: SessionId,
                          min_seq: MinSeq = 0) -> Session:
        return load(Session, await gateway.session_for(owner, session_id, min_seq))

    @patch("/{session_id:str}", operation_class=ApiOperation, opt=WRITES,
           request_max_body_size=MAX_JSON_BYTES,
           responses=errors(400, 401, 404, 413, 422, 429, 503))
    async def rename_session(self, commands: CommandsDep, session_id: SessionId,
                             data: JSONBody[RenameSession]) -> Session:
        """Names the session (a `session_renamed` event); unnamed sessions take the
        first question as their title."""
        return await commands.rename(session_id, data.title)

    @post("/{session_id:str}/read", status_code=200, operation_class=ApiOperation,
          responses=errors(*READ))
    async def mark_read(self, commands: CommandsDep, session_id: SessionId) -> Session:
        """Marks the session's completed work seen (clears `has_notification`)."""
        return await commands.mark_read(session_id)
