"""Prometheus metrics shared by every service (`/metrics` in Prometheus text)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

EVENTS_PUBLISHED = Counter(
    "runstream_events_published_total", "Events published to JetStream", ["type"]
)
EVENTS_CONSUMED = Counter(
    "runstream_events_consumed_total", "Deliveries handled", ["consumer", "outcome"]
)
HANDLE_SECONDS = Histogram(
    "runstream_handle_seconds", "Time to handle one delivery or batch", ["consumer"]
)
PROJECTOR_CHECKPOINT = Gauge(
    "runstream_projector_checkpoint", "Last stream sequence committed by this projector"
)
PROJECTOR_PARTITION_POSITION = Gauge(
    "runstream_projector_partition_position",
    "Event stream sequence up to which a partition is folded (partitioned projectors)",
    ["partition"],
)
PROJECTOR_FAULTS = Counter(
    "runstream_projector_faults_total",
    "Fold rounds ended early (stream_mismatch and retention_gap need an operator)", ["kind"],
)
SSE_CLIENTS = Gauge("runstream_stream_clients", "Connected SSE/WebSocket clients")


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_metrics(port: int) -> None:
    """Expose /metrics on a side port (workers and the projector have no HTTP server)."""
    if port > 0:
        start_http_server(port, addr="0.0.0.0")
