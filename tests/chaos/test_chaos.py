"""`make chaos`: every process of the stack killed or restarted in turn, under load.

The whole stack runs as processes (gateway, projector, the three workers), on a NATS
server and a Postgres of the test's own. One client per session submits an analysis,
waits for its settle over SSE, submits the next. A driver releases the load phase by
phase and, in each phase, injects one fault at a moment when the victim has work in
hand, then measures how long the stack took to heal (`harness` defines it). After
each phase the invariants are counted (`tests.faults.support.measure`): nothing lost,
nothing twice, nothing stuck. Then the same on a three-node NATS cluster (stream and
consumers at three replicas): a node that does not lead the stream, then the leader,
SIGKILLed mid-run and brought back. A table prints one row per fault; the test asserts
every row is clean and ends with `verify` over every analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from runstream.bus import Bus, BusSettings
from runstream.gateway.auth import Tokens
from runstream.testing import NatsCluster, NatsServer, PostgresCluster, free_port, wait_until
from tests.chaos.harness import (
    FAST_SQL,
    Chaos,
    Fault,
    Load,
    Row,
    Tracker,
    in_analysis,
    in_chart,
    kill_cluster_node,
    kill_execution_mid_query,
    kill_sandbox_child,
    kill_service,
    restart_nats,
    restart_postgres,
    sql_for,
    table,
)
from tests.faults.support import Services, open_sessions, verify
from tests.integration.pipeline_support import FakeChatCompletions

SESSIONS, PER_SESSION, PER_PHASE = 50, 4, 25  # 200 analyses, 8 phases of 25
SERVICES = ["projector", "analysis_worker", "execution_worker", "chart_worker", "gateway"]

# (name, fault, slow queries in the phase)
FAULTS: list[tuple[str, Fault, int]] = [
    ("gateway SIGKILLed", kill_service("gateway", None), 0),
    ("projector SIGKILLed", kill_service("projector", None), 0),
    ("analysis worker SIGKILLed", kill_service("analysis_worker", in_analysis, least=3), 0),
    ("execution worker SIGKILLed mid-query", kill_execution_mid_query(), 1),
    ("chart worker SIGKILLed", kill_service("chart_worker", in_chart), 0),
    ("sandbox child SIGKILLed mid-query", kill_sandbox_child(), 1),
    ("Postgres restarted", restart_postgres(), 0),
    ("NATS restarted", restart_nats(), 0),
]
CLUSTER_SESSIONS, CLUSTER_PER_SESSION = 25, 2
CLUSTER_FAULTS: list[tuple[str, Fault, int]] = [
    ("cluster: non-leader node SIGKILLed", kill_cluster_node(leader=False), 0),
    ("cluster: stream leader SIGKILLed", kill_cluster_node(leader=True), 0),
]


@pytest.fixture(scope="module")
def report() -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    if rows:
        print(f"\n\nmake chaos: one row per fault\n{table(rows)}\n")


@asynccontextmanager
async def chaos_stack(
    log_dir: Path, nats: NatsServer | NatsCluster, dsn: str, *, sessions: int,
    per_session: int, postgres: PostgresCluster | None = None, replicas: int = 1,
) -> AsyncIterator[Chaos]:
    """Every service as a process, the session clients waiting for tickets, a tracker."""
    async with FakeChatCompletions(stalls=0, sql=FAST_SQL, sql_for=sql_for) as planner:
        secret, port = secrets.token_hex(24), free_port()
        env = {
            **os.environ,
            "RUNSTREAM_NATS_URL": nats.url, "RUNSTREAM_STREAM_REPLICAS": str(replicas),
            "RUNSTREAM_DATABASE_URL": dsn, "RUNSTREAM_LOG_JSON": "true",
            "RUNSTREAM_JWT_SECRET": secret, "RUNSTREAM_HTTP_PORT": str(port),
            "RUNSTREAM_PLANNER": "openai", "RUNSTREAM_OPENAI_BASE_URL": planner.base_url,
            "RUNSTREAM_OPENAI_MODEL": "fake", "RUNSTREAM_OPENAI_API_KEY": "k",
            # Short, so that work a SIGKILL interrupts is redelivered within seconds.
            "RUNSTREAM_ACK_WAIT_S": "3",
            # One owner drives 200 analyses plus retries: load, not abuse.
            "RUNSTREAM_RATE_LIMIT_WRITES": "off", "RUNSTREAM_RATE_LIMIT_PUBLIC": "off",
        }
        settings = BusSettings(url=nats.url, replicas=replicas)
        services = Services(env, log_dir)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        try:
            async with Bus.connect(settings, name="chaos") as bus:
                # Provisioned before any service starts: a cluster elects its meta
                # leader first, and a service that cannot provision exits.
                await wait_until(lambda: _provisioned(bus), timeout=60, interval=0.2)
                for name in SERVICES:
                    services.start(name, name)
                gateway = f"http://127.0.0.1:{port}"
                tracker = Tracker(bus)
                tasks.append(asyncio.create_task(tracker.run(stop)))
                load = Load(gateway, Tokens(secret).issue("chaos", ttl_s=7200)[0])
                chaos = Chaos(services=services, bus=bus, tracker=tracker, load=load,
                              dsn=dsn, gateway_url=gateway, nats=nats, postgres=postgres,
                              stream_replicas=replicas)
                await wait_until(chaos.ready, timeout=60, interval=0.2)
                async with load.client() as c:
                    sids = await open_sessions(c, sessions)
                tasks += [asyncio.create_task(load.session(sid, per_session)) for sid in sids]
                chaos.clients = tasks[1:]
                yield chaos
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            services.stop_all()


async def _provisioned(bus: Bus) -> bool:
    with contextlib.suppress(Exception):
        await bus.provision()
        return True
    return False


async def run_phases(chaos: Chaos, faults: list[tuple[str, Fault, int]],
                     report: list[Row]) -> list[Row]:
    rows = []
    for index, (name, fault, slow) in enumerate(faults):
        row = await chaos.phase(index, name, fault, n=PER_PHASE, slow=slow)
        print(f"  {row.fault}: {row.completed}/{row.submitted} completed, recovered in "
              f"{row.recover_s if row.recover_s is None else round(row.recover_s, 1)} s "
              f"(fault at {chaos.fault_at} UTC; in-hand settled, folded, ready at "
              f"{chaos.parts} s) {row.problems or ''}",
              flush=True)
        rows.append(row)
        report.append(row)
    return rows


async def finish(chaos: Chaos, rows: list[Row], started: float) -> None:
    """The clients are done; print the table; every row clean; `verify` over all."""
    done = await asyncio.wait_for(asyncio.gather(*chaos.clients, return_exceptions=True), 60)
    failures = [r for r in done if isinstance(r, BaseException)]
    print(f"\n{table(rows)}\nwall time {time.perf_counter() - started:.0f} s; submit retries "
          f"{dict(chaos.load.retries)}; settles read by GET after a broken SSE stream: "
          f"{chaos.load.fallbacks}; SSE streams ended before their settle frame: "
          f"{chaos.load.ended_early}")
    assert not failures, failures[:3]
    assert all(r.clean for r in rows), [(r.fault, r.problems) for r in rows if not r.clean]
    assert all(r.completed == r.submitted for r in rows), [
        (r.fault, r.problems) for r in rows if r.completed != r.submitted]
    await verify(chaos.bus, chaos.dsn, [a.message_id for a in chaos.load.accepted])


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "nats", port=free_port()).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.mark.timeout(900)
async def test_every_fault_in_turn_under_load_loses_repeats_and_strands_nothing(
    own_nats: NatsServer, own_postgres: PostgresCluster, tmp_path: Path, report: list[Row],
) -> None:
    started = time.perf_counter()
    print(f"\nchaos: {SESSIONS * PER_SESSION} analyses, {SESSIONS} sessions, "
          f"{len(FAULTS)} faults; logs in {tmp_path}", flush=True)
    async with chaos_stack(tmp_path, own_nats, own_postgres.dsn, sessions=SESSIONS,
                           per_session=PER_SESSION, postgres=own_postgres) as chaos:
        rows = await run_phases(chaos, FAULTS, report)
        await finish(chaos, rows, started)


@pytest.mark.timeout(600)
async def test_a_three_node_cluster_carries_on_when_a_node_or_the_stream_leader_dies(
    tmp_path: Path, database_url: str, report: list[Row],
) -> None:
    started = time.perf_counter()
    cluster = await asyncio.to_thread(NatsCluster(base_dir=tmp_path / "nats").start)
    print(f"\nchaos: 3-node NATS cluster, stream at 3 replicas; logs in {tmp_path}",
          flush=True)
    try:
        async with chaos_stack(tmp_path, cluster, database_url, sessions=CLUSTER_SESSIONS,
                               per_session=CLUSTER_PER_SESSION, replicas=3) as chaos:
            info = await chaos.bus.js.stream_info(chaos.bus.stream)
            assert info.config.num_replicas == 3
            rows = await run_phases(chaos, CLUSTER_FAULTS, report)
            await finish(chaos, rows, started)
    finally:
        await asyncio.to_thread(cluster.stop)  # its store and node logs stay in tmp_path
