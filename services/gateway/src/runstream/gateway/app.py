"""The gateway application: `create_app(settings) -> Litestar`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.static_files import create_static_files_router

from runstream.bus import Bus, SessionAggregate
from runstream.gateway.allow import AllowHeader
from runstream.gateway.auth import BearerAuth, Tokens
from runstream.gateway.controllers import CONTROLLERS
from runstream.gateway.dependencies import DEPENDENCIES
from runstream.gateway.errors import EXCEPTION_HANDLERS
from runstream.gateway.fanout import Hub
from runstream.gateway.openapi import StrictStructs, openapi_config
from runstream.gateway.ratelimit import STORE, KVStore, limits, window_s
from runstream.gateway.settings import GatewaySettings
from runstream.gateway.state import Gateway
from runstream.gateway.tracing import ServerSpan
from runstream.gateway.transport import RAW_SEND
from runstream.store import open_store

logger = structlog.get_logger()
STATIC_DIR = Path(__file__).parent / "static"
API_VERSION = "1.0.0"


class GatewayApp(Litestar):
    """Litestar, remembering the server's own `send` of each HTTP request: a live SSE
    stream hands its frames to that response's transport (runstream.gateway.transport)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(settings: GatewaySettings) -> Litestar:
    tokens = Tokens(settings.jwt_secret.get_secret_value(), settings.jwt_issuer)
    rate_limits = KVStore(settings.rate_limit_bucket_name(), ttl_s=window_s(
        settings.rate_limit_writes, settings.rate_limit_public))
    limiters = [c.middleware for c in limits(settings.rate_limit_writes,
                                              settings.rate_limit_public)]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with (
            # No publish waits out an outage in a buffer: the client gets a 503 at once,
            # and a write it was told failed never lands after the reconnect.
            Bus.connect(settings.bus(), name="gateway", buffer_while_disconnected=False) as bus,
            open_store(settings.database_url, schema=settings.db_schema, max_size=20,
                       connect_timeout=settings.db_connect_timeout_s,
                       command_timeout=settings.db_command_timeout_s,
                       partitions=settings.partitions) as store,
        ):
            await bus.provision()
            await rate_limits.open(bus.js)
            hub = Hub(bus, client_buffer=settings.client_buffer)
            await hub.start()
            app.state.gateway = Gateway(
                settings=settings, bus=bus, sessions=SessionAggregate(bus),
                models=store.read_models, hub=hub, tokens=tokens,
            )
            logger.info("gateway.ready", stream=bus.stream, prefix=settings.prefix)
            # What start-up built lives as long as the app: out of the collector's
            # sight, a full collection walks only what requests allocate (with the
            # start-up heap in it, each one stalled every request in flight for tens
            # of ms under load; requests make next to no reference cycles). Collected
            # first, so no garbage is frozen; thawed at shutdown, so an app stopped in
            # a longer-lived process (the tests) leaves nothing uncollectable.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                gc.unfreeze()
                app.state.gateway = None
                await hub.stop()

    static_dir = Path(settings.static_dir) if settings.static_dir else STATIC_DIR
    handlers: list[Any] = list(CONTROLLERS)
    if static_dir.is_dir():
        handlers.append(create_static_files_router(
            path="/", directories=[static_dir], html_mode=True, name="ui",
            opt={"exclude_from_auth": True}, include_in_schema=False,
        ))
    # Health routes and the UI's static files opt out with `exclude_from_auth`; the API's
    # description is public, as proto/openapi.json is.
    auth = DefineMiddleware(BearerAuth, exclude=["^/schema"])
    return GatewayApp(
        route_handlers=handlers,
        lifespan=[lifespan],
        # Auth first: the write limit counts per owner, the token's subject.
        # A server span per request (`ServerSpan`, tracing.py): its context rides on every
        # event the request publishes, so an analysis is one trace from the submit to the
        # settle. No child span per ASGI send/receive message: they said nothing the
        # server span does not. Streams have none: a span as long as the stream says
        # nothing, and its wrapper around every frame's send cost more than the frame.
        # Given as middleware, Litestar moves it outermost (the OpenTelemetry plugin would
        # ignore `middleware_class`).
        middleware=[OpenTelemetryConfig(
            exclude=["/healthz", "/readyz", "/metrics", r"/events$", r"/ws$"],
            middleware_class=ServerSpan).middleware, AllowHeader(), auth, *limiters],
        stores={STORE: rate_limits},
        plugins=[StrictStructs()],
        exception_handlers=EXCEPTION_HANDLERS,
        dependencies=DEPENDENCIES,
        openapi_config=openapi_config(version=API_VERSION),
        cors_config=CORSConfig(allow_origins=[], allow_headers=["authorization", "content-type",
                                                               "last-event-id", "prefer"]),
        state=State({"tokens": tokens, "gateway": None}),
        debug=False,
        request_max_body_size=settings.dataset_max_bytes + 1,
    )
