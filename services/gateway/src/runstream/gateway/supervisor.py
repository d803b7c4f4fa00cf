"""`python -m runstream.gateway` with RUNSTREAM_GATEWAY_WORKERS=N > 1: N processes, one port.

The supervisor binds the port first (SO_REUSEPORT, not listening: it resolves port 0
and keeps the port reserved across worker restarts), then starts N workers. Each worker
binds its own SO_REUSEPORT socket on that host:port and serves the whole app with its
own NATS connection, live subscription and Postgres pool; the kernel spreads new
connections over the workers that listen. uvicorn's own `--workers` shares one socket
among its children instead.

- start-up: every worker must report that it serves; if one exits first, the others are
  stopped and the supervisor exits 3 (as a single gateway whose start-up failed).
- a worker that dies later is started again, with a log line and a backoff (0.5 s, 1 s,
  2 s, 5 s, 10 s, then every 30 s; a run of 30 s resets it); the others keep serving.
- SIGTERM or SIGINT: one SIGTERM to each worker, STOP_GRACE_S for them to finish, then
  SIGKILL; exit 0 when every worker stopped cleanly (0), else 1.
- metrics: the workers share a fresh prometheus_client multiprocess directory (made
  here, removed at the end), so `/metrics` from any worker counts them all.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import structlog

from runstream.gateway.server import WorkerServer, reuseport_socket, uvicorn_config
from runstream.gateway.settings import GatewaySettings
from runstream.telemetry import (
    MULTIPROCESS_DIR,
    configure_logging,
    configure_tracing,
    process_gone,
)

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 30.0  # a run this long resets the backoff
START_TIMEOUT_S = 120.0  # cold imports on a busy machine
# uvicorn's graceful shutdown (5 s for open connections) and the app's lifespan shutdown
STOP_GRACE_S = 20.0
STARTUP_FAILED = 3  # uvicorn's status for a start-up that failed

logger = structlog.get_logger()


def run_worker(settings: GatewaySettings, index: int, started: Connection, parent: int) -> None:
    """A worker process: its own socket on the shared port, its own app and connections."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a Ctrl-C
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    structlog.contextvars.bind_contextvars(worker=index)
    configure_tracing("gateway", settings.otlp_endpoint)
    sock = reuseport_socket(settings.http_host, settings.http_port)
    server = WorkerServer(uvicorn_config(settings), started=started, parent=parent)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(STARTUP_FAILED)


