"""`runstream up`: the whole stack on one machine, supervised, stopped cleanly on a signal.

Order of start: nats-server → Postgres (given, the local server's `runstream` database, or
a cluster of its own) → migrations and stream → projector → gateway → workers → the
periodic cleanup; order of stop is the mirror (cleanup, services, then NATS, then
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
from datetime import timedelta
from importlib import resources
from pathlib import Path

import httpx

from runstream.bus import Bus
from runstream.bus.objects import dataset_store
from runstream.cli.devenv import write_dev_env
from runstream.cli.durations import format_duration
from runstream.cli.retention import CleanupSchedule
from runstream.cli.settings import (
    DATABASE_NAME,
    DEFAULT_HTTP_PORT,
    DEFAULT_NATS_PORT,
    CliSettings,
    read_env_file,
)
from runstream.cli.supervisor import Child, Output, child_env, stop_all
from runstream.cli.tokens import ensure_secret, make_token
from runstream.runtime.procs import (
    LocalPostgres,
    ensure_database,
    free_port,
    nats_server_binary,
    port_is_free,
    postgres_reachable,
    server_address,
    terminate,
    wait_port,
    with_database,
)

# (label, module) in start order: the projector first so the gateway's reads catch up
SERVICES: tuple[tuple[str, str], ...] = (
    ("projector", "runstream.projector"),
    ("gateway", "runstream.gateway"),
    ("analysis-worker", "runstream.analysis_worker"),
    ("execution-worker", "runstream.execution_worker"),
    ("chart-worker", "runstream.chart_worker"),
)


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
    http_port: int | None = None  # None: 8000, or a free port when 8000 is taken
    nats_port: int | None = None  # None: 4222, or a free port when 4222 is taken
    database_url: str | None = None  # None: see Stack.start_postgres
    postgres_server: str | None = None  # "off": never use a server `up` did not start
    ready_timeout_s: float = 90.0
    cleanup_older_than: timedelta | None = None  # None: no periodic cleanup
    cleanup_every: timedelta | None = None
    # projector processes (with RUNSTREAM_PARTITIONS > 1 they share the partitions; with
    # one partition the extra ones are hot standbys)
    projectors: int = 1
    # gateway worker processes on the one HTTP port (RUNSTREAM_GATEWAY_WORKERS)
    gateways: int = 1


def pick_port(given: int | None, default: int, what: str) -> int:
    """The port asked for (which must be free), else the default when free, else any."""
    if given is not None:
        if not port_is_free(given):
            raise RuntimeError(f"{what} port {given} is taken (choose another or leave it "
                               "unset to have one picked)")
        return given
    return default if port_is_free(default) else free_port()


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
        self._cleanup: asyncio.Task[None] | None = None
        self._cleanup_stop = asyncio.Event()
        self.failed: str | None = None
        self.previous: dict[str, str] = {}  # the last run's dev.env

    def say(self, text: str) -> None:
        self.out.line("runstream", text)

    # --- infrastructure -------------------------------------------------------------
    async def start_nats(self) -> str:
        port = pick_port(self.options.nats_port, DEFAULT_NATS_PORT, "NATS")
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
        """The database, in this order: the one given (--database-url or
        RUNSTREAM_DATABASE_URL, used as it is); the `runstream` database on the local server
        (--postgres-server, created when missing) when that server answers; the `runstream`
        database in a cluster of its own in <data-dir>/pg. Never a database it was not
        told to use: not the server's `postgres`, not a plain DATABASE_URL."""
        given = self.options.database_url
        if given and given == self.previous.get("RUNSTREAM_DATABASE_URL") \
                and not await postgres_reachable(given):
            # a shell that sourced the last run's dev.env names that run's own cluster,
            # which is not started yet: choose again, as that run did
            self.say("RUNSTREAM_DATABASE_URL is the last run's (from dev.env); choosing again")
            given = None
        if given:
            if not await postgres_reachable(given):
                raise RuntimeError(f"the database at {server_address(given)} "
                                   "(--database-url / RUNSTREAM_DATABASE_URL) does not answer")
            self.say(f"database: the one given, on {server_address(given)}")
            return given
        server = self.options.postgres_server
        if server and server.strip().lower() != "off":
            if await postgres_reachable(with_database(server, "postgres")):
                dsn, created = await ensure_database(server, DATABASE_NAME)
                self.say(f"database: {DATABASE_NAME} on the Postgres at "
                         f"{server_address(server)}{' (created)' if created else ''}")
                return dsn
            self.say(f"no Postgres answers at {server_address(server)}; "
                     "starting a cluster of its own")
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
        dsn, _ = await ensure_database(self.pg.dsn, DATABASE_NAME)
        self.say(f"database: {DATABASE_NAME} in the cluster in {self.pg.root} "
                 f"on port {self.pg.port}")
        return dsn

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
            copies = self.options.projectors if label == "projector" else 1
            for i in range(max(1, copies)):
                name = label if i == 0 else f"{label}-{i + 1}"
                child = Child(name, [sys.executable, "-m", module], env, self.out)
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
        # a previous run's dev.env names ports and a database that may not be these
        self.previous = read_env_file(self.data_dir / "dev.env")
        (self.data_dir / "dev.env").unlink(missing_ok=True)
        http_port = pick_port(self.options.http_port, DEFAULT_HTTP_PORT, "HTTP")
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
            # one value for the projectors and the gateway
            RUNSTREAM_PARTITIONS=str(s.partitions),
            RUNSTREAM_GATEWAY_WORKERS=str(self.options.gateways),
        )
        if self.options.projectors > 1 and s.partitions <= 1:
            self.say(f"{self.options.projectors} projectors over one partition: the others "
                     "are hot standbys (RUNSTREAM_PARTITIONS=P spreads the fold over them)")
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
            "RUNSTREAM_PARTITIONS": str(s.partitions),
        })
        workers = self.options.gateways
        self.say(f"UI and API: {url}/" + (f"   ({workers} gateway workers on this port)"
                                          if workers > 1 else ""))
        self.say(f"dev token (sub 'dev', 30 days): {token}")
        self.say(f"NATS: {nats_url}   (nats stream view {s.stream} --server {nats_url})")
        self.say(f"wrote {self.data_dir / 'dev.env'}; Ctrl-C stops everything")
        self.start_cleanup(nats_url, dsn)
        await self.watch_infra()
        return 1 if self.failed else 0

    def start_cleanup(self, nats_url: str, dsn: str) -> None:
        """Retention under `up`: the cleanup of `runstream cleanup`, now and periodically."""
        older_than, every = self.options.cleanup_older_than, self.options.cleanup_every
        if older_than is None or every is None:
            self.say("periodic cleanup: off")
            return
        settings = self.settings.model_copy(update={"nats_url": nats_url, "database_url": dsn})
        schedule = CleanupSchedule(settings, older_than=older_than, every=every,
                                   report=lambda line: self.out.line("cleanup", line))
        self.say(f"periodic cleanup: every {format_duration(every)}, what is settled and "
                 f"older than {format_duration(older_than)}")
        self._cleanup = asyncio.create_task(schedule.run(self._cleanup_stop))

    async def shutdown(self) -> None:
        self._cleanup_stop.set()
        if self._cleanup is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._cleanup, 30)
        await stop_all(self.children)
        if self.nats is not None:
            code = await terminate(self.nats, grace=10)
            self.say(f"nats-server stopped ({code})")
        if self.pg is not None:
            self.say(f"postgres stopped ({await self.pg.stop()})")
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(pump, 2)


def run_up(settings: CliSettings, options: UpOptions) -> int:
    return asyncio.run(Stack(settings, options).run())
