"""`runstream follow <message|session id>`: the gateway's SSE stream, readable.

The same two calls as the web UI: a snapshot (`GET /api/messages/{mid}`, or the session's
`analysis-status`), then the stream after the snapshot's `as_of_seq`, folded into an
`AnalysisView`. On a terminal the view redraws in place (rich `Live`); in a pipe each
step and log line is printed once as it happens. A message's stream ends when it
settles: the final view (steps, logs, interpretation, table, charts, SQL) is printed from
the settled read model. A session is followed until Ctrl-C, one analysis after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from runstream.cli.runview import AnalysisView, fmt_duration
from runstream.contracts import STEP_TITLES, is_terminal

RECONNECT_S = 2.0
MAX_RECONNECTS = 30  # about a minute of a gateway that does not answer
FINAL_WAIT_S = 10.0  # how long the settled read model may lag the settle event

Frame = tuple[int, str, Any]  # (stream seq, event type, data)


class FollowError(Exception):
    """Nothing to follow: a refused token, an unknown id, a gateway that stays away."""


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code == 401:
        raise FollowError(f"the gateway refused the token (401) for {what}")
    if response.status_code >= 400:
        raise FollowError(f"{what}: HTTP {response.status_code} {response.text[:200]}")


async def sse_frames(client: httpx.AsyncClient, path: str, after: int) -> AsyncIterator[Frame]:
    """The frames of one SSE response after `after`; comments (heartbeats) are skipped."""
    async with client.stream("GET", path, params={"after_seq": str(after)},
                             headers={"Accept": "text/event-stream"}) as response:
        if response.status_code != 200:
            await response.aread()
            _check(response, path)
        event, ident = "message", 0
        data: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    yield ident, event, json.loads("\n".join(data))
                event, data = "message", []
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)
            elif key == "id":
                ident = int(value)


def describe(kind: str, ev: dict[str, Any]) -> Text | None:
    """One line per step change and log line, for output that is not a terminal."""
    title = STEP_TITLES.get(ev.get("step", ""), ev.get("step", ""))
    match kind:
        case "analysis_requested":
            return Text(f"» {ev.get('question', '')}  ({ev.get('message_id')})", style="bold")
        case "step_started":
            return Text(f"▸ {title} (step {ev.get('index')} of {ev.get('total')})")
        case "step_completed":
            return Text(f"✓ {title}  {fmt_duration(ev.get('duration_ms'))}", style="green")
        case "step_failed":
            return Text(f"✗ {title}: {ev.get('error')}", style="red")
        case "log_appended":
            return Text(f"  {str(ev.get('at', ''))[11:19]} {ev.get('level', 'info'):<7} "
                        f"{ev.get('text', '')}")
        case _:
            return None


class Screen:
    """Where the view goes: redrawn in place on a terminal, line by line elsewhere."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.view: AnalysisView | None = None
        self.idle = ""
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(console=console, transient=True, refresh_per_second=8,
                             get_renderable=self._renderable)
            self.live.start()

    def _renderable(self) -> RenderableType:
        if self.view is not None:
            return self.view.live(datetime.now(UTC))
        return Text(self.idle, style="dim")

    def show(self, view: AnalysisView | None, kind: str = "", ev: Any = None) -> None:
        self.view = view
        if self.live is not None:
            self.live.refresh()
        elif kind and isinstance(ev, dict):
            line = describe(kind, ev)
            if line is not None:
                self.console.print(line)

    def print(self, renderable: RenderableType) -> None:
        self.console.print(renderable)  # above the live area on a terminal

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


async def _resolve(client: httpx.AsyncClient, target: str) -> tuple[str, dict[str, Any]]:
    """("message", the message) or ("session", its analysis-status)."""
    response = await client.get(f"/api/messages/{target}")
    if response.status_code == 200:
        message = response.json()
        if message.get("role") == "user" and message.get("reply_message_id"):
            return await _resolve(client, message["reply_message_id"])  # its answer
        return "message", message
    if response.status_code != 404:
        _check(response, f"message {target}")
    response = await client.get(f"/api/sessions/{target}/analysis-status")
    if response.status_code == 404:
        raise FollowError(f"no message and no session {target} for this token's owner")
    _check(response, f"session {target}")
    return "session", response.json()