@dataclass
class Slot:
    """Worker number `index`: its current process, restarted whenever it dies."""

    index: int
    process: BaseProcess | None = None
    started: Connection | None = None  # the worker writes its pid here once it serves
    serving: bool = False
    since: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.count = settings.gateway_workers
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [Slot(i) for i in range(self.count)]
        self.signalled: int | None = None
        self._wake_r, self._wake_w = os.pipe()

    # --- signals ------------------------------------------------------------------
    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signalled = self.signalled or sig

    def _install_signals(self) -> None:
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)  # a signal wakes up wait() at once
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    # --- workers ------------------------------------------------------------------
    def _spawn(self, slot: Slot, settings: GatewaySettings) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(
            target=run_worker, args=(settings, slot.index, writer, os.getpid()),
            name=f"gateway-worker-{slot.index}",
        )
        process.start()
        writer.close()  # the worker holds the other end: EOF here when it dies
        slot.process, slot.started, slot.serving = process, reader, False
        slot.since, slot.restart_at = time.monotonic(), None
        logger.info("gateway.worker_starting", worker=slot.index, pid=process.pid)

    def _waitables(self) -> dict[Any, tuple[str, Slot]]:
        out: dict[Any, tuple[str, Slot]] = {}
        for slot in self.slots:
            if slot.process is not None:
                out[slot.process.sentinel] = ("exited", slot)
                if slot.started is not None:
                    out[slot.started] = ("started", slot)
        return out

    def _wait(self, timeout: float | None) -> list[tuple[str, Slot]]:
        """What happened within `timeout`: ("started" | "exited", slot) pairs; a signal
        ends the wait early (self.signalled)."""
        waitables = self._waitables()
        ready = wait([*waitables, self._wake_r], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        events = []
        for item in ready:
            if item is self._wake_r:
                continue
            what, slot = waitables[item]
            if what == "started":
                self._read_started(slot)
                if slot.serving:
                    events.append(("started", slot))
            else:
                events.append(("exited", slot))
        return events

    def _read_started(self, slot: Slot) -> None:
        conn = slot.started
        assert conn is not None
        try:
            conn.recv()
            slot.serving = True
        except (EOFError, OSError):
            pass
        conn.close()
        slot.started = None

    def _reap(self, slot: Slot) -> int:
        process = slot.process
        assert process is not None
        process.join()
        if process.pid is not None:
            process_gone(process.pid)  # its live gauges (clients) stop counting
        if slot.started is not None:
            slot.started.close()
            slot.started = None
        slot.process = None
        return process.exitcode if process.exitcode is not None else -1

    # --- the run --------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        os.set_blocking(self._wake_r, False)
        try:
            reserved = reuseport_socket(s.http_host, s.http_port)
        except OSError as exc:
            logger.error("gateway.port_unavailable", host=s.http_host, port=s.http_port,
                         error=str(exc))
            return STARTUP_FAILED
        # Inherited by every worker started from here on, read at its first import.
        metrics_dir = tempfile.mkdtemp(prefix="rs-gateway-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
        try:
            return self._run(reserved)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _run(self, reserved: Any) -> int:
        s = self.settings
        with reserved:
            port = reserved.getsockname()[1]
            worker_settings = s.model_copy(update={"http_port": port, "gateway_workers": 1})
            self._install_signals()
            for slot in self.slots:
                self._spawn(slot, worker_settings)
            if not self._start_up():
                clean = self._stop()
                return 0 if self.signalled and clean else STARTUP_FAILED
            logger.info("gateway.serving", host=s.http_host, port=port, workers=self.count,
                        pids=[slot.process.pid for slot in self.slots if slot.process])
            self._serve(worker_settings)
            return 0 if self._stop() else 1

    def _start_up(self) -> bool:
        """Until every worker serves: False when one exits first, on a signal, or after
        START_TIMEOUT_S."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(slot.serving for slot in self.slots):
            if self.signalled:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                logger.error("gateway.workers_start_timeout", timeout_s=START_TIMEOUT_S)
                return False
            for what, slot in self._wait(left):
                if what == "exited":
                    code = self._reap(slot)
                    logger.error("gateway.worker_start_failed", worker=slot.index,
                                 exit_code=code)
                    return False
        return True

    def _serve(self, worker_settings: GatewaySettings) -> None:
        """Restart any worker that dies, until a signal."""
        while not self.signalled:
            now = time.monotonic()
            due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            for what, slot in self._wait(timeout):
                if what == "started":
                    logger.info("gateway.worker_serving", worker=slot.index,
                                pid=slot.process.pid if slot.process else None)
                elif slot.process is not None and not self.signalled:
                    self._schedule_restart(slot)
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None and slot.restart_at <= now \
                        and not self.signalled:
                    self._spawn(slot, worker_settings)

    def _schedule_restart(self, slot: Slot) -> None:
        pid = slot.process.pid if slot.process else None
        ran = time.monotonic() - slot.since
        code = self._reap(slot)
        slot.failures = 0 if ran >= STABLE_AFTER_S else slot.failures + 1
        delay = BACKOFF_S[min(max(slot.failures - 1, 0), len(BACKOFF_S) - 1)]
        slot.restart_at = time.monotonic() + delay
        logger.warning("gateway.worker_restarting", worker=slot.index, pid=pid,
                       exit_code=code, restart_in_s=delay)

    def _stop(self) -> bool:
        """SIGTERM to every worker, SIGKILL after STOP_GRACE_S; True when each worker that
        was serving stopped with 0."""
        live = [slot for slot in self.slots if slot.process is not None]
        for slot in live:
            assert slot.process is not None and slot.process.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        clean = True
        for slot in live:
            assert slot.process is not None
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.exitcode is None:
                logger.warning("gateway.worker_killed", worker=slot.index,
                               pid=slot.process.pid)
                slot.process.kill()
            pid, serving = slot.process.pid, slot.serving
            code = self._reap(slot)
            logger.info("gateway.worker_stopped", worker=slot.index, pid=pid, exit_code=code)
            if serving and code != 0:
                clean = False
        return clean


def supervise(settings: GatewaySettings) -> int:
    configure_logging("gateway", settings.log_level, json=settings.log_json)
    return Supervisor(settings).run()
