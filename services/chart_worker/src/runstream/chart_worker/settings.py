"""The chart worker's settings (RUNSTREAM_* environment), read once in __main__."""

from __future__ import annotations

from runstream.pipeline import WorkerSettings


class ChartWorkerSettings(WorkerSettings):
    durable: str = "chart-worker"
    # Rendering runs in worker threads; 8 in flight keep them fed on a small machine.
    concurrency: int = 8
    tasks_durable: str = "chart-tasks"
    # First guess for a chart's ETA until this process has timed a few of its own.
    chart_eta_ms: int = 1500
