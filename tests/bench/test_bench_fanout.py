"""Issue 4 figures: SSE fan-out from one gateway process.

(a) 10,000 concurrent SSE clients on one gateway (a subprocess): raw-socket clients in
    two load-generator processes open `GET /api/sessions/{sid}/events?after_seq=...`
    on 1,000 sessions (10 clients each); the gateway's VmRSS is read with all of them
    connected and idle (target: ≤ 600 MB), then one log line is published per session
    and every client must receive it.
(b) Publish → receipt latency with 1,000 clients connected on a fresh gateway:
    a worker-like publisher (`Bus.publish` of `log_appended`, the publish time in the
    text) sends lines (1) spread over 100 sessions watched by 10 clients each, and
    (2) to one session watched by all 1,000 clients. Receipt time is read off the socket
    on the same host clock. Target: p50 ≤ 5 ms, p99 ≤ 25 ms.

Speed targets are printed, not asserted; what is asserted is that every client
received every event meant for it, exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runstream.bus import Bus
from runstream.contracts import LogAppended, new_id
from tests.bench.support import (
    ROOT,
    BenchEnv,
    Running,
    cpu_split,
    percentile,
    rss_mb,
    run_services,
    sampled,
    token,
    tree_cpu_s,
    with_children,
)

CLIENTS = int(os.environ.get("BENCH_FANOUT_CLIENTS", "10000"))
LATENCY_CLIENTS = int(os.environ.get("BENCH_FANOUT_LATENCY_CLIENTS", "1000"))
PER_SESSION = 10
PROCESSES = 2
SPREAD_EVENTS = 1000
SPREAD_INTERVAL_S = 0.01  # 100 lines/s, 1,000 deliveries/s
BROADCAST_EVENTS = 50
IDLE_WINDOW_S = 5.0
BROADCAST_INTERVAL_S = 0.1


@dataclass
class Session:
    sid: str
    mid: str
    cursor: int


class LoadGenerator:
    """One `tests.bench.sse_clients` process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, clients: int) -> None:
        self.proc = proc
        self.clients = clients

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"load generator exited ({await self.proc.wait()})")
        return json.loads(line)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def load_generators(
    stack: Running, targets: list[tuple[str, int, int]], log_dir: Path
) -> AsyncIterator[list[LoadGenerator]]:
    host, port = stack.url.removeprefix("http://").split(":")
    gens: list[LoadGenerator] = []
    try:
        for i in range(PROCESSES):
            mine = targets[i::PROCESSES]
            config = {"host": host, "port": int(port), "token": token(stack.env.jwt_secret),
                      "targets": mine, "connect_concurrency": 50}  # fmt: skip
            with (log_dir / f"sse_clients_{i}.log").open("ab") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tests.bench.sse_clients", json.dumps(config),
                    cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=err, limit=1 << 28,
                )  # fmt: skip
            gens.append(LoadGenerator(proc, sum(n for _, _, n in mine)))
        yield gens
    finally:
        for gen in gens:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gen.ask("quit"), 30)
            if gen.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    gen.proc.kill()
            await gen.proc.wait()


async def wait_all(
    gens: list[LoadGenerator], what: str, done: Any, timeout: float, stack: Running
) -> list[dict[str, Any]]:
    """Poll every generator's status until `done(gen, status)` holds for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [await g.ask("status") for g in gens]
        for st in statuses:
            assert st["failed"] == 0, f"{what}: clients failed: {st['errors']}"
            assert st["order_errors"] == 0, f"{what}: duplicate or out-of-order frames"
        if all(done(g, st) for g, st in zip(gens, statuses, strict=True)):
            return statuses
        stack.gateway().check_alive()
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s: {statuses}"
        await asyncio.sleep(0.25)


async def make_sessions(stack: Running, n: int) -> list[Session]:
    """Sessions, each with a pending analysis whose message the log lines belong to."""
    gate = asyncio.Semaphore(16)
    async with stack.client() as http:

        async def one() -> Session:
            async with gate:
                r = await http.post("/api/sessions", json={"title": "fan-out"})
                assert r.status_code == 201, r.text
                sid = r.json()["session_id"]
                r = await http.post(f"/api/sessions/{sid}/analyses", json={"question": "q"})
                assert r.status_code == 202, r.text
                body = r.json()
                return Session(sid=sid, mid=body["message_id"], cursor=body["as_of_seq"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def publish_line(bus: Bus, s: Session, tag: str, k: int) -> None:
    """What a worker does: one log line; the text carries the publish time."""
    await bus.publish(LogAppended(
        event_id=new_id(), at=_now(), session_id=s.sid, message_id=s.mid, step="execute",
        text=f"bench|{tag}|{k}|{time.time_ns()}",
    ))  # fmt: skip


def _now() -> Any:
    from runstream.contracts.base import utcnow

    return utcnow()


async def stream_clients(stack: Running) -> int:
    async with stack.client() as http:
        r = await http.get("/api/stats")
        assert r.status_code == 200, r.text
        return int(r.json()["gateway"]["stream_clients"])


def latencies_of(reports: list[dict[str, Any]], expected: dict[str, set[int]]) -> list[float]:
    """Every receipt's latency in ms, after checking each client got exactly its events."""
    out: list[float] = []
    for report in reports:
        for sid, items in report["clients"]:
            ks = [k for k, _ in items]
            assert len(ks) == len(set(ks)), f"a client of {sid} got a line twice"
            assert set(ks) == expected[sid], (
                f"a client of {sid} missed {len(expected[sid] - set(ks))} lines"
            )
            out += [lat / 1e6 for _, lat in items]
    return out


