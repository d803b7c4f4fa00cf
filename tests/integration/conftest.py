"""Helpers for suites that drive the HTTP API and SSE as a browser would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

# For suites that drive many writes from one owner on purpose: limits far above their load,
# so the limiter is still in the path (and counted) but never refuses.
HIGH_RATE_LIMITS = {"rate_limit_writes": "1000000/minute", "rate_limit_public": "1000000/minute"}


@dataclass
class SseFrame:
    id: int | None
    event: str
    data: Any


async def sse_frames(response: httpx.Response) -> AsyncIterator[SseFrame]:
    """Parse an SSE response into frames (comments are skipped)."""
    event, data, ident = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                raw = "\n".join(data)
                yield SseFrame(id=ident, event=event, data=json.loads(raw))
            event, data, ident = "message", [], None
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


async def collect(response: httpx.Response, until: Any, timeout: float = 15) -> list[SseFrame]:
    """Read frames until `until(frames)` is true or the stream ends; fail at the deadline."""
    frames: list[SseFrame] = []

    async def run() -> None:
        async for frame in sse_frames(response):
            frames.append(frame)
            if until(frames):
                return

    await asyncio.wait_for(run(), timeout)
    return frames


async def new_session(client: httpx.AsyncClient, title: str = "t") -> str:
    r = await client.post("/api/sessions", json={"title": title})
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


@pytest.fixture
def sse_helpers() -> Any:
    return {"frames": sse_frames, "collect": collect}
