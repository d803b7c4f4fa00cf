"""Reading back what the stream holds about one subject or session, oldest first."""

from __future__ import annotations

import contextlib
from typing import Any

from nats.js import api

from runstream.bus.bus import Bus
from runstream.contracts import SessionEvent, decode


async def read_subject(bus: Bus, subject: str, *, timeout: float = 5.0) -> list[Any]:
    """Every stored message on `subject` (wildcards allowed), oldest first.

    An ordered push consumer delivers from the start; we stop at the last sequence
    that existed when we began, so the read is a consistent prefix of the stream.
    """
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    if not info.state.subjects:
        return []
    last = int(info.state.last_seq)
    sub = await bus.js.subscribe(
        subject, stream=bus.stream, ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL, inactive_threshold=30.0,
    )
    out: list[Any] = []
    try:
        expected = sum(int(n) for n in info.state.subjects.values())
        while len(out) < expected:
            msg = await sub.next_msg(timeout=timeout)
            out.append(msg)
            if msg.metadata.sequence.stream >= last:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out


async def session_events(bus: Bus, session_id: str) -> list[SessionEvent]:
    """The session aggregate's whole history, oldest first (undecodable events skipped)."""
    events: list[SessionEvent] = []
    for msg in await read_subject(bus, bus.subjects.session(session_id)):
        with contextlib.suppress(Exception):
            event = decode(msg.data)
            if isinstance(event, SessionEvent):
                events.append(event)
    return events
