"""One encoder and one decoder per process for every event type (a tagged union)."""

from __future__ import annotations

from typing import Any

import msgspec

from runstream.contracts.base import Event
from runstream.contracts.chart import CHART_EVENTS, ChartEventT
from runstream.contracts.message import MESSAGE_EVENTS, MessageEventT
from runstream.contracts.session import SESSION_EVENTS, SessionEventT

AnyEvent = SessionEventT | MessageEventT | ChartEventT
ALL_EVENTS: tuple[type[Event], ...] = (*SESSION_EVENTS, *MESSAGE_EVENTS, *CHART_EVENTS)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in ALL_EVENTS
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AnyEvent)


class DecodeError(ValueError):
    """The bytes are not a known Runstream event."""


def type_of(event: Event | type[Event]) -> str:
    return str(event.__struct_config__.tag)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    try:
        return _decoder.decode(data)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


def to_builtins(event: Event) -> dict[str, Any]:
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every event (written to proto/ by `make proto`)."""
    (schema,), components = msgspec.json.schema_components(
        [AnyEvent], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Runstream events",
        **schema,
        "$defs": components,
    }


# Values from a query or a data file, as plain JSON: dates and times in ISO 8601, decimals
# as numbers, NaN and infinities as null, bytes in base64, durations in ISO 8601, and
# anything else by its string form. One definition, so a sample row and a result row
# never disagree on how a value looks.
_safe_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=str)
_plain_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def json_safe(value: Any) -> Any:
    return _plain_decoder.decode(_safe_encoder.encode(value))

