"""HTTP errors: one shape, `{"error": {"code", "message", "details"}}`, mapped in one place."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from runstream.bus import ConcurrencyConflict, LockHeld, SessionNotFound
from runstream.contracts import InvalidId

logger = structlog.get_logger()


class ApiError(Exception):
    """A client-facing error with a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.extra = extra or {}


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} not found", {"kind": kind, "id": ident})


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _respond(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    return Response(payload, status_code=status, headers=headers)


def api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _respond(exc.status, {**body(exc.code, exc.message, exc.details), **exc.extra})


def invalid_id_handler(_: Request[Any, Any, Any], exc: InvalidId) -> Response[Any]:
    return _respond(422, body("invalid_id", exc.detail, {"field": exc.field}))


def lock_held_handler(_: Request[Any, Any, Any], exc: LockHeld) -> Response[Any]:
    payload = body(exc.code, exc.detail, {"active_message_id": exc.holder})
    payload["active_message_id"] = exc.holder
    return _respond(409, payload)


def session_missing_handler(_: Request[Any, Any, Any], exc: SessionNotFound) -> Response[Any]:
    return _respond(404, body("not_found", exc.detail))


def conflict_handler(_: Request[Any, Any, Any], exc: ConcurrencyConflict) -> Response[Any]:
    return _respond(409, body(exc.code, exc.detail), {"Retry-After": "1"})


def validation_handler(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    details: dict[str, Any] = {}
    if isinstance(exc.extra, list):
        details["fields"] = exc.extra
    return _respond(400, body("invalid_request", str(exc.detail), details))


def http_handler(req: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, NotAuthorizedException):
        code = "unauthorized"
        headers = {"WWW-Authenticate": "Bearer"}
        return _respond(status, body(code, str(exc.detail)), headers)
    if isinstance(exc, NotFoundException):
        return _respond(404, body("not_found", str(exc.detail)))
    if status >= 500:
        logger.error("http_error", path=req.url.path, status=status, detail=str(exc.detail))
        return _respond(status, body("server_error", "internal error"))
    code = {405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
            429: "rate_limited"}.get(status, "bad_request")
    return _respond(status, body(code, str(exc.detail)), dict(exc.headers or {}))


def unexpected_handler(req: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled_error", path=req.url.path, error=type(exc).__name__)
    return _respond(HTTP_500_INTERNAL_SERVER_ERROR, body("server_error", "internal error"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: api_error_handler,
    InvalidId: invalid_id_handler,
    LockHeld: lock_held_handler,
    SessionNotFound: session_missing_handler,
    ConcurrencyConflict: conflict_handler,
    ValidationException: validation_handler,
    HTTPException: http_handler,
    Exception: unexpected_handler,
}
