"""structlog + OpenTelemetry set-up and NATS header propagation."""

from runstream.telemetry.logging import configure_logging
from runstream.telemetry.metrics import (
    EVENTS_CONSUMED,
    EVENTS_PUBLISHED,
    HANDLE_SECONDS,
    MULTIPROCESS_DIR,
    PROJECTOR_CHECKPOINT,
    PROJECTOR_FAULTS,
    PROJECTOR_PARTITION_POSITION,
    SSE_CLIENTS,
    process_gone,
    render_latest,
    serve_metrics,
)
from runstream.telemetry.tracing import (
    batch_span,
    configure_tracing,
    consume_span,
    extract_context,
    inject_headers,
    tracer,
)

__all__ = [
    "EVENTS_CONSUMED",
    "EVENTS_PUBLISHED",
    "HANDLE_SECONDS",
    "MULTIPROCESS_DIR",
    "PROJECTOR_CHECKPOINT",
    "PROJECTOR_FAULTS",
    "PROJECTOR_PARTITION_POSITION",
    "SSE_CLIENTS",
    "batch_span",
    "configure_logging",
    "configure_tracing",
    "consume_span",
    "extract_context",
    "inject_headers",
    "process_gone",
    "render_latest",
    "serve_metrics",
    "tracer",
]