def verdict(value: float, limit: float) -> str:
    return f"{value:.1f} ({'met' if value <= limit else 'NOT met'}: ≤ {limit:g})"


@pytest.mark.timeout(900)
async def test_bench_10000_sse_clients_on_one_gateway(bench_env: BenchEnv, tmp_path: Path) -> None:
    sessions_n = CLIENTS // PER_SESSION
    async with run_services(bench_env, tmp_path) as stack:
        sessions = await make_sessions(stack, sessions_n)
        gw_pid = stack.gateway().pid
        idle_rss = rss_mb(gw_pid)
        targets = [(s.sid, s.cursor, PER_SESSION) for s in sessions]
        began = time.perf_counter()
        async with load_generators(stack, targets, tmp_path) as gens:
            await wait_all(gens, "all connected", lambda g, st: st["connected"] == g.clients,
                           300, stack)  # fmt: skip
            connect_s = time.perf_counter() - began
            assert await stream_clients(stack) == CLIENTS
            connected_rss = rss_mb(gw_pid)
            async with Bus.connect(bench_env.bus_settings(), name="bench-worker") as bus:
                t0 = time.perf_counter()
                for k, s in enumerate(sessions):
                    await publish_line(bus, s, "first", k)
                publish_s = time.perf_counter() - t0
                statuses = await wait_all(
                    gens, "first line everywhere",
                    lambda g, st: st["received"].get("first", 0) == g.clients, 120, stack,
                )  # fmt: skip
            loaded_rss = rss_mb(gw_pid)
            reports = [await g.ask("report first") for g in gens]
            lat = latencies_of(reports, {s.sid: {k} for k, s in enumerate(sessions)})
            gen_rss = [st["rss_mb"] for st in statuses]
    print(
        f"\n[bench fan-out {CLIENTS} clients] {CLIENTS} SSE clients ({sessions_n} sessions x "
        f"{PER_SESSION}) on one gateway process, {PROCESSES} load-generator processes; all "
        f"connected in {connect_s:.1f} s; gateway RSS before {idle_rss:.0f} MB, with {CLIENTS} "
        f"idle clients {verdict(connected_rss, 600)} MB, after every client received its "
        f"first line {loaded_rss:.0f} MB -> {(loaded_rss - idle_rss) * 1024 / CLIENTS:.1f} KB "
        f"per client; load generators {', '.join(f'{r:.0f}' for r in gen_rss)} MB.\n"
        f"  first line ({sessions_n} lines published in {publish_s:.2f} s, each to "
        f"{PER_SESSION} clients): delivery p50 {percentile(lat, 50):.1f} ms, "
        f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms (n={len(lat)}); "
        f"every client received its line exactly once"
    )


