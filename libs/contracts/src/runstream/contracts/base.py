"""The one event base and the value types shared by several aggregates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

LogLevel = Literal["info", "success", "warning", "error"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Every fact in Runstream. Evolve by adding fields with defaults; never reuse a tag."""

    event_id: str
    at: datetime
    session_id: str


class Column(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: str


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Why something failed: a stable code, a human message, and where."""

    code: str
    message: str
    step: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """The JetStream delivery that ran out of attempts (from the MAX_DELIVERIES advisory)."""

    consumer: str
    stream_seq: int
    deliveries: int
    subject: str = ""
