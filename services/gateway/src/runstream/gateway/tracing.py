"""One OpenTelemetry server span per request, for what it is needed for.

Every event a request publishes carries the context of its server span, so an analysis
is one trace from the submit to the settle. The OpenTelemetry ASGI instrumentation that
Litestar's plugin runs by default makes that span with some twenty attributes collected
and set twice, a wrapper around `receive` and `send`, and request-duration metrics on
every request: about a third of a submit's middleware time. `ServerSpan` (the plugin's
`middleware_class`, so it keeps the plugin's place, outermost, and its `exclude`) starts
the same server span, continuing a caller's `traceparent`, with the attributes the
semantic conventions require: method, scheme, path, route and status.
"""

from __future__ import annotations

from typing import Any

from litestar.middleware.base import AbstractMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.plugins.opentelemetry.middleware import OpenTelemetryInstrumentationMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

_PROPAGATED = frozenset((b"traceparent", b"tracestate", b"baggage"))


def _parent(headers: Any) -> Context | None:
    """The caller's trace context, when the request carries one."""
    carrier: dict[str, str] | None = None
    for name, value in headers:
        if name in _PROPAGATED:
            carrier = carrier or {}
            carrier[name.decode()] = value.decode("latin-1")
    return propagate.extract(carrier) if carrier else None


class ServerSpan(OpenTelemetryInstrumentationMiddleware):
    def __init__(self, app: ASGIApp, config: OpenTelemetryConfig) -> None:
        AbstractMiddleware.__init__(self, app=app, scopes=config.scopes, exclude=config.exclude,
                                    exclude_opt_key=config.exclude_opt_key)
        self.tracer = config.tracer or trace.get_tracer(
            "runstream.gateway", tracer_provider=config.tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method") or "GET")
        attributes = {"http.request.method": method, "url.path": scope["path"],
                      "url.scheme": scope.get("scheme", "http")}
        with self.tracer.start_as_current_span(
            method, context=_parent(scope["headers"]), kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    # The router has set the route by now: the span's name per the
                    # semantic conventions, "{method} {route}" (never the raw path).
                    route = scope.get("path_template")
                    if route:
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_traced)
