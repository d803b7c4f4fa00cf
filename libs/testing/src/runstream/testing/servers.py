"""Real servers for tests: nats-server from the wheel, a throwaway Postgres cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

# One lookup of the servers' binaries, shared with `runstream up`.
from runstream.runtime.procs import nats_server_binary, pg_binary

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


async def wait_until(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll an async probe until it returns something truthy; fail loudly at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: T = await probe()
    while not last:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last value {last!r})")
        await asyncio.sleep(interval)
        last = await probe()
    return last


class NatsServer:
    """One nats-server process with JetStream in a temporary store directory."""

    def __init__(self, store_dir: Path | None = None, port: int | None = None) -> None:
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="rs-nats-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-js",
                "-sd", str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 15, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


class NatsCluster:
    """Three (or `size`) nats-servers on loopback, clustered by routes, JetStream on each,
    every node with its own store directory and server name (`n1`, `n2`, ...). A node can
    be SIGKILLed and started again on the same port and store."""

    def __init__(self, size: int = 3, base_dir: Path | None = None,
                 name: str = "rs-test") -> None:
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="rs-nats-cluster-"))
        self.name = name
        self.names = [f"n{i + 1}" for i in range(size)]
        self.ports = {n: free_port() for n in self.names}
        self.cluster_ports = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """Every node, comma-separated (as RUNSTREAM_NATS_URL takes them)."""
        return ",".join(self.node_url(n) for n in self.names)

    def node_url(self, name: str) -> str:
        return f"nats://127.0.0.1:{self.ports[name]}"

    def start(self) -> NatsCluster:
        for name in self.names:
            self.start_node(name)
        return self

    def start_node(self, name: str) -> None:
        routes = ",".join(f"nats://127.0.0.1:{self.cluster_ports[n]}"
                          for n in self.names if n != name)
        store = self.base_dir / name
        store.mkdir(parents=True, exist_ok=True)
        log = (self.base_dir / f"{name}.log").open("ab")  # the node's own log, for a post-mortem
        self.procs[name] = subprocess.Popen(
            [
                nats_server_binary(),
                "-a", "127.0.0.1", "-p", str(self.ports[name]), "-n", name,
                "-js", "-sd", str(store),
                "--cluster_name", self.name,
                "--cluster", f"nats://127.0.0.1:{self.cluster_ports[name]}",
                "--routes", routes,
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own copy
        _wait_port(self.ports[name], 15, self.procs[name])

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb + postgres) in a temporary folder.

    PostgreSQL refuses to run as root, so as root the folder is handed to the `postgres`
    user and the server runs as that user (not through a wrapper, so that stopping it
    signals postgres itself).
    """

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="rs-pg-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresCluster:
        if self._user:
            shutil.chown(self.data_dir, self._user, self._user)
        pgdata = self.data_dir / "data"
        if not pgdata.exists():
            subprocess.run(
                [pg_binary("initdb"), "-D", str(pgdata), "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8"],
                check=True, stdout=subprocess.DEVNULL, user=self._user, cwd=self.data_dir,
            )
        self.proc = subprocess.Popen(
            [pg_binary("postgres"), "-D", str(pgdata), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.data_dir), "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=400"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self._user,
            cwd=self.data_dir,
        )
        self._wait_accepting(30)
        return self

    def _wait_accepting(self, timeout: float) -> None:
        """Ready means accepting connections, not just listening (recovery comes first)."""
        _wait_port(self.port, timeout, self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            ready = subprocess.run(
                [pg_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"postgres on {self.port} not accepting connections")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
