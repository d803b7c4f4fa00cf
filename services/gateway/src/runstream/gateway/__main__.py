"""`python -m runstream.gateway`: load settings, configure logging and tracing, serve."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn

from runstream.gateway.app import create_app
from runstream.gateway.settings import GatewaySettings
from runstream.telemetry import configure_logging, configure_tracing


class Server(uvicorn.Server):
    """Uvicorn, except that a graceful stop on SIGTERM/SIGINT exits 0.

    After shutting down, uvicorn re-raises the signal it caught so that the process dies
    *of* it (status -15); a supervisor (`runstream up`, Kubernetes) reads that as a crash.
    The stop was asked for and went cleanly: forget the signal instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    configure_tracing("gateway", settings.otlp_endpoint)
    config = uvicorn.Config(
        create_app(settings), host=settings.http_host, port=settings.http_port,
        log_level="warning", access_log=False, timeout_graceful_shutdown=5,
        ws_ping_interval=20, proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = Server(config)
    server.run()
    if not server.started:  # as uvicorn.run: a failed start-up is not a clean exit
        raise SystemExit(3)


if __name__ == "__main__":
    main()
