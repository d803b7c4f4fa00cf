"""Running a service process: one entry point shape for every `python -m runstream.X`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from runstream.bus.errors import exception_family, nats_unavailable
from runstream.runtime.settings import ServiceSettings
from runstream.telemetry import configure_logging, configure_tracing, serve_metrics

S = TypeVar("S", bound=ServiceSettings)

logger = structlog.get_logger()

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STEADY_RUN_S = 30.0  # a run at least this long starts the backoff over


def dependency_down(
    exc: BaseException, also: Callable[[BaseException], bool] | None = None
) -> bool:
    """True when `exc` comes from NATS (or, through `also`, another dependency) being down
    or not answering: worth running again later, unlike a bug."""
    return any(
        nats_unavailable(e) or isinstance(e, OSError) or (also is not None and also(e))
        for e in exception_family(exc)
    )


async def keep_running(
    name: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    transient: Callable[[BaseException], bool] | None = None,
) -> None:
    """Run `run()` until `stop` is set. When it fails because a dependency is unavailable
    (at start-up, or when a loop inside gives up), start it again after a backoff, in this
    process: recovery does not wait on a supervisor's crash-loop delay. Any other error
    propagates: a bug ends the process.
    """
    attempt = 0
    log = logger.bind(service=name)
    while not stop.is_set():
        started = asyncio.get_running_loop().time()
        try:
            await run()
            return
        except Exception as exc:
            if not dependency_down(exc, transient):
                raise
            if asyncio.get_running_loop().time() - started >= STEADY_RUN_S:
                attempt = 0
            delay = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
            attempt += 1
            log.warning("service.restarting", error=type(exc).__name__, detail=str(exc)[:200],
                        delay_s=delay, attempt=attempt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def serve(
    name: str,
    settings_cls: type[S],
    run: Callable[[S, asyncio.Event], Awaitable[None]],
    *,
    transient: Callable[[BaseException], bool] | None = None,
) -> None:
    """Read settings once, configure logging, tracing and metrics, run until SIGTERM/SIGINT.

    Shutdown is the mirror of start-up: `run` sees `stop` set and unwinds its resources.
    A run that fails because NATS (or what `transient` recognises) is down starts again.
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
        await keep_running(name, lambda: run(settings, stop), stop, transient=transient)

    asyncio.run(main())
