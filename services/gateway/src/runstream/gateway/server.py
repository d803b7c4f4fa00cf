"""Uvicorn as the gateway runs it: one process, or one of several worker processes.

A worker binds a listening socket of its own with SO_REUSEPORT on the shared host:port;
the kernel spreads new connections over every worker listening there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import FrameType

import uvicorn

from runstream.gateway.app import create_app
from runstream.gateway.settings import GatewaySettings


def uvicorn_config(settings: GatewaySettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings), host=settings.http_host, port=settings.http_port,
        log_level="warning", access_log=False, timeout_graceful_shutdown=5,
        ws_ping_interval=20, proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, not yet listening.

    Uvicorn listens on it only once the app's start-up is done, so the kernel never hands
    a connection to a worker that cannot serve it yet. Bound but not listening, it also
    reserves the port (the supervisor keeps one such socket) without taking connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


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


class WorkerServer(Server):
    """One of several gateway processes under the supervisor.

    - Tells the supervisor once it serves (first tick of uvicorn's main loop, after the
      app's start-up and listen()).
    - Stops on SIGTERM only. A Ctrl-C in a terminal reaches the whole process group; the
      supervisor turns it into one SIGTERM per worker, and a second signal would make
      uvicorn skip the graceful part.
    - Stops if the supervisor is gone (killed with -9): an orphan would keep the port.
    """

    def __init__(self, config: uvicorn.Config, *, started: Connection, parent: int) -> None:
        super().__init__(config)
        self._started = started
        self._parent = parent
        self._told = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGINT:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if not self._told:
            self._told = True
            with contextlib.suppress(OSError):
                self._started.send(os.getpid())
                self._started.close()
        if os.getppid() != self._parent:
            self.should_exit = True
        return await super().on_tick(counter)
