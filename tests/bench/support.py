"""Shared pieces of the benchmarks: services as real subprocesses, tokens, a lean HTTP
client for load generation, and percentiles.

The services run as `python -m runstream.<service>` children with RUNSTREAM_* settings,
so the load generator (this process) never competes with them for one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from runstream.testing import free_port
from runstream.testing.procs import live_children

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "runstream"


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def token(secret: str, sub: str = "bench", ttl_s: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl_s, "iss": ISSUER, "typ": "access"}
    return jwt.encode(claims, secret, algorithm="HS256")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return float(ordered[int(rank) - 1])


def summary_ms(values_s: Sequence[float]) -> str:
    """`p50 … ms, p99 … ms, max … ms (n=…)` of durations given in seconds."""
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms (n={len(ms)})"
    )


def rss_mb(pid: int) -> float:
    """VmRSS of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_clock_s(pid: int) -> float:
    """CPU seconds a live process has used so far, from its CPU-time clock
    (clock_getcpuclockid): exact, where /proc/<pid>/stat counts whole clock ticks (10 ms
    here) — small periodic work (an event every 10 ms) is over- or under-counted there."""
    clock = ctypes.c_int()
    if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(f"no CPU clock for pid {pid}")
    ts = _Timespec()
    if _libc.clock_gettime(clock, ctypes.byref(ts)) != 0:
        raise OSError(ctypes.get_errno(), f"clock_gettime of pid {pid}")
    return ts.tv_sec + ts.tv_nsec / 1e9


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def with_children(pid: int) -> list[int]:
    """A process and its children (a gateway with workers: the supervisor and each one)."""
    return [pid, *live_children(pid)]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its children, from their CPU clocks."""
    return sum(cpu_clock_s(p) for p in with_children(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a live process has used so far."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


@dataclass
class BenchEnv:
    """Where the services connect: one nats-server, a fresh stream and a fresh database."""

    nats_url: str
    stream: str
    prefix: str
    database_url: str
    jwt_secret: str = field(default_factory=lambda: "bench-" + secrets.token_hex(24))

    def environ(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env.pop("DATABASE_URL", None)
        env.update(
            {
                "RUNSTREAM_NATS_URL": self.nats_url,
                "RUNSTREAM_STREAM": self.stream,
                "RUNSTREAM_PREFIX": self.prefix,
                "RUNSTREAM_DATASETS_BUCKET": f"DS_{self.stream}",
                "RUNSTREAM_DATABASE_URL": self.database_url,
                "RUNSTREAM_JWT_SECRET": self.jwt_secret,
                "RUNSTREAM_LOG_LEVEL": "WARNING",
                "RUNSTREAM_LOG_JSON": "true",
                # Far above any load here: the limiter stays in the path but never refuses.
                "RUNSTREAM_RATE_LIMIT_WRITES": "1000000/minute",
                "RUNSTREAM_RATE_LIMIT_PUBLIC": "1000000/minute",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update({f"RUNSTREAM_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    def bus_settings(self) -> Any:
        from runstream.bus import BusSettings

        return BusSettings(
            url=self.nats_url,
            stream=self.stream,
            prefix=self.prefix,
            datasets_bucket=f"DS_{self.stream}",
        )


class Service:
    """One service child process; its output goes to a log file shown on failure."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.module = module
        self.env = env
        self.log = log_dir / f"{module.rsplit('.', 1)[-1]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self._profile(self.module)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @staticmethod
    def _profile(module: str) -> list[str]:
        """BENCH_PROFILE=<dir>: run under cProfile, stats in <dir>/<module>.prof at exit."""
        folder = os.environ.get("BENCH_PROFILE")
        if not folder:
            return [module]
        Path(folder).mkdir(parents=True, exist_ok=True)
        return ["tests.bench.profiled", module, str(Path(folder).resolve() / f"{module}.prof")]

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM this one pid, then SIGKILL it if it does not stop within 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Running:
    services: dict[str, Service]
    url: str
    env: BenchEnv

    def gateway(self) -> Service:
        return self.services["gateway"]

    def headers(self, sub: str = "bench") -> dict[str, str]:
        return {"Authorization": f"Bearer {token(self.env.jwt_secret, sub)}"}

    def client(self, sub: str = "bench", **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers=self.headers(sub), timeout=kw.pop("timeout", 30.0), **kw
        )


WORKERS = ("runstream.analysis_worker", "runstream.execution_worker", "runstream.chart_worker")


@contextlib.asynccontextmanager
async def run_services(
    env: BenchEnv,
    log_dir: Path,
    *,
    workers: bool = False,
    gateway: dict[str, Any] | None = None,
) -> AsyncIterator[Running]:
    """Projector (+ workers) + one gateway as subprocesses; waits for the gateway's /readyz."""
    port = free_port()
    modules = ["runstream.projector", *(WORKERS if workers else ())]
    services: dict[str, Service] = {}
    try:
        for module in modules:
            services[module.rsplit(".", 1)[-1]] = Service(module, env.environ(), log_dir).start()
        services["gateway"] = Service(
            "runstream.gateway", env.environ(http_port=port, **(gateway or {})), log_dir
        ).start()
        url = f"http://127.0.0.1:{port}"
        await _wait_ready(url, services)
        if workers:
            await _wait_consumers(
                env, ("analysis-worker", "execution-worker", "chart-worker"), services
            )
        yield Running(services=services, url=url, env=env)
    finally:
        for service in reversed(list(services.values())):
            service.stop()


async def _wait_ready(url: str, services: dict[str, Service], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        while True:
            for service in services.values():
                service.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"gateway not ready after {timeout}s:\n{services['gateway'].tail()}"
                )
            await asyncio.sleep(0.1)


async def _wait_consumers(
    env: BenchEnv, durables: Sequence[str], services: dict[str, Service], timeout: float = 90
) -> None:
    """Workers are ready once their durable consumers exist and wait for messages."""
    import nats

    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        for durable in durables:
            while True:
                for service in services.values():
                    service.check_alive()
                try:
                    info = await js.consumer_info(env.stream, durable)
                    if info.num_waiting:
                        break
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumer {durable} not ready after {timeout}s")
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


class RawHttp:
    """One keep-alive HTTP/1.1 connection, lean enough not to be the bottleneck."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = bytearray()
            while (size := int((await self.reader.readline()).split(b";")[0], 16)) > 0:
                data += await self.reader.readexactly(size + 2)
                del data[-2:]
            await self.reader.readline()
            raw = bytes(data)
        else:
            raw = await self.reader.readexactly(length)
        return status, (json.loads(raw) if raw else None)


@contextlib.contextmanager
def sampled(pid: int, name: str) -> Iterator[None]:
    """BENCH_PYSPY=<dir>: sample `pid` with py-spy (on PATH) while the block runs
    (BENCH_PYSPY_NATIVE=1: C frames too); collapsed stacks in <dir>/<name>.txt."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder).resolve() / f"{name}.txt"
    # C frames need the process paused for each sample: more overhead
    how = ["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else ["--nonblocking"]
    proc = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
         *how, "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        proc.wait(30)

