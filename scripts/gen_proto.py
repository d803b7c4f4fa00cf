"""Write the generated contract files under proto/ (run by `make proto`).

- events.schema.json  JSON Schema of every event (the tagged union)
- asyncapi.json       the subjects, who publishes on them, and their messages
- openapi.json        the gateway's HTTP API
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from runstream.contracts import ALL_EVENTS, json_schema, type_of
from runstream.contracts.chart import CHART_EVENTS
from runstream.contracts.message import MESSAGE_EVENTS
from runstream.contracts.session import SESSION_EVENTS

CHANNELS = {
    "session": ("{prefix}.{session_id}.session", SESSION_EVENTS,
                "The session aggregate: lifecycle, lock, datasets, read marker. Written only "
                "with Nats-Expected-Last-Subject-Sequence."),
    "message": ("{prefix}.{session_id}.msg.{message_id}.{type}", MESSAGE_EVENTS,
                "One analysis message: steps, logs, script, result, cancel."),
    "chart": ("{prefix}.{session_id}.chart.{task_id}.{type}", CHART_EVENTS,
              "One chart task, automatic or ad hoc."),
}


def asyncapi() -> dict[str, Any]:
    schema = json_schema()
    messages = {
        type_of(cls): {
            "name": type_of(cls),
            "title": cls.__name__,
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {
                "Nats-Msg-Id": {"type": "string", "description": "the event id (dedupe)"},
                "Rs-Type": {"type": "string", "const": type_of(cls)},
                "traceparent": {"type": "string"},
            }},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        }
        for cls in ALL_EVENTS
    }
    channels = {
        name: {
            "address": address,
            "description": description,
            "messages": {type_of(cls): {"$ref": f"#/components/messages/{type_of(cls)}"}
                         for cls in events},
        }
        for name, (address, events, description) in CHANNELS.items()
    }
    schemas = {k: v for k, v in schema["$defs"].items()}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Runstream events", "version": "1.0.0",
                 "description": "Stream RUNSTREAM, subjects <prefix>.> (default rs.>); every "
                                "stored message is also republished on live.<prefix>.>."},
        "channels": channels,
        "components": {"messages": messages, "schemas": _refs(schemas)},
    }


def _refs(value: Any) -> Any:
    """Point msgspec's `#/$defs/X` references at AsyncAPI's `#/components/schemas/X`."""
    if isinstance(value, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref" else _refs(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_refs(v) for v in value]
    return value


def openapi() -> dict[str, Any]:
    from runstream.gateway.app import create_app
    from runstream.gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(jwt_secret="x" * 32))
    return app.openapi_schema.to_schema()


def render(doc: dict[str, Any]) -> bytes:
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def documents() -> dict[str, bytes]:
    return {
        "events.schema.json": render(json_schema()),
        "asyncapi.json": render(asyncapi()),
        "openapi.json": render(openapi()),
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "proto")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in documents().items():
        (out / name).write_bytes(data)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
