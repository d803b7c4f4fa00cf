"""`python -m runstream.gateway`: load settings, configure logging and tracing, serve.

With RUNSTREAM_GATEWAY_WORKERS > 1 this process supervises that many worker processes on
the same port (runstream.gateway.supervisor); with 1 it serves by itself.
"""

from __future__ import annotations

from runstream.gateway.server import Server, uvicorn_config
from runstream.gateway.settings import GatewaySettings
from runstream.telemetry import configure_logging, configure_tracing


def main() -> None:
    settings = GatewaySettings()
    if settings.gateway_workers > 1:
        from runstream.gateway.supervisor import supervise

        raise SystemExit(supervise(settings))
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    configure_tracing("gateway", settings.otlp_endpoint)
    server = Server(uvicorn_config(settings))
    server.run()
    if not server.started:  # as uvicorn.run: a failed start-up is not a clean exit
        raise SystemExit(3)


if __name__ == "__main__":
    main()
