"""The chart worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from runstream.bus import ServiceSettings


class ChartWorkerSettings(ServiceSettings):
    max_deliver: int = 4
    concurrency: int = 4
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    durable: str = "chart-worker"
    tasks_durable: str = "chart-tasks"
    # First guess for a chart's ETA until this process has timed a few of its own.
    chart_eta_ms: int = 1500
