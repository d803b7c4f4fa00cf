"""`runstream up`: the whole stack on one machine, supervised, stopped cleanly on a signal.

Order of start: nats-server → Postgres (given or local) → migrations and stream →
projector → gateway → workers; order of stop is the mirror (services, then NATS, then
Postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx

from runstream.bus import Bus
from runstream.bus.objects import dataset_store
from runstream.cli.devenv import write_dev_env
from runstream.cli.settings import CliSettings
from runstream.cli.supervisor import Child, Output, child_env, stop_all
from runstream.cli.tokens import ensure_secret, make_token
from runstream.runtime.procs import (
    LocalPostgres,
    free_port,
    nats_server_binary,
    port_is_free,
    postgres_reachable,
    terminate,
    wait_port,
)

# (label, module) in start order: the projector first so the gateway's reads catch up
SERVICES: tuple[tuple[str, str], ...] = (
    ("projector", "runstream.projector"),
    ("gateway", "runstream.gateway"),
    ("analysis-worker", "runstream.analysis_worker"),
    ("execution-worker", "runstream.execution_worker"),
    ("chart-worker", "runstream.chart_worker"),
)
DEFAULT_NATS_PORT = 4222


def has_main(module: str) -> bool:
    """Whether `python -m module` can run (its package and `__main__` are installed)."""
    try:
        return importlib.util.find_spec(module + ".__main__") is not None
    except ModuleNotFoundError:
        return False


def sample_dataset_path() -> Path:
    return Path(str(resources.files("runstream.cli") / "data" / "sample_sales.csv"))


@dataclass
class UpOptions:
    data_dir: Path
    http_port: int | None = None
    nats_port: int | None = None
    ready_timeout_s: float = 90.0


class Stack:
    def __init__(self, settings: CliSettings, options: UpOptions) -> None:
        self.settings = settings
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.out = Output()
        self.stop = asyncio.Event()
        self.nats: asyncio.subprocess.Process | None = None
        self.pg: LocalPostgres | None = None
        self.children: list[Child] = []
        self._pumps: list[asyncio.Task[None]] = []
        self.failed: str | None = None

    def say(self, text: str) -> None:
        self.out.line("runstream", text)

    # --- infrastructure -------------------------------------------------------------
    async def start_nats(self) -> str:
        port = self.options.nats_port or self.settings.nats_port
        if port is None:
            port = DEFAULT_NATS_PORT if port_is_free(DEFAULT_NATS_PORT) else free_port()
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.nats = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js",
            "-sd", str(store), "-n", "runstream-up",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pumps.append(asyncio.create_task(self.out.pump("nats", self.nats.stdout)))
        await wait_port(port, timeout=20, alive=self.nats)
        return f"nats://127.0.0.1:{port}"

    async def start_postgres(self) -> str:
        given = self.settings.database_url
        if self.settings.database_url_given():
            if await postgres_reachable(given):
                self.say("using the Postgres at DATABASE_URL")
                return given
            self.say("DATABASE_URL is not reachable; starting a local Postgres instead")
        self.pg = LocalPostgres(self.data_dir / "pg", free_port())
        proc = await self.pg.start()
        self._pumps.append(asyncio.create_task(self.out.pump("postgres", proc.stdout)))
        await wait_port(self.pg.port, timeout=60, alive=proc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not await postgres_reachable(self.pg.dsn, timeout=1.0):  # may still be recovering
            if proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError("the local Postgres did not accept connections")
            await asyncio.sleep(0.1)
        self.say(f"local Postgres in {self.pg.root} on port {self.pg.port}")
        return self.pg.dsn

    async def prepare(self, nats_url: str, dsn: str) -> None:
        from runstream.store import connect, migrate

        conn = await connect(dsn, schema=self.settings.db_schema)
        try:
            await migrate(conn, self.settings.db_schema)
        finally:
            await conn.close()
        bus_settings = self.settings.model_copy(update={"nats_url": nats_url}).bus()
        async with Bus.connect(bus_settings, name="runstream-up") as bus:
            await bus.provision()
            await dataset_store(bus)

    # --- services -------------------------------------------------------------------
    def start_services(self, env: dict[str, str]) -> None:
        missing = [label for label, module in SERVICES if not has_main(module)]
        if missing:  # a CLI-only install: `up` needs the whole stack
            raise RuntimeError(f"runstream up needs every service installed; missing: "
                               f"{', '.join(missing)} (uv sync --all-packages)")
        for label, module in SERVICES:
            child = Child(label, [sys.executable, "-m", module], env, self.out)
            child.start()
            self.children.append(child)

    async def wait_ready(self, url: str) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ready_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not self.stop.is_set() and loop.time() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url + "/readyz")).status_code == 200:
                        return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.2)
        return False

    async def watch_infra(self) -> None:
        """Stop everything if NATS or the local Postgres dies under us."""
        waits: dict[asyncio.Task[int], str] = {}
        if self.nats is not None:
            waits[asyncio.create_task(self.nats.wait())] = "nats-server"
        if self.pg is not None and self.pg.proc is not None:
            waits[asyncio.create_task(self.pg.proc.wait())] = "postgres"
        stop_task = asyncio.create_task(self.stop.wait())
        done, pending = await asyncio.wait(
            [*waits, stop_task], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        for task in done:
            if task in waits:
                self.failed = f"{waits[task]} exited with {task.result()}"
                self.say(self.failed + "; stopping")
                self.stop.set()

    # --- the whole run ----------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        try:
            return await self._run()
        finally:
            await self.shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        http_port = self.options.http_port or s.http_port
        nats_url = await self.start_nats()
        dsn = await self.start_postgres()
        await self.prepare(nats_url, dsn)
        secret = (s.jwt_secret.get_secret_value() if s.jwt_secret
                  else ensure_secret(self.data_dir))
        token = make_token(secret, "dev", issuer=s.jwt_issuer)
        env = child_env(
            RUNSTREAM_NATS_URL=nats_url,
            RUNSTREAM_STREAM=s.stream,
            RUNSTREAM_PREFIX=s.prefix,
            RUNSTREAM_DATABASE_URL=dsn,
            DATABASE_URL=dsn,
            RUNSTREAM_DB_SCHEMA=s.db_schema,
            RUNSTREAM_JWT_SECRET=secret,
            RUNSTREAM_JWT_ISSUER=s.jwt_issuer,
            RUNSTREAM_HTTP_HOST=s.http_host,
            RUNSTREAM_HTTP_PORT=str(http_port),
            RUNSTREAM_SAMPLE_DATASET=str(sample_dataset_path()),
            RUNSTREAM_LOG_LEVEL=s.log_level,
            RUNSTREAM_DEV_TOKEN=token,  # the UI on localhost offers it (GET /dev-token)
        )
        self.start_services(env)
        host = "127.0.0.1" if s.http_host in ("0.0.0.0", "::", "") else s.http_host
        url = f"http://{host}:{http_port}"
        if any(c.name == "gateway" for c in self.children):
            if not await self.wait_ready(url):
                if self.stop.is_set():
                    return 0
                self.say(f"the gateway did not answer {url}/readyz yet; still trying")
        write_dev_env(self.data_dir / "dev.env", {
            "RUNSTREAM_URL": url,
            "RUNSTREAM_TOKEN": token,
            "RUNSTREAM_NATS_URL": nats_url,
            "RUNSTREAM_DATABASE_URL": dsn,
            "RUNSTREAM_DB_SCHEMA": s.db_schema,
            "RUNSTREAM_STREAM": s.stream,
            "RUNSTREAM_PREFIX": s.prefix,
        })
        self.say(f"UI and API: {url}/")
        self.say(f"dev token (sub 'dev', 30 days): {token}")
        self.say(f"NATS: {nats_url}   (nats stream view {s.stream} --server {nats_url})")
        self.say(f"wrote {self.data_dir / 'dev.env'}; Ctrl-C stops everything")
        await self.watch_infra()
        return 1 if self.failed else 0

    async def shutdown(self) -> None:
        await stop_all(self.children)
        if self.nats is not None:
            await terminate(self.nats, grace=10)
            self.say("nats-server stopped")
        if self.pg is not None:
            await self.pg.stop()
            self.say("postgres stopped")
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(pump, 2)


def run_up(settings: CliSettings, options: UpOptions) -> int:
    return asyncio.run(Stack(settings, options).run())
