"""`python -m runstream.analysis_worker`: run the analysis worker until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.analysis_worker.worker import run_worker
from runstream.telemetry import configure_logging, configure_tracing, serve_metrics


async def _main(settings: AnalysisWorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)


def main() -> None:
    settings = AnalysisWorkerSettings()
    configure_logging("analysis-worker", settings.log_level, json=settings.log_json)
    configure_tracing("analysis-worker", settings.otlp_endpoint)
    serve_metrics(settings.metrics_port)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
