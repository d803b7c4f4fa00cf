"""`python -m runstream.chart_worker`: run the chart worker until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import run_worker
from runstream.telemetry import configure_logging, configure_tracing, serve_metrics


async def _main(settings: ChartWorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)


def main() -> None:
    settings = ChartWorkerSettings()
    configure_logging("chart-worker", settings.log_level, json=settings.log_json)
    configure_tracing("chart-worker", settings.otlp_endpoint)
    serve_metrics(settings.metrics_port)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