@pytest.mark.timeout(900)
async def test_bench_publish_to_receipt_latency_at_1000_clients(
    bench_env: BenchEnv, tmp_path: Path
) -> None:
    sessions_n = LATENCY_CLIENTS // PER_SESSION
    async with run_services(bench_env, tmp_path) as stack:
        sessions = await make_sessions(stack, sessions_n)
        async with Bus.connect(bench_env.bus_settings(), name="bench-worker") as bus:
            # (1) spread: 10 clients on each of 100 sessions; lines to the sessions in turn.
            targets = [(s.sid, s.cursor, PER_SESSION) for s in sessions]
            async with load_generators(stack, targets, tmp_path) as gens:
                await wait_all(gens, "all connected",
                               lambda g, st: st["connected"] == g.clients, 300, stack)  # fmt: skip
                assert await stream_clients(stack) == LATENCY_CLIENTS
                expected: dict[str, set[int]] = {s.sid: set() for s in sessions}
                # what the gateway spends holding the clients with nothing to send
                idle0 = await phase_cpu(stack, gens)
                await asyncio.sleep(IDLE_WINDOW_S)  # a measuring window, not a wait
                idle1 = await phase_cpu(stack, gens)
                idle_ms_s = (idle1[0] - idle0[0]) * 1e3 / IDLE_WINDOW_S
                cpu0 = await phase_cpu(stack, gens)
                next_at = time.perf_counter()
                with sampled(stack.gateway().pid, "gateway-spread"):
                    for k in range(SPREAD_EVENTS):
                        s = sessions[k % sessions_n]
                        await publish_line(bus, s, "spread", k)
                        expected[s.sid].add(k)
                        next_at += SPREAD_INTERVAL_S
                        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                per_client = SPREAD_EVENTS // sessions_n
                await wait_all(
                    gens, "every spread line",
                    lambda g, st: st["received"].get("spread", 0) == g.clients * per_client,
                    120, stack,
                )  # fmt: skip
                cpu1 = await phase_cpu(stack, gens)
                frames = LATENCY_CLIENTS // sessions_n * SPREAD_EVENTS
                spread_cpu = cpu_per_frame(cpu0, cpu1, frames)
                net = (cpu1[0] - cpu0[0]
                       - idle_ms_s / 1e3 * SPREAD_EVENTS * SPREAD_INTERVAL_S) * 1e6 / frames
                spread = latencies_of([await g.ask("report spread") for g in gens], expected)
                rss_spread = rss_mb(stack.gateway().pid)
            await wait_gone(stack)

            # (2) broadcast: all 1,000 clients on one session; every line to all of them.
            broadcast, broadcast_cpu = await broadcast_phase(stack, bus, sessions[0], tmp_path)
    both = spread + broadcast
    lines = [
        f"\n[bench fan-out latency] worker publish -> SSE client receipt, {LATENCY_CLIENTS} "
        f"clients connected to one gateway process (gateway RSS {rss_spread:.0f} MB)",
        f"  spread: {SPREAD_EVENTS} lines at {1 / SPREAD_INTERVAL_S:.0f}/s over {sessions_n} "
        f"sessions x {PER_SESSION} clients: p50 {verdict(percentile(spread, 50), 5)} ms, "
        f"p99 {verdict(percentile(spread, 99), 25)} ms, max {max(spread):.1f} ms "
        f"(n={len(spread)}); CPU per delivered frame: {spread_cpu}; the gateway idle with "
        f"{LATENCY_CLIENTS} clients: {idle_ms_s:.1f} ms CPU/s, so per frame net of it "
        f"{net:.1f} µs",
        f"  broadcast: {BROADCAST_EVENTS} lines at {1 / BROADCAST_INTERVAL_S:.0f}/s to one "
        f"session watched by all {LATENCY_CLIENTS} clients: "
        f"p50 {verdict(percentile(broadcast, 50), 5)} ms, "
        f"p99 {verdict(percentile(broadcast, 99), 25)} ms, max {max(broadcast):.1f} ms "
        f"(n={len(broadcast)}); CPU per delivered frame: {broadcast_cpu}",
        f"  all receipts: p50 {percentile(both, 50):.1f} ms, p99 {percentile(both, 99):.1f} ms; "
        f"every client received every line meant for it, exactly once, in order",
    ]
    print("\n".join(lines))


