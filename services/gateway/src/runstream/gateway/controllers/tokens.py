"""Stream tokens: short-lived, for EventSource, which cannot send an Authorization header."""

from __future__ import annotations

from litestar import Controller, post

from runstream.gateway.dependencies import CommandsDep
from runstream.gateway.openapi import API_SECURITY, ApiOperation, errors
from runstream.gateway.ratelimit import WRITES
from runstream.gateway.schemas import StreamToken


class TokenController(Controller):
    path = "/api/stream-tokens"
    tags = ["streams"]
    security = API_SECURITY

    @post("/", status_code=201, operation_class=ApiOperation, opt=WRITES,
          responses=errors(401, 429, 503))
    async def stream_token(self, commands: CommandsDep) -> StreamToken:
        """A token that opens stream routes only (as `?token=`), for a few minutes."""
        return commands.stream_token()
