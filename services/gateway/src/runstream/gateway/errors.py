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

from runstream.bus import (
    ConcurrencyConflict,
    LockHeld,
    SessionNotFound,
    exception_family,
    nats_unavailable,
)
from runstream.contracts import InvalidId
from runstream.store import postgres_unavailable

logger = structlog.get_logger()

# Seconds a client should wait before trying again, per dependency: the NATS client
# reconnects every 0.5 s; a Postgres restart (shutdown, recovery) takes a few seconds.
RETRY_AFTER_S = {"nats": 2, "postgres": 3, "gateway": 1}
DEFAULT_RETRY_AFTER_S = 3


class ApiError(Exception):
    """A client-facing error with a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.extra = extra or {}
        self.headers = headers or {}


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{kind} {ident} not found", {"kind": kind, "id": ident})


def unavailable(dependency: str, message: str) -> ApiError:
    return ApiError(503, "unavailable", message, {"dependency": dependency},
                    headers=retry_after(dependency))


def retry_after(dependency: str) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S.get(dependency, DEFAULT_RETRY_AFTER_S))}


# --- which failures are a dependency outage -------------------------------------------
def _raised_by(exc: BaseException) -> str:
    """For a plain socket error or timeout: the client library it came out of."""
    origin = "unknown"
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame of a client library wins
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(("asyncpg", "runstream.store")):
            origin = "postgres"
        elif module.startswith(("nats", "runstream.bus")):
            origin = "nats"
        tb = tb.tb_next
    return origin


def unavailable_dependency(exc: BaseException) -> str | None:
    """The dependency ("postgres", "nats" or "unknown") whose being down or not answering
    in time caused `exc`; None for anything else (a bug stays a 500)."""
    for e in exception_family(exc):
        if postgres_unavailable(e):
            return "postgres"
        if nats_unavailable(e):
            return "nats"
        if isinstance(e, OSError):  # refused, reset, unreachable; and TimeoutError
            return _raised_by(e)
    return None


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _respond(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None):
    return Response(payload, status_code=status, headers=headers)


def api_error_handler(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _respond(exc.status, {**body(exc.code, exc.message, exc.details), **exc.extra},
                    exc.headers or None)


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
    if status == 503:
        return _respond(503, body("unavailable", str(exc.detail), {"dependency": "gateway"}),
                        retry_after("gateway"))
    if status >= 500:
        logger.error("http.error", path=req.url.path, status=status, detail=str(exc.detail))
        return _respond(status, body("server_error", "internal error"))
    code = {405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
            429: "rate_limited"}.get(status, "bad_request")
    return _respond(status, body(code, str(exc.detail)), dict(exc.headers or {}))


def unexpected_handler(req: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    dependency = unavailable_dependency(exc)
    if dependency is not None:
        # An outage, not a bug: one line, no traceback, and the client is told to retry.
        logger.warning("http.dependency_unavailable", path=req.url.path, dependency=dependency,
                       error=type(exc).__name__, detail=str(exc)[:200])
        name = {"postgres": "Postgres", "nats": "NATS"}.get(dependency, "a dependency")
        return api_error_handler(req, unavailable(
            dependency, f"{name} is unavailable right now; try again shortly"))
    logger.exception("http.unhandled_error", path=req.url.path, error=type(exc).__name__)
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
