"""Liveness, readiness, Prometheus metrics and queue statistics."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get

from runstream.gateway.routes.common import Req, gw
from runstream.telemetry import render_latest


@get("/healthz", exclude_from_auth=True)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", exclude_from_auth=True)
async def readyz(request: Req) -> Response[Any]:
    checks: dict[str, str] = {}
    state = getattr(request.app.state, "gateway", None)
    if state is None:
        return Response({"status": "starting", "checks": checks}, status_code=503)
    try:
        await asyncio.wait_for(state.bus.last_seq(), 2)
        checks["nats"] = "ok"
    except Exception as exc:
        checks["nats"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(state.models.checkpoint(), 2)
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return Response({"status": "ready" if ok else "unready", "checks": checks},
                    status_code=200 if ok else 503)


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
