"""One stream algorithm for SSE and WebSocket: register, replay the gap, go live.

Yields `Frame`s, `Heartbeat`s while idle, and a `Reset` (with a fresh snapshot) when
the cursor is older than the retained stream or the client fell too far behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runstream.gateway.fanout import Frame, Hub, Scope

TERMINAL_MESSAGE = "analysis_settled"
TERMINAL_CHART = frozenset({"chart_completed", "chart_failed", "chart_cancelled"})


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    seq: int
    snapshot: dict[str, Any]
    reason: str


Item = Frame | Heartbeat | Reset
Snapshot = Callable[[], Awaitable[dict[str, Any]]]


def ends_stream(scope: Scope, frame: Frame) -> bool:
    if scope.kind == "message":
        return frame.type == TERMINAL_MESSAGE
    if scope.kind == "chart":
        return frame.type in TERMINAL_CHART
    return False


async def open_stream(
    hub: Hub,
    scope: Scope,
    after_seq: int | None,
    *,
    snapshot: Snapshot,
    heartbeat_s: float,
    owner_sessions: set[str] | None = None,
    already_ended: bool = False,
) -> AsyncIterator[Item]:
    client, position = hub.register(scope, owner_sessions)
    try:
        cursor = after_seq or 0
        if cursor > 0:
            first = await hub.bus.first_seq()
            if cursor + 1 < first:  # events between the cursor and the stream start are gone
                snap = await snapshot()
                cursor = int(snap.get("as_of_seq", position))
                yield Reset(seq=cursor, snapshot=snap, reason="cursor_expired")
        if already_ended:
            return  # the client has seen the terminal frame: nothing more belongs here
        sent = cursor
        async for frame in hub.replay(scope, cursor, position, client.sessions):
            sent = frame.seq
            yield frame
            if ends_stream(scope, frame):
                return
        while True:
            try:
                item = await asyncio.wait_for(client.queue.get(), heartbeat_s)
            except TimeoutError:
                yield Heartbeat()
                continue
            if item is None:  # dropped: too slow, or the gateway is stopping
                snap = await snapshot()
                yield Reset(seq=int(snap.get("as_of_seq", sent)), snapshot=snap,
                            reason="client_too_slow" if client.dropped else "shutdown")
                return
            if item.seq <= sent:
                continue
            sent = item.seq
            yield item
            if ends_stream(scope, item):
                return
    finally:
        with contextlib.suppress(Exception):
            hub.unregister(client)


def parse_cursor(last_event_id: str | None, after_seq: str | None) -> int | None:
    """`Last-Event-ID` wins over `?after_seq=`; both must be non-negative integers."""
    from runstream.gateway.errors import ApiError

    raw = last_event_id if last_event_id not in (None, "") else after_seq
    if raw in (None, ""):
        return None
    try:
        value = int(str(raw))
    except ValueError:
        raise ApiError(422, "invalid_cursor", "the cursor must be a stream sequence",
                       {"value": str(raw)[:40]}) from None
    if value < 0:
        raise ApiError(422, "invalid_cursor", "the cursor must not be negative",
                       {"value": value})
    return value
