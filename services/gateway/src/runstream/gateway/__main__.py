"""`python -m runstream.gateway`: load settings, configure logging and tracing, serve."""

from __future__ import annotations

import uvicorn

from runstream.gateway.app import create_app
from runstream.gateway.settings import GatewaySettings
from runstream.telemetry import configure_logging, configure_tracing


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    configure_tracing("gateway", settings.otlp_endpoint)
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port,
        log_level="warning", access_log=False, timeout_graceful_shutdown=5,
        ws_ping_interval=20, proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


if __name__ == "__main__":
    main()
