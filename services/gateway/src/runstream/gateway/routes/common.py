"""Small helpers shared by the route modules."""

from __future__ import annotations

from typing import Any

from litestar import Request

from runstream.contracts import validate_id
from runstream.gateway.errors import ApiError
from runstream.gateway.state import Gateway, gateway_of

Req = Request[Any, Any, Any]


def gw(request: Request[Any, Any, Any]) -> Gateway:
    return gateway_of(request.app.state)


def owner(request: Request[Any, Any, Any]) -> str:
    return str(request.user)


def ident(value: str, field: str) -> str:
    return validate_id(value, field=field)


def min_seq(request: Request[Any, Any, Any]) -> int:
    raw = request.query_params.get("min_seq")
    if raw is None:
        return 0
    if not raw.isdigit():
        raise ApiError(422, "invalid_request", "min_seq must be a stream sequence")
    return int(raw)


def prefer_wait(request: Request[Any, Any, Any], cap: float) -> float | None:
    """`Prefer: wait=N` (RFC 7240), capped; None when absent."""
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "wait":
            try:
                seconds = float(value.strip())
            except ValueError:
                raise ApiError(400, "invalid_prefer", "Prefer: wait=N needs a number") from None
            if seconds < 0:
                raise ApiError(400, "invalid_prefer", "Prefer: wait=N must not be negative")
            return min(seconds, cap)
    return None