async def _stream(client: httpx.AsyncClient, path: str,
                  position: Callable[[], int]) -> AsyncGenerator[Frame, None]:
    """Frames after `position()`, reconnecting (from the last position) when a response
    ends or breaks, until the caller stops iterating."""
    failures = 0
    while True:
        try:
            async for frame in sse_frames(client, path, position()):
                failures = 0
                yield frame
        except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise FollowError(f"the gateway stays away: {exc}") from exc
        await asyncio.sleep(RECONNECT_S)  # the stream ended without the end we wait for


async def _final(client: httpx.AsyncClient, view: AnalysisView) -> AnalysisView:
    """The settled message from the read model (the table, the charts), once it has it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_WAIT_S
    while loop.time() < deadline:
        response = await client.get(f"/api/messages/{view.message_id}",
                                    params={"min_seq": str(view.settled_seq or 0)})
        if response.status_code == 200 and is_terminal(response.json().get("status", "")):
            return AnalysisView.from_message(response.json())
        await asyncio.sleep(0.2)
    return view  # what the events said: everything but what only the read model adds


async def follow_message(client: httpx.AsyncClient, message: dict[str, Any],
                         screen: Screen) -> AnalysisView:
    view = AnalysisView.from_message(message)
    if not view.settled:
        screen.show(view)
        frames = _stream(client, f"/api/messages/{view.message_id}/events", lambda: view.as_of)
        async with contextlib.aclosing(frames):
            async for seq, kind, data in frames:
                if kind == "reset":
                    view = AnalysisView.from_message({**data["snapshot"], "as_of_seq": seq})
                else:
                    view.apply(seq, kind, data)
                screen.show(view, kind, data)
                if view.settled:
                    break
        view = await _final(client, view)
    return view


async def follow_session(client: httpx.AsyncClient, session_id: str, status: dict[str, Any],
                         screen: Screen) -> None:
    position = int(status.get("as_of_seq") or 0)
    view: AnalysisView | None = None
    if status.get("is_analyzing") and status.get("message_id"):
        response = await client.get(f"/api/messages/{status['message_id']}")
        _check(response, f"message {status['message_id']}")
        view = AnalysisView.from_message(response.json())
        position = max(position, view.as_of)
    screen.idle = f"waiting for an analysis in session {session_id} (Ctrl-C stops)"
    screen.show(view)

    def at() -> int:
        return position

    async for seq, kind, data in _stream(client, f"/api/sessions/{session_id}/events", at):
        position = max(position, seq)
        if kind == "reset":  # the cursor is older than the stream: start from now
            view = None
            screen.show(view)
            continue
        if kind == "analysis_requested":
            view = AnalysisView(message_id=data["message_id"], question=data.get("question", ""))
        if view is None or data.get("message_id") != view.message_id:
            continue
        view.apply(seq, kind, data)
        screen.show(view, kind, data)
        if view.settled:
            screen.print((await _final(client, view)).final())
            view = None
            screen.show(view)


async def run_follow(url: str, token: str, target: str, *, stop: asyncio.Event | None = None,
                     console: Console | None = None) -> int:
    """Follow `target` until its analysis settles (a message) or `stop` is set (Ctrl-C).

    The exit status: 0 when the analysis completed, 1 when it did not; a session followed
    until stopped: 0; a message whose follow was stopped before it settled: 130.
    """
    console = console or Console(highlight=False)
    stop = stop or asyncio.Event()
    timeout = httpx.Timeout(10.0, read=None)  # SSE: heartbeats, not a read timeout
    async with httpx.AsyncClient(base_url=url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        try:
            kind, found = await _resolve(client, target)
        except httpx.TransportError as exc:
            raise FollowError(f"no gateway answers at {url}: {exc}") from exc
        screen = Screen(console)
        work: asyncio.Task[AnalysisView | None]
        if kind == "session":
            work = asyncio.create_task(_none(follow_session(client, target, found, screen)))
        else:
            work = asyncio.create_task(follow_message(client, found, screen))
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stopped):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped
            screen.close()
        if not work.done() or work.cancelled():
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return 0 if kind == "session" else 130
        view = work.result()  # raises FollowError from inside
        if view is None:
            return 0
        console.print(view.final())
        return 0 if view.status == "completed" else 1


async def _none(coro: Awaitable[None]) -> None:
    await coro
