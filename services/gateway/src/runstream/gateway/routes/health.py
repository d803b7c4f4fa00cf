"""Liveness, readiness, Prometheus metrics and queue statistics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Response, get

from runstream.bus import Bus
from runstream.gateway.errors import retry_after
from runstream.gateway.routes.common import Req, gw
from runstream.telemetry import render_latest


@get("/healthz", exclude_from_auth=True)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


READY_CHECK_S = 2.0


async def _check(probe: Awaitable[Any]) -> str:
    """`ok`, or `down: <why>` (the error's type only: /readyz is public)."""
    try:
        await asyncio.wait_for(probe, READY_CHECK_S)
    except TimeoutError:
        return f"down: no answer within {READY_CHECK_S:g} s"
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


async def _check_nats(bus: Bus) -> str:
    if not bus.nc.is_connected:
        return "down: disconnected, reconnecting"
    return await _check(bus.last_seq())


@get("/readyz", exclude_from_auth=True)
async def readyz(request: Req) -> Response[Any]:
    """200 when NATS and Postgres both answer; else 503 naming what is down.

    Both are checked at once, so a hanging dependency costs READY_CHECK_S, not twice that.
    """
    state = getattr(request.app.state, "gateway", None)
    if state is None:
        return Response({"status": "starting", "checks": {}}, status_code=503,
                        headers=retry_after("gateway"))
    nats, postgres = await asyncio.gather(_check_nats(state.bus),
                                          _check(state.models.checkpoint()))
    checks = {"nats": nats, "postgres": postgres}
    if nats == postgres == "ok":
        return Response({"status": "ready", "checks": checks})
    down = "nats" if nats != "ok" else "postgres"
    return Response({"status": "unavailable", "checks": checks}, status_code=503,
                    headers=retry_after(down))


@get("/metrics", exclude_from_auth=True)
async def metrics() -> Response[bytes]:
    data, content_type = render_latest()
    return Response(data, media_type=content_type)


@get("/api/stats")
async def stats(request: Req) -> dict[str, Any]:
    g = gw(request)
    info = await g.bus.js.stream_info(g.bus.stream)
    consumers = await g.bus.js.consumers_info(g.bus.stream)
    checkpoint = await g.models.checkpoint()
    last = int(info.state.last_seq)
    return {
        "stream": {"name": g.bus.stream, "messages": info.state.messages,
                   "bytes": info.state.bytes, "first_seq": info.state.first_seq,
                   "last_seq": last},
        "consumers": [
            {"name": c.name, "pending": c.num_pending, "ack_pending": c.num_ack_pending,
             "redelivered": c.num_redelivered, "waiting": c.num_waiting,
             "delivered_seq": c.delivered.stream_seq if c.delivered else None}
            for c in consumers
        ],
        "workers_seen": sorted({c.name for c in consumers if c.num_waiting and c.num_waiting > 0}),
        "projector": {"checkpoint": checkpoint, "lag": max(0, last - checkpoint)},
        "gateway": {"stream_clients": g.hub.clients,
                    "events_per_second": round(g.hub.events_per_second(), 2),
                    "live_position": g.hub.position},
    }


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@get("/dev-token", exclude_from_auth=True)
async def dev_token(request: Req) -> Response[Any]:
    """The dev token of `runstream up`, so the UI on localhost can sign in at once."""
    state = getattr(request.app.state, "gateway", None)
    token = state.settings.dev_token if state is not None else None
    peer = request.client.host if request.client else ""
    # The Host check keeps a DNS-rebinding page from reading the token through the browser.
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")
    if not token or peer not in LOOPBACK or host not in LOOPBACK:
        return Response({"error": {"code": "not_found", "message": "no dev token here",
                                   "details": {}}}, status_code=404)
    return Response({"token": token}, headers={"Cache-Control": "no-store"})


ROUTES = [healthz, readyz, metrics, stats, dev_token]
