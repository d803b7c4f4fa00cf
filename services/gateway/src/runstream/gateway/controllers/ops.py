"""Operations: liveness, readiness, Prometheus metrics, queue statistics, the dev token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec

from runstream.bus import Bus, list_consumers
from runstream.gateway.dependencies import BusDep, GatewayDep, ModelsDep
from runstream.gateway.errors import ApiError, retry_after
from runstream.gateway.openapi import API_SECURITY, ApiOperation, errors
from runstream.gateway.schemas import (
    ConsumerStats,
    DevToken,
    GatewayStats,
    Health,
    ProjectorStats,
    Readiness,
    Stats,
    StreamStats,
)
from runstream.gateway.state import Gateway
from runstream.telemetry import render_latest

READY_CHECK_S = 2.0
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
PUBLIC: dict[str, Any] = {"exclude_from_auth": True}


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


class OpsController(Controller):
    path = "/"
    tags = ["operations"]

    @get("/healthz", opt=PUBLIC, operation_class=ApiOperation, responses=errors(429))
    async def healthz(self) -> Health:
        """Liveness: the process answers."""
        return Health()

    @get("/readyz", opt=PUBLIC, operation_class=ApiOperation,
         responses={**errors(429),
                    503: ResponseSpec(data_container=Readiness, generate_examples=False,
                                      description="Starting, or NATS or Postgres is down.")})
    async def readyz(self, state: State) -> Response[Readiness]:
        """200 when NATS and Postgres both answer; else 503 naming what is down.

        Both are checked at once, so a hanging dependency costs READY_CHECK_S, not twice that.
        """
        g: Gateway | None = getattr(state, "gateway", None)
        if g is None:
            return Response(Readiness(status="starting", checks={}), status_code=503,
                            headers=retry_after("gateway"))
        nats, postgres = await asyncio.gather(_check_nats(g.bus), _check(g.models.checkpoint()))
        checks = {"nats": nats, "postgres": postgres}
        if nats == postgres == "ok":
            return Response(Readiness(status="ready", checks=checks))
        down = "nats" if nats != "ok" else "postgres"
        return Response(Readiness(status="unavailable", checks=checks), status_code=503,
                        headers=retry_after(down))

    @get("/metrics", opt=PUBLIC, media_type="text/plain", operation_class=ApiOperation,
         responses=errors(429))
    async def metrics(self) -> Response[str]:
        """Prometheus text exposition."""
        data, content_type = render_latest()
        return Response(data.decode(), media_type=content_type)

    @get("/api/stats", security=API_SECURITY, operation_class=ApiOperation,
         responses=errors(401, 503))
    async def stats(self, gateway: GatewayDep, bus: BusDep, models: ModelsDep) -> Stats:
        """Queue depths, consumer lag, workers seen, events per second."""
        hub = gateway.hub
        info = await bus.js.stream_info(bus.stream)
        # the same list as `runstream status`
        consumers = await list_consumers(bus, gateway.settings.partitions)
        checkpoint = await models.checkpoint()
        last = int(info.state.last_seq)
        return Stats(
            stream=StreamStats(name=bus.stream, messages=info.state.messages,
                               bytes=info.state.bytes, first_seq=info.state.first_seq,
                               last_seq=last),
            consumers=[
                ConsumerStats(name=c.name, kind=c.kind, ephemeral=c.ephemeral,
                              pending=c.pending, ack_pending=c.ack_pending,
                              redelivered=c.redelivered, waiting=c.waiting,
                              delivered_seq=c.delivered_seq, stream=c.stream)
                for c in consumers
            ],
            # a durable consumer with waiting pulls has at least one live worker
            workers_seen=sorted({c.name for c in consumers
                                 if not c.ephemeral and c.waiting > 0}),
            projector=ProjectorStats(checkpoint=checkpoint, lag=max(0, last - checkpoint)),
            gateway=GatewayStats(stream_clients=hub.clients,
                                 stream_clients_direct=hub.direct_clients(),
                                 events_per_second=round(hub.events_per_second(), 2),
                                 live_position=hub.position),
        )

    @get("/dev-token", opt=PUBLIC, operation_class=ApiOperation, responses=errors(404, 429))
    async def dev_token(self, request: Request[Any, Any, Any], state: State) -> Response[DevToken]:
        """The dev token of `runstream up`, so the UI on localhost can sign in at once."""
        g: Gateway | None = getattr(state, "gateway", None)
        secret = g.settings.dev_token if g is not None else None
        token = secret.get_secret_value() if secret is not None else None
        peer = request.client.host if request.client else ""
        # The Host check keeps a DNS-rebinding page from reading the token through the browser.
        host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")
        if not token or peer not in LOOPBACK or host not in LOOPBACK:
            raise ApiError(404, "not_found", "no dev token here")
        return Response(DevToken(token=token), headers={"Cache-Control": "no-store"})
