"""`runstream tail <session>`: a session's events as readable lines, live."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import api

from runstream.bus import Bus
from runstream.cli.settings import CliSettings
from runstream.contracts import DecodeError, decode, to_builtins, type_of

# the fields worth a glance, per event type; everything else is in `nats stream get`
_SKIP = {"event_id", "at", "session_id", "lock", "type", "message_id", "task_id", "attempt"}


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(data: bytes) -> str:
    """One line for one event: time, type, the entity it is about, and its key fields."""
    try:
        event = decode(data)
    except DecodeError:
        return f"(undecodable: {_short(data.decode('utf-8', 'replace'))})"
    fields = to_builtins(event)
    etype = type_of(event)
    about = fields.get("task_id") or fields.get("message_id") or ""
    match etype:
        case "log_appended":
            detail = f"[{fields.get('level')}] {fields.get('text')}"
        case "step_started" | "step_progressed" | "step_completed" | "step_failed":
            rest = {k: v for k, v in fields.items() if k not in _SKIP and k != "step"}
            detail = f"{fields.get('step')} " + " ".join(
                f"{k}={_short(v, 40)}" for k, v in rest.items() if v not in (None, "", [], {})
            )
        case _:
            detail = " ".join(
                f"{k}={_short(v, 60)}" for k, v in fields.items()
                if k not in _SKIP and v not in (None, "", [], {})
            )
    lock = fields.get("lock")
    if etype in ("analysis_requested", "analysis_settled") or (lock and etype == "lock_renewed"):
        detail += f" lock={lock['message_id'] if lock else 'free'}"
    return f"{fields['at'][11:23]}  {etype:<20} {about:<28} {detail}".rstrip()


async def tail(settings: CliSettings, session_id: str, after_seq: int, stop: asyncio.Event) -> None:
    async with Bus.connect(settings.bus(), name="runstream-tail") as bus:
        subject = bus.subjects.session_all(session_id)
        if after_seq > 0:
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1
            )
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)

        async def on_msg(msg: Any) -> None:
            seq = msg.metadata.sequence.stream
            print(f"{seq:>8}  {describe(msg.data)}", flush=True)

        sub = await bus.js.subscribe(
            subject, stream=bus.stream, ordered_consumer=True, config=config, cb=on_msg
        )
        try:
            await stop.wait()
        finally:
            await sub.unsubscribe()
