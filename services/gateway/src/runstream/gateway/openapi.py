"""What the OpenAPI document says beyond the handlers' types: the error responses each
operation can answer, the headers that come with them, security, and raw bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar._openapi.schema_generation import SchemaCreator
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
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
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

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


# One server-sent event, as a client's parser hands it over (OpenAPI 3.1: the schema of a
# `text/event-stream` response describes each event).
SSE_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    required=["data"],
    properties={
        "id": Schema(type=OpenAPIType.STRING, pattern=r"^[0-9]+$",
                     description="The stream sequence: send it back as Last-Event-ID."),
        "event": Schema(type=OpenAPIType.STRING,
                        description="The event type (`session_created`, ...), or `reset`."),
        "data": Schema(type=OpenAPIType.STRING, content_media_type="application/json",
                       description="The event as JSON (for `reset`: `{reason, snapshot}`)."),
        "retry": Schema(type=OpenAPIType.INTEGER, minimum=0),
    },
)


def _litestar_default(response: Any) -> bool:
    """Litestar's own 400 for validation errors (`{status_code, detail, extra}`)."""
    content = getattr(response, "content", None) or {}
    schemas = [getattr(media, "schema", None) for media in content.values()]
    return any(isinstance(s, Schema) and "status_code" in (s.properties or {}) for s in schemas)


def _nullable(schema: Any) -> bool:
    return isinstance(schema, Schema) and any(
        isinstance(s, Schema) and s.type == OpenAPIType.NULL for s in schema.one_of or ())


@dataclass
class ApiOperation(Operation):
    """What Litestar cannot infer: its default 400 for validation goes (those are 422s in
    the error shape here), 429 and 503 say `Retry-After`, an SSE response describes one
    event, an optional body is optional, and headers come in a stable order."""

    def __post_init__(self) -> None:
        responses = self.responses or {}
        if _litestar_default(responses.get("400")):
            del responses["400"]
        for status, response in responses.items():
            if not isinstance(response, OpenAPIResponse):
                continue
            if status in ("429", "503"):
                response.headers = {**(response.headers or {}), "Retry-After": _retry_after()}
            for media_type, media in (response.content or {}).items():
                if media_type.startswith("text/event-stream"):
                    media.schema = SSE_EVENT
            # Litestar gathers a handler's documented headers in a frozenset: sort them, or
            # the document (and proto/openapi.json) changes from one process to the next.
            response.headers = dict(sorted((response.headers or {}).items())) or None
        body = self.request_body
        if isinstance(body, RequestBody) and any(_nullable(m.schema)
                                                 for m in body.content.values()):
            body.required = False  # `data: X | None`: the body may be left out


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



class StrictStructs(OpenAPISchemaPlugin):
    """A request struct that refuses unknown fields says so (`additionalProperties: false`),
    which Litestar's own struct schemas leave out."""

    def __init__(self) -> None:
        self._structs = StructSchemaPlugin()

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return self._structs.is_plugin_supported_field(field_definition) and bool(
            field_definition.type_.__struct_config__.forbid_unknown_fields)

    def to_openapi_schema(self, field_definition: FieldDefinition,
                          schema_creator: SchemaCreator) -> Schema:
        schema = self._structs.to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema
