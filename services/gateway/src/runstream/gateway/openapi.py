"""What the OpenAPI document says beyond the handlers' types: the error responses each
operation can answer, the headers that come with them, security, and raw bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from runstream.gateway.schemas import ConflictBody, ErrorBody

BEARER = "BearerToken"
STREAM_TOKEN = "StreamToken"
API_SECURITY: list[dict[str, list[str]]] = [{BEARER: []}]
# EventSource cannot send headers: a stream route also takes a stream token as `?token=`.
STREAM_SECURITY: list[dict[str, list[str]]] = [{BEARER: []}, {STREAM_TOKEN: []}]

_ERRORS = {
    400: "Malformed JSON, or a required JSON body is missing (`invalid_json`).",
    401: "No valid bearer token (`unauthorized`).",
    404: "No such resource for this owner (`not_found`): another owner's is a 404 too.",
    409: "The resource's state does not allow this now (`already_settled`, `no_result`, ...).",
    413: "The body is over the limit (`payload_too_large`).",
    422: "A parameter or field breaks the schema (`invalid_request`, `invalid_id`, ...).",
    429: "Too many requests (`rate_limited`): retry after `Retry-After` seconds.",
    503: "Postgres or NATS is unavailable (`unavailable`): retry after `Retry-After` seconds.",
}
# Routes that touch a resource by id answer these besides their own.
READ = (401, 404, 422, 503)


def errors(*statuses: int, lock_held: bool = False) -> dict[int, ResponseSpec]:
    """The error responses of one operation, all in the one error shape."""
    specs = {
        status: ResponseSpec(data_container=ErrorBody, description=_ERRORS[status],
                             generate_examples=False)
        for status in statuses
    }
    if lock_held:
        specs[409] = ResponseSpec(
            data_container=ConflictBody, generate_examples=False,
            description="Another analysis runs in the session (`analysis_in_progress`, with "
                        "`active_message_id`), or the message cannot be retried.")
    return specs


def _retry_after() -> OpenAPIHeader:
    return OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER, minimum=1), required=True,
                         description="Seconds to wait before trying again.")


def _litestar_default(response: Any) -> bool:
    """Litestar's own 400 for validation errors (`{status_code, detail, extra}`)."""
    content = getattr(response, "content", None) or {}
    schemas = [getattr(media, "schema", None) for media in content.values()]
    return any(isinstance(s, Schema) and "status_code" in (s.properties or {}) for s in schemas)


@dataclass
class ApiOperation(Operation):
    """The error responses as the one exception handler answers them: Litestar's default
    400 for validation goes (those are 422s in the error shape here), 429 and 503 say
    `Retry-After`, and headers come in a stable order."""

    def __post_init__(self) -> None:
        responses = self.responses or {}
        if _litestar_default(responses.get("400")):
            del responses["400"]
        for status, response in responses.items():
            if not isinstance(response, OpenAPIResponse):
                continue
            if status in ("429", "503"):
                response.headers = {**(response.headers or {}), "Retry-After": _retry_after()}
            # Litestar gathers a handler's documented headers in a frozenset: sort them, or
            # the document (and proto/openapi.json) changes from one process to the next.
            response.headers = dict(sorted((response.headers or {}).items())) or None


@dataclass
class UploadOperation(ApiOperation):
    """The dataset upload streams its body (CSV or Parquet), so no handler parameter
    describes it: say here what it takes."""

    def __post_init__(self) -> None:
        super().__post_init__()
        binary = OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, min_length=1))
        self.request_body = RequestBody(
            required=True, description="The file: CSV or Parquet (told apart by content).",
            content={"text/csv": binary, "application/octet-stream": binary,
                     "application/vnd.apache.parquet": binary})


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Runstream",
        version=version,
        description="Long analyses behind a chat UI. Every error is "
                    '`{"error": {"code", "message", "details"}}`.',
        components=Components(security_schemes={
            BEARER: SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                   description="A JWT (HS256) whose `sub` is the owner."),
            STREAM_TOKEN: SecurityScheme(type="apiKey", name="token", security_scheme_in="query",
                                         description="A stream token (POST /api/stream-tokens);"
                                                     " opens stream routes only."),
        }),
        use_handler_docstrings=True,
        create_examples=False,
    )