async def broadcast_phase(
    stack: Running, bus: Bus, target: Session, log_dir: Path, *, check_clients: bool = True
) -> tuple[list[float], str]:
    """All LATENCY_CLIENTS clients on one session, every line to all of them: receipt
    latencies (ms) and the CPU per delivered frame."""
    cursor = await bus.last_seq()
    per_gen = LATENCY_CLIENTS // PROCESSES
    async with load_generators(
        stack, [(target.sid, cursor, per_gen) for _ in range(PROCESSES)], log_dir
    ) as gens:
        await wait_all(gens, "all connected",
                       lambda g, st: st["connected"] == g.clients, 300, stack)  # fmt: skip
        if check_clients:  # (with several workers, /api/stats speaks for one of them)
            assert await stream_clients(stack) == LATENCY_CLIENTS
        cpu0 = await phase_cpu(stack, gens)
        next_at = time.perf_counter()
        with sampled(stack.gateway().pid, "gateway-broadcast"):
            for k in range(BROADCAST_EVENTS):
                await publish_line(bus, target, "broadcast", k)
                next_at += BROADCAST_INTERVAL_S
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await wait_all(
            gens, "every broadcast line",
            lambda g, st: st["received"].get("broadcast", 0) == g.clients * BROADCAST_EVENTS,
            120, stack,
        )  # fmt: skip
        cpu = cpu_per_frame(cpu0, await phase_cpu(stack, gens), LATENCY_CLIENTS * BROADCAST_EVENTS)
        reports = [await g.ask("report broadcast") for g in gens]
    if os.environ.get("BENCH_FANOUT_DEBUG"):  # per line: min, p50, max over the clients
        by_k: dict[int, list[float]] = {}
        for report in reports:
            for _, items in report["clients"]:
                for k, lat in items:
                    by_k.setdefault(k, []).append(lat / 1e6)
        print({k: (round(min(v), 1), round(percentile(v, 50), 1), round(max(v), 1))
               for k, v in sorted(by_k.items())})  # fmt: skip
    return latencies_of(reports, {target.sid: set(range(BROADCAST_EVENTS))}), cpu


GATEWAY_WORKERS = int(os.environ.get("BENCH_FANOUT_GATEWAY_WORKERS", "2"))


@pytest.mark.timeout(900)
async def test_bench_broadcast_with_gateway_workers(bench_env: BenchEnv, tmp_path: Path) -> None:
    """The broadcast again, the gateway as GATEWAY_WORKERS processes on one port."""
    workers = {"RUNSTREAM_GATEWAY_WORKERS": str(GATEWAY_WORKERS)}
    async with (
        run_services(bench_env, tmp_path, gateway=workers) as stack,
        Bus.connect(bench_env.bus_settings(), name="bench-worker") as bus,
    ):
        [target] = await make_sessions(stack, 1)
        broadcast, cpu = await broadcast_phase(stack, bus, target, tmp_path, check_clients=False)
    print(
        f"\n[bench fan-out workers] broadcast with the gateway as {GATEWAY_WORKERS} worker "
        f"processes on one port (SO_REUSEPORT): {BROADCAST_EVENTS} lines at "
        f"{1 / BROADCAST_INTERVAL_S:.0f}/s to {LATENCY_CLIENTS} clients of one session: "
        f"p50 {verdict(percentile(broadcast, 50), 5)} ms, "
        f"p99 {verdict(percentile(broadcast, 99), 25)} ms, max {max(broadcast):.1f} ms "
        f"(n={len(broadcast)}); CPU per delivered frame (all workers): {cpu}"
    )


async def phase_cpu(stack: Running, gens: list[LoadGenerator]) -> tuple[float, ...]:
    """CPU seconds used so far: the gateway's (exact, from its CPU clock; and user,
    system as /proc counts them in 10 ms ticks), the load generators'."""
    pid = stack.gateway().pid
    splits = [cpu_split(p) for p in with_children(pid)]
    return (tree_cpu_s(pid), sum(u for u, _ in splits),
            sum(s for _, s in splits), sum([(await g.ask("status"))["cpu_s"] for g in gens]))


def cpu_per_frame(before: tuple[float, ...], after: tuple[float, ...], frames: int) -> str:
    total, user, system, clients = (
        (a - b) * 1e6 / frames for a, b in zip(after, before, strict=True))
    return (f"gateway {total:.1f} µs (user {user:.1f}, system {system:.1f} in ticks), "
            f"load generators {clients:.1f} µs")


async def wait_gone(stack: Running, timeout: float = 60) -> None:
    """The gateway has let go of every client of the previous round."""
    deadline = time.monotonic() + timeout
    while (left := await stream_clients(stack)) > 0:
        assert time.monotonic() < deadline, f"{left} stream clients still registered"
        await asyncio.sleep(0.1)
