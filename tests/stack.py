"""A whole Runstream stack inside the test process: projector + N gateways (+ workers).

Servers are real (uvicorn on free ports, nats-server, Postgres); services are imported
lazily here because this harness is a development-only library.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from runstream.runtime import keep_running
from runstream.testing.servers import free_port

JWT_SECRET = "test-secret-" + secrets.token_hex(24)

# The suites run with P partitions when RUNSTREAM_TEST_PARTITIONS says so (default 1).
TEST_PARTITIONS = int(os.environ.get("RUNSTREAM_TEST_PARTITIONS", "1"))


@dataclass
class Stack:
    urls: list[str]
    settings: Any  # GatewaySettings of the first gateway
    tokens: Any
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]

    def token(self, owner: str = "alice") -> str:
        return str(self.tokens.issue(owner, ttl_s=3600)[0])

    def client(self, owner: str = "alice", index: int = 0, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.urls[index], headers={"Authorization": f"Bearer {self.token(owner)}"},
            timeout=kw.pop("timeout", 30.0), **kw,
        )


async def _serve(app: Any, port: int) -> tuple[Any, asyncio.Task[Any]]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
        lifespan="on", timeout_graceful_shutdown=2,
    ))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway exited during start-up")
        await asyncio.sleep(0.01)
    return server, task


@asynccontextmanager
async def run_stack(
    *,
    nats_url: str,
    stream: str,
    prefix: str,
    database_url: str,
    gateways: int = 1,
    workers: bool = False,
    projector: bool = True,
    overrides: dict[str, Any] | None = None,
    worker_overrides: dict[str, Any] | None = None,
    partitions: int = TEST_PARTITIONS,
    projectors: int = 1,
) -> AsyncIterator[Stack]:
    from runstream.gateway.app import create_app
    from runstream.gateway.auth import Tokens
    from runstream.gateway.settings import GatewaySettings

    common: dict[str, Any] = {"nats_url": nats_url, "stream": stream, "prefix": prefix,
              "datasets_bucket": f"DS_{stream}", "database_url": database_url,
              "partitions": partitions}
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    servers: list[Any] = []
    try:
        if projector:
            from runstream.projector.service import ProjectorSettings, run_projector
            from runstream.store import postgres_unavailable

            projector_settings = ProjectorSettings(**common)

            def fold(ready: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
                return lambda: run_projector(projector_settings, stop, ready=ready)

            for _ in range(projectors):
                ready = asyncio.Event()
                # Run as `python -m runstream.projector` does: started again after an
                # outage.
                tasks.append(asyncio.create_task(keep_running(
                    "projector", fold(ready), stop, transient=postgres_unavailable)))
                await _ready(ready, tasks[-1])
        if workers:
            for start in _worker_starters():
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(
                    start({**common, **(worker_overrides or {})}, stop, ready)))
                await _ready(ready, tasks[-1])
        settings_list = []
        urls = []
        for _ in range(gateways):
            port = free_port()
            # The secret is a SecretStr field; pydantic takes the plain string.
            gateway: dict[str, Any] = {"jwt_secret": JWT_SECRET, "http_port": port}
            settings = GatewaySettings(**common, **gateway, **(overrides or {}))
            server, task = await _serve(create_app(settings), port)
            servers.append(server)
            tasks.append(task)
            settings_list.append(settings)
            urls.append(f"http://127.0.0.1:{port}")
        yield Stack(urls=urls, settings=settings_list[0], tokens=Tokens(JWT_SECRET), tasks=tasks)
    finally:
        for server in servers:
            server.should_exit = True
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)


async def _ready(ready: asyncio.Event, task: asyncio.Task[Any]) -> None:
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise RuntimeError("service exited during start-up")
    if waiter not in done:
        waiter.cancel()
        raise TimeoutError("service not ready within 30 s")


def _worker_starters() -> list[Callable[[dict[str, Any], asyncio.Event, asyncio.Event],
                                        Coroutine[Any, Any, None]]]:
    from runstream.analysis_worker.settings import AnalysisWorkerSettings
    from runstream.analysis_worker.worker import run_worker as run_analysis
    from runstream.chart_worker.settings import ChartWorkerSettings
    from runstream.chart_worker.worker import run_worker as run_chart
    from runstream.execution_worker.settings import ExecutionWorkerSettings
    from runstream.execution_worker.worker import run_worker as run_execution

    def starter(settings_cls: Any, run: Any) -> Any:
        async def start(values: dict[str, Any], stop: asyncio.Event, ready: asyncio.Event):
            fields = settings_cls.model_fields
            settings = settings_cls(**{k: v for k, v in values.items() if k in fields})
            # As `serve` runs a worker process: started again after an outage.
            await keep_running(settings_cls.__name__, lambda: run(settings, stop, ready), stop)
        return start

    return [starter(AnalysisWorkerSettings, run_analysis),
            starter(ExecutionWorkerSettings, run_execution),
            starter(ChartWorkerSettings, run_chart)]
