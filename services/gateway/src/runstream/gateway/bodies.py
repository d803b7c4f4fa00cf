"""Request bodies: decoded strictly with msgspec, so bad input is a clear 4xx."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from litestar import Request

from runstream.gateway.errors import ApiError

T = TypeVar("T")
MAX_JSON_BYTES = 64 * 1024


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    title: str = ""


class Submit(msgspec.Struct, forbid_unknown_fields=True):
    question: str
    dataset_id: str | None = None


class ChartRequest(msgspec.Struct, forbid_unknown_fields=True):
    adjustment_query: str | None = None
    force_create: bool = False


class Empty(msgspec.Struct):
    pass


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")


async def read_json(request: Request[Any, Any, Any], kind: type[T], *, optional: bool = False) -> T:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_JSON_BYTES:
        raise _too_large()
    raw = await request.body()
    if len(raw) > MAX_JSON_BYTES:
        raise _too_large()
    if not raw.strip():
        if optional:
            return msgspec.json.decode(b"{}", type=kind)
        raise ApiError(400, "invalid_json", "a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_request", str(exc), {"body": kind.__name__}) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}") from None
