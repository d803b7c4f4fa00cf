"""Identifiers: UUIDv7 strings, validated so that they can never break a subject."""

from __future__ import annotations

import os
import re
import time
import uuid

from runstream.contracts.errors import InvalidId

# URL-safe, no '.', '*', '>' or whitespace: safe as a single NATS subject token.
# Public so that the HTTP API can declare the same rule in its OpenAPI document.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)

# Namespace for deterministic event ids (uuid5), so that a redelivered worker step
# publishes the same Nats-Msg-Id and JetStream drops the duplicate.
_EVENT_NS = uuid.UUID("5b0c8f3e-6a57-4c1e-9d0e-2f6f3f0f8a11")


def new_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    return _uuid7(ms, int.from_bytes(os.urandom(10), "big"))


def _uuid7(ms: int, rand: int) -> str:
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rand_a << 64
    value |= 0b10 << 62
    value |= rand_b
    return str(uuid.UUID(int=value))


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: object, *, field: str = "id") -> str:
    """Return the id unchanged, or raise InvalidId if it could break a subject."""
    if not is_valid_id(value):
        raise InvalidId(field, value)
    return value  # type: ignore[return-value]


def derived_id(*parts: object) -> str:
    """A deterministic event id for (message, attempt, step, kind, n)."""
    return str(uuid.uuid5(_EVENT_NS, ":".join(str(p) for p in parts)))
