"""`python -m runstream.projector`: fold the stream into Postgres until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from runstream.projector.service import SERVICE, ProjectorSettings, run_projector
from runstream.telemetry import configure_logging, configure_tracing, serve_metrics


async def _main(settings: ProjectorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_projector(settings, stop)


def main() -> None:
    settings = ProjectorSettings()
    configure_logging(SERVICE, settings.log_level, json=settings.log_json)
    configure_tracing(SERVICE, settings.otlp_endpoint)
    serve_metrics(settings.metrics_port)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
