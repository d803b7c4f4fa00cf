"""OpenTelemetry: a tracer provider per service, OTLP export when configured, and W3C
trace context carried in NATS headers (inject on publish, extract on consume)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure_tracing(service: str, otlp_endpoint: str | None = None) -> TracerProvider:
    """Install a tracer provider; export over OTLP/HTTP when an endpoint is configured."""
    global _configured
    provider = TracerProvider(resource=Resource.create({"service.name": f"runstream-{service}"}))
    endpoint = otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if not _configured:
        trace.set_tracer_provider(provider)
        _configured = True
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("runstream")


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Write traceparent/tracestate of the current context into NATS headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


@contextmanager
def consume_span(name: str, headers: Mapping[str, str] | None, **attrs: Any) -> Iterator[Any]:
    """A consumer span that continues the producer's trace from the message headers."""
    token = otel_context.attach(extract_context(headers))
    try:
        with tracer().start_as_current_span(name, kind=trace.SpanKind.CONSUMER) as span:
            for k, v in attrs.items():
                if v is not None:
                    span.set_attribute(k, v)
            yield span
    finally:
        otel_context.detach(token)


@contextmanager
def batch_span(name: str, headers: list[Mapping[str, str]], **attrs: Any) -> Iterator[Any]:
    """One span for a batch, linked to the trace of every message in it."""
    links = []
    for h in headers:
        ctx = trace.get_current_span(extract_context(h)).get_span_context()
        if ctx.is_valid:
            links.append(trace.Link(ctx))
    with tracer().start_as_current_span(
        name, kind=trace.SpanKind.CONSUMER, links=links, attributes=attrs
    ) as sp:
        yield sp
