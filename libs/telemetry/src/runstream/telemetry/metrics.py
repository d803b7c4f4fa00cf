"""Prometheus metrics shared by every service (`/metrics` in Prometheus text).

Several processes behind one port (gateway workers) share their metrics through
prometheus_client's multiprocess mode: the supervisor sets `PROMETHEUS_MULTIPROC_DIR`
before it starts them, each writes its values there, and `/metrics`, whichever worker
answers, sums them (a gauge of connected clients as the live processes' sum).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable

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
SSE_CLIENTS = Gauge("runstream_stream_clients", "Connected SSE/WebSocket clients",
                    multiprocess_mode="livesum")


def render_latest() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROCESS_DIR):  # every process's values, summed
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_gone(pid: int) -> None:
    """A process sharing its metrics has died: its live gauges no longer count."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(pid)


def serve_metrics(port: int) -> None:
    """Expose /metrics on a side port (workers and the projector have no HTTP server)."""
    if port > 0:
        start_http_server(port, addr="0.0.0.0")
