"""One stream algorithm for SSE and WebSocket: register, replay the gap, go live.

Yields lists of `Frame`s, `Heartbeat`s while idle, and a `Reset` (with a fresh snapshot) when
the cursor is older than the retained stream or the client fell too far behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runstream.gateway.errors import ApiError
from runstream.gateway.fanout import Client, Frame, Hub, Scope, Sink


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    seq: int
    snapshot: dict[str, Any]
    reason: str


Item = list[Frame] | Heartbeat | Reset
Snapshot = Callable[[], Awaitable[dict[str, Any]]]


async def open_stream(
    hub: Hub,
    scope: Scope,
    after_seq: int | None,
    *,
    snapshot: Snapshot,
    heartbeat_s: float,
    owner_sessions: set[str] | None = None,
    reflected: Mapping[str, int] | None = None,
    already_ended: bool = False,
    max_batch: int = 256,
    max_s: float = 0,
    direct: Callable[[], Sink | None] | None = None,
) -> AsyncIterator[Item]:
    """Frames come in lists: whatever is ready at once goes out in one write.

    `max_s` > 0 ends the stream after that long (at the next quiet moment): the client
    comes back with its cursor, possibly to another replica.

    `reflected`: per session, the stream position the caller's snapshot already shows
    (a session row's `last_seq`). A snapshot of several sessions is as of the least
    position of their partitions (docs/read-models.md), so starting there would send a
    session's frames again that its row already reflects; those are skipped.

    `direct`: once live, where the hub may write frames itself (`Sink`); the stream then
    yields only heartbeats and its end.
    """
    seen = reflected or {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s if max_s > 0 else float("inf")
    client, position = hub.register(scope, owner_sessions, reflected)
    try:
        cursor = after_seq or 0
        if cursor > 0 and cursor + 1 < await hub.first_seq():
            # the events between the cursor and the stream's start are gone
            snap = await snapshot()
            cursor = int(snap.get("as_of_seq", position))
            yield Reset(seq=cursor, snapshot=snap, reason="cursor_expired")
        if already_ended:
            return  # the client has seen the terminal frame: nothing more belongs here
        sent = cursor
        async for frame in hub.replay(scope, cursor, position, client.sessions):
            sent = frame.seq
            if frame.seq <= seen.get(frame.parts.session_id, 0):
                continue
            yield [frame]
            if scope.ends(frame):
                return
        queue = client.queue
        sink = direct() if direct is not None else None
        while True:
            if queue.empty():
                if sink is not None and not client.dropped:
                    # nothing queued and no await since looking: the hub takes over
                    async for out in _live_direct(client, sink, snapshot, heartbeat_s,
                                                  deadline):
                        yield out
                    return
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    async with asyncio.timeout(min(heartbeat_s, left)):
                        first = await queue.get()
                except TimeoutError:
                    if loop.time() < deadline:
                        yield Heartbeat()
                    continue
            else:
                first = queue.get_nowait()
            ready = [first]
            while len(ready) < max_batch and not queue.empty():
                ready.append(queue.get_nowait())
            batch: list[Frame] = []
            for item in ready:
                if item is None:  # dropped: too slow, or the gateway is stopping
                    if batch:
                        yield batch
                    snap = await snapshot()
                    yield Reset(seq=int(snap.get("as_of_seq", sent)), snapshot=snap,
                                reason=client.reason or "shutdown")
                    return
                if item.seq <= sent:  # (what the snapshot reflects, the hub never queues)
                    continue
                sent = item.seq
                batch.append(item)
                if scope.ends(item):
                    yield batch
                    return
            if batch:
                yield batch
    finally:
        with contextlib.suppress(Exception):
            hub.unregister(client)


async def _live_direct(
    client: Client, sink: Sink, snapshot: Snapshot, heartbeat_s: float, deadline: float
) -> AsyncIterator[Item]:
    """The hub writes the frames; here only heartbeats while idle, and the end."""
    loop = asyncio.get_running_loop()
    done = client.go_direct(sink)
    try:
        while not done.is_set():
            left = deadline - loop.time()
            if left <= 0:
                return  # at a quiet moment by construction: nothing is half written
            seq = client.last_seq
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(heartbeat_s, left)):
                    await done.wait()
            if not done.is_set() and client.last_seq == seq and loop.time() < deadline:
                yield Heartbeat()
    finally:
        client.sink = None  # whatever ended the stream, the hub writes no more
    if client.finished or client.gone:
        return
    snap = await snapshot()  # dropped: too slow, or the gateway is stopping
    yield Reset(seq=int(snap.get("as_of_seq", client.last_seq)), snapshot=snap,
                reason=client.reason or "shutdown")


def parse_cursor(last_event_id: str | None, after_seq: str | None) -> int | None:
    """`Last-Event-ID` wins over `?after_seq=`; both must be non-negative integers."""
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
