"""structlog + OpenTelemetry set-up, NATS header propagation."""
