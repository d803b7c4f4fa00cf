"""HTTP errors: one shape, `{"error": {"code", "message", "details"}}`, mapped in one place."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    SerializationException,
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
from runstream.gateway.schemas import ConflictBody, ErrorBody, ErrorDetail
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


# --- the one mapping from anything raised to an ApiError ------------------------------
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited"}


def _from_validation(request: Request[Any, Any, Any], exc: ValidationException) -> ApiError:
    """Litestar's parameter and body validation: 422 naming the fields (400 without a body)."""
    fields = exc.extra if isinstance(exc.extra, list) else []
    if any(f.get("source") == "body" and f.get("key") == "data" and f.get("message") == "'data'"
           for f in fields if isinstance(f, dict)):
        return ApiError(400, "invalid_json", "a JSON body is required")
    bad_ids = [f for f in fields if isinstance(f, dict) and f.get("source") == "path"]
    if bad_ids:
        field = str(bad_ids[0].get("key", "id"))
        return ApiError(422, "invalid_id", f"{field} is not a valid id", {"field": field})
    where = f"{request.method} {request.url.path}"
    return ApiError(422, "invalid_request", f"invalid request for {where}", {"fields": fields})


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> ApiError:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        return ApiError(status, "unauthorized", str(exc.detail),
                        headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc.__cause__, SerializationException):
        return ApiError(400, "invalid_json", f"malformed JSON: {exc.detail}".replace(
            "JSON is malformed: ", ""))
    if status == 503:
        return ApiError(503, "unavailable", str(exc.detail), {"dependency": "gateway"},
                        headers=retry_after("gateway"))
    if status >= 500:
        logger.error("http.error", path=request.url.path, status=status, detail=str(exc.detail))
        return ApiError(status, "server_error", "internal error")
    return ApiError(status, _HTTP_CODES.get(status, "bad_request"), str(exc.detail),
                    headers=headers)


def to_api_error(request: Request[Any, Any, Any], exc: Exception) -> ApiError:
    match exc:
        case ApiError():
            return exc
        case InvalidId():
            return ApiError(422, "invalid_id", exc.detail, {"field": exc.field})
        case LockHeld():
            return ApiError(409, exc.code, exc.detail, {"active_message_id": exc.holder},
                            extra={"active_message_id": exc.holder})
        case SessionNotFound():
            return ApiError(404, "not_found", exc.detail)
        case ConcurrencyConflict():
            return ApiError(409, exc.code, exc.detail, headers={"Retry-After": "1"})
        case ValidationException():
            return _from_validation(request, exc)
        case HTTPException():
            return _from_http(request, exc)
    dependency = unavailable_dependency(exc)
    if dependency is not None:
        # An outage, not a bug: one line, no traceback, and the client is told to retry.
        logger.warning("http.dependency_unavailable", path=request.url.path, dependency=dependency,
                       error=type(exc).__name__, detail=str(exc)[:200])
        name = {"postgres": "Postgres", "nats": "NATS"}.get(dependency, "a dependency")
        return unavailable(dependency, f"{name} is unavailable right now; try again shortly")
    logger.exception("http.unhandled_error", path=request.url.path, error=type(exc).__name__)
    return ApiError(HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "internal error")


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one exception handler: every error is `{"error": {code, message, details}}`."""
    error = to_api_error(request, exc)
    detail = ErrorDetail(code=error.code, message=error.message, details=error.details)
    payload = (ConflictBody(error=detail, **error.extra) if error.extra
               else ErrorBody(error=detail))
    return Response(payload, status_code=error.status, headers=error.headers or None)


EXCEPTION_HANDLERS: dict[Any, Any] = {Exception: handle}
