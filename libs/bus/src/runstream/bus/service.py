"""Running a service process: one entry point shape for every `python -m runstream.X`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runstream.bus.config import ServiceSettings
from runstream.telemetry import configure_logging, configure_tracing, serve_metrics

S = TypeVar("S", bound=ServiceSettings)


def serve(name: str, settings_cls: type[S], run: Callable[[S, asyncio.Event], Awaitable[None]]):
    """Read settings once, configure logging, tracing and metrics, run until SIGTERM/SIGINT.

    Shutdown is the mirror of start-up: `run` sees `stop` set and unwinds its resources.
    """
    settings = settings_cls()
    configure_logging(name, settings.log_level, json=settings.log_json)
    configure_tracing(name, settings.otlp_endpoint)
    serve_metrics(settings.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(main())
