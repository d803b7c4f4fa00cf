"""The chaos suite's machinery: session clients driving the HTTP API, a tracker that
follows the stream, fault drivers, and the recovery clock.

Recovery (`recover_s`) is measured from the instant a fault is injected until all of:
1. every analysis that was in the victim's hands at that instant has settled (stream):
   for a worker, the analyses in its stage (analysis: requested, no script yet;
   execution: script, no result; chart: result, not settled); for the sandbox child,
   the analysis whose query it ran; for NATS, every unsettled analysis; the gateway, the
   projector and Postgres hold no analysis, so none;
2. the projector's checkpoint has reached the stream's last sequence at the fault (the
   read models hold everything that existed when the fault hit);
3. the gateway answers `/readyz` 200 (NATS and Postgres reachable through it).
It therefore includes the restart of the victim, JetStream's redelivery after
`ack_wait`, and the work itself (a redelivered query runs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from runstream.bus import Bus, OrderedReader
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    DecodeError,
    MessageEvent,
    StepStarted,
    decode,
    type_of,
)
from runstream.testing import NatsCluster, NatsServer, PostgresCluster, wait_until
from runstream.testing.procs import live_children as children
from tests.faults.support import Services, measure
from tests.integration.conftest import sse_frames

QUESTION = "average revenue by region"
SLOW = " (take your time)"
FAST_SQL = "SELECT region, avg(revenue) AS avg_revenue FROM data GROUP BY region ORDER BY region"
# About 1-2 s of one core: long enough to kill a worker or its sandbox mid-query.
SLOW_SQL = (
    "SELECT region, avg(revenue) AS avg_revenue, "
    "(SELECT count(*) FROM range(11000) a, range(11000) b "
    " WHERE (a.range * 7 + b.range) % 13 = 5) AS pairs "
    "FROM data GROUP BY region ORDER BY region"
)
TERMINAL = {"completed", "failed", "cancelled", "expired"}
MOMENT_S = 60.0  # how long a driver may wait for its moment (work in the victim's hands)
RECOVER_S = 90.0  # a fault not recovered from within this is reported as such
SETTLE_S = 180.0  # every analysis of a phase settled within this


def sql_for(question: str) -> str:
    """The fake planner's answer: a slow query for the questions that ask for one."""
    return SLOW_SQL if question.endswith(SLOW) else FAST_SQL


# --- following the stream ----------------------------------------------------------------


@dataclass
class Progress:
    session_id: str
    seen: set[str] = field(default_factory=set)  # event types; `step_started:<step>`
    settled: str | None = None
    settled_at: float | None = None  # monotonic, when the tracker read the settle


class Tracker:
    """Reads the stream in order, for ever (a new reader at its position after any
    failure), and keeps each analysis's progress with the time it was seen."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.position = 0
        self.analyses: dict[str, Progress] = {}

    async def run(self, stop: asyncio.Event) -> None:
        reader = OrderedReader(self.bus.js, self.bus.stream, self.bus.subjects.all,
                               batch=1000, fetch_timeout_s=0.2, name_prefix="chaos_tracker")
        try:
            while not stop.is_set():
                try:
                    await reader.start(self.position)
                    while not stop.is_set():
                        for entry in await reader.next_batch():
                            self._fold(entry.data)
                        self.position = reader.position
                except asyncio.CancelledError:
                    raise
                except Exception:  # NATS away, a node down: start again at the position
                    await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await reader.close()

    def _fold(self, data: bytes) -> None:
        try:
            event = decode(data)
        except DecodeError:
            return
        match event:
            case AnalysisRequested():
                self.analyses.setdefault(event.message_id, Progress(event.session_id))
            case AnalysisSettled():
                p = self.analyses.get(event.message_id)
                if p is not None and p.settled is None:
                    p.settled, p.settled_at = event.status, time.monotonic()
            case StepStarted():
                if (p := self.analyses.get(event.message_id)) is not None:
                    p.seen.add(f"step_started:{event.step}")
            case MessageEvent():
                if (p := self.analyses.get(event.message_id)) is not None:
                    p.seen.add(type_of(event))
            case _:
                pass

    def unsettled(self, stage: Callable[[Progress], bool] = lambda p: True) -> set[str]:
        return {m for m, p in self.analyses.items() if p.settled is None and stage(p)}


def in_analysis(p: Progress) -> bool:
    return "script_generated" not in p.seen


def in_execution(p: Progress) -> bool:
    return "script_generated" in p.seen and not {"execution_completed",
                                                 "execution_failed"} & p.seen


def in_chart(p: Progress) -> bool:
    return "execution_completed" in p.seen


# --- the load: one client per session ----------------------------------------------------


class Backoff:
    """A client's pause between retries: 0.2 s doubling to 2 s (or what Retry-After
    says, up to 2 s), so 50 clients do not hammer a gateway that is starting."""

    def __init__(self) -> None:
        self.next = 0.2

    async def __call__(self, retry_after: float = 0.0) -> None:
        await asyncio.sleep(min(2.0, max(retry_after, self.next)))
        self.next = min(2.0, self.next * 2)


@dataclass
class Accepted:
    message_id: str
    session_id: str
    phase: int
    slow: bool


class Load:
    """A client per session: take a ticket (phase, slow?), submit, wait for the settle
    over SSE (resuming after any break), then the next. A client retries while the
    gateway is away (connection refused, 5xx, Retry-After); when an answer was lost and a
    retry finds the session locked, the holder is its own earlier submit (nobody else
    uses the session), which it adopts."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.token = token
        self.tickets: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        self.accepted: list[Accepted] = []
        self.settled: Counter[int] = Counter()  # per phase, as the clients saw them
        self.retries: Counter[str] = Counter()  # why submits were retried
        self.fallbacks = 0  # settles learnt from GET after an SSE stream broke
        self.ended_early = 0  # SSE streams that ended cleanly before the settle frame
        self._releases: set[asyncio.Task[None]] = set()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(15.0, read=30.0),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=0))

    def release(self, phase: int, n: int, slow: int = 0, spread_s: float = 3.0) -> None:
        """Hand out `n` tickets (the slow ones first) over `spread_s`: submits arrive over
        a few seconds, as users' do, so a fault lands among them, not after them."""
        async def hand_out() -> None:
            for i in range(n):
                self.tickets.put_nowait((phase, i < slow))
                await asyncio.sleep(spread_s / n)

        self._releases.add(task := asyncio.create_task(hand_out()))
        task.add_done_callback(self._releases.discard)

    def of(self, phase: int) -> list[Accepted]:
        return [a for a in self.accepted if a.phase == phase]

    async def session(self, session_id: str, analyses: int) -> None:
        async with self.client() as c:
            for _ in range(analyses):
                phase, slow = await self.tickets.get()
                mid = await self._submit(c, session_id, QUESTION + (SLOW if slow else ""))
                self.accepted.append(Accepted(mid, session_id, phase, slow))
                await self._settled(c, mid)
                self.settled[phase] += 1

    async def _submit(self, c: httpx.AsyncClient, sid: str, question: str) -> str:
        maybe_sent = False
        deadline = time.monotonic() + SETTLE_S
        pause = Backoff()
        while time.monotonic() < deadline:
            try:
                r = await c.post(f"/api/sessions/{sid}/analyses", json={"question": question})
            except httpx.ConnectError:
                self.retries["connection refused"] += 1
                await pause()
                continue
            except httpx.TransportError:  # sent; the answer was lost
                maybe_sent = True
                self.retries["answer lost"] += 1
                await pause()
                continue
            if r.status_code == 202:
                return str(r.json()["message_id"])
            if r.status_code == 409 and maybe_sent and r.json().get("active_message_id"):
                self.retries["adopted own submit"] += 1
                return str(r.json()["active_message_id"])
            if r.status_code >= 500:  # a dependency away; NATS may have stored it anyway
                maybe_sent = True
                self.retries[f"http {r.status_code}"] += 1
                await pause(float(r.headers.get("Retry-After", "0")))
                continue
            raise AssertionError(f"submit answered {r.status_code}: {r.text}")
        raise AssertionError(f"session {sid}: the gateway refused submits for {SETTLE_S}s")

    async def _settled(self, c: httpx.AsyncClient, mid: str) -> str:
        after = 0
        deadline = time.monotonic() + SETTLE_S
        pause = Backoff()
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError, httpx.StreamError, TimeoutError,
                                     json.JSONDecodeError):
                async with asyncio.timeout(20), c.stream(
                        "GET", f"/api/messages/{mid}/events",
                        params={"after_seq": after}) as r:
                    if r.status_code == 200:
                        async for frame in sse_frames(r):
                            after = frame.id or after
                            if frame.event == "analysis_settled":
                                return str(frame.data["status"])
                        self.ended_early += 1
            # The stream ended or broke before the settle: ask the read model.
            with contextlib.suppress(httpx.TransportError, json.JSONDecodeError):
                r = await c.get(f"/api/messages/{mid}")
                if r.status_code == 200 and r.json().get("status") in TERMINAL:
                    self.fallbacks += 1
                    return str(r.json()["status"])
            await pause()
        raise AssertionError(f"{mid} did not settle within {SETTLE_S}s")


# --- the stack under test ----------------------------------------------------------------


@dataclass
class Mark:
    """The instant a fault hit: time, the stream's last sequence, the analyses in the
    victim's hands."""

    t0: float
    last_seq: int
    in_hand: set[str]


@dataclass
class Row:
    fault: str
    completed: int
    submitted: int
    lost: int
    duplicates: int
    stuck: int
    recover_s: float | None
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicates == self.stuck == 0 and self.recover_s is not None


@dataclass
class Chaos:
    services: Services
    bus: Bus
    tracker: Tracker
    load: Load
    dsn: str
    gateway_url: str
    nats: NatsServer | NatsCluster
    postgres: PostgresCluster | None = None
    stream_replicas: int = 1
    clients: list[asyncio.Task[None]] = field(default_factory=list)
    parts: list[float] = field(default_factory=list)  # last recovery: settled, folded, ready
    fault_at: str = ""  # wall clock of the last fault, to find it in the services' logs

    # --- probes --------------------------------------------------------------------
    async def checkpoint(self) -> int | None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=1.0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        try:
            return int(await conn.fetchval(
                "SELECT coalesce((SELECT seq FROM runstream.projection_checkpoints), 0)"))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(base_url=self.gateway_url, timeout=3) as c:
                return (await c.get("/readyz")).status_code == 200
        return False

    async def last_seq(self) -> int:
        """The stream's last sequence, asked again while the stream elects a leader."""
        async def ask() -> int:
            with contextlib.suppress(Exception):
                return await asyncio.wait_for(self.bus.last_seq(), 2)
            return 0
        return await wait_until(ask, timeout=RECOVER_S, interval=0.2)

    async def moment(self, probe: Callable[[], bool | Awaitable[bool]], what: str) -> None:
        """Wait for the fault's moment (work in the victim's hands)."""
        async def check() -> bool:
            got = probe()
            return bool(await got if isinstance(got, Awaitable) else got)
        try:
            await wait_until(check, timeout=MOMENT_S, interval=0.02)
        except TimeoutError:
            raise AssertionError(f"no moment to inject the fault: {what}") from None

    async def mark(self, stage: Callable[[Progress], bool] | None) -> Mark:
        last = await self.last_seq()
        in_hand = self.tracker.unsettled(stage) if stage is not None else set()
        return Mark(t0=time.monotonic(), last_seq=last, in_hand=in_hand)

    async def recovery(self, mark: Mark) -> float | None:
        """Seconds from the fault until it is healed (the module docstring defines it)."""
        tracker = self.tracker

        async def settled() -> float:
            await until(lambda: all(tracker.analyses[m].settled for m in mark.in_hand),
                        timeout=RECOVER_S)
            return max((tracker.analyses[m].settled_at or 0.0 for m in mark.in_hand),
                       default=mark.t0)

        async def caught_up() -> float:
            async def past() -> bool:
                return (await self.checkpoint() or 0) >= mark.last_seq
            await wait_until(past, timeout=RECOVER_S, interval=0.05)
            return time.monotonic()

        async def ready() -> float:
            await wait_until(self.ready, timeout=RECOVER_S, interval=0.05)
            return time.monotonic()

        try:
            times = await asyncio.gather(settled(), caught_up(), ready())
        except TimeoutError:
            return None
        self.parts = [round(t - mark.t0, 1) for t in times]  # for the progress line
        return max(times) - mark.t0

    async def grown(self, seq: int, by: int, timeout: float) -> None:
        """Hold a dependency down until the stream has grown by `by` (work went on
        without it), or `timeout` at most."""
        with contextlib.suppress(TimeoutError):
            await until(lambda: self.tracker.position >= seq + by, timeout=timeout)

    # --- one phase ----------------------------------------------------------------------
    async def phase(self, index: int, name: str, fault: Fault, *, n: int,
                    slow: int = 0) -> Row:
        self.load.release(index, n, slow)
        problems: list[str] = []
        recover_s: float | None = None
        self.parts, self.fault_at = [], ""
        try:
            mark = await fault(self, index)
            self.fault_at = time.strftime("%H:%M:%S", time.gmtime(
                time.time() - (time.monotonic() - mark.t0)))
            recover_s = await self.recovery(mark)
        except (AssertionError, TimeoutError) as exc:  # no moment for it came: report it
            problems.append(f"{type(exc).__name__}: {exc}")

        async def all_settled() -> bool:
            return self.load.settled[index] >= n
        with contextlib.suppress(TimeoutError):
            await wait_until(all_settled, timeout=SETTLE_S, interval=0.1)
        verdict = await measure(self.bus, self.dsn, [a.message_id for a in self.load.of(index)],
                                catch_up_s=RECOVER_S)
        problems += verdict.problems
        if self.load.settled[index] < n:
            problems.append(f"only {self.load.settled[index]} of {n} settled as clients saw")
        if verdict.completed < n:
            problems.append(f"statuses: {dict(verdict.statuses)}")
        return Row(fault=name, completed=verdict.completed, submitted=n, lost=verdict.lost,
                   duplicates=verdict.duplicates, stuck=verdict.stuck, recover_s=recover_s,
                   problems=problems)


Fault = Callable[[Chaos, int], Awaitable[Mark]]


async def until(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> None:
    """Poll a plain predicate until it holds; TimeoutError at the deadline."""
    async def probe() -> bool:
        return pred()
    await wait_until(probe, timeout=timeout, interval=interval)


# --- the faults ---------------------------------------------------------------------------


def kill_service(name: str, stage: Callable[[Progress], bool] | None, *,
                 moment: Callable[[Progress], bool] | None = None, least: int = 1) -> Fault:
    """SIGKILL a service once at least `least` analyses are at its `moment` (default:
    in its stage and started) — or, for a service holding no analysis, while this
    phase's submits flow — and start it again at once, as a supervisor would."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        if stage is None:
            await chaos.moment(lambda: len(chaos.load.of(phase)) >= 8,
                               f"{name}: submits flowing")
        else:
            at = moment or (lambda p: stage(p) and bool(p.seen))
            await chaos.moment(lambda: len(chaos.tracker.unsettled(at)) >= least,
                               f"{name}: work in hand")
        if name == "projector":  # there is something it has not folded yet
            async def behind() -> bool:
                return (await chaos.checkpoint() or 0) < chaos.tracker.position
            await chaos.moment(behind, "projector: behind the stream")
        mark = await chaos.mark(stage)
        chaos.services.kill9(name)
        mark.t0 = time.monotonic()
        chaos.services.start(name, name)
        return mark

    return inject


def kill_execution_mid_query() -> Fault:
    """SIGKILL the execution worker while this phase's slow query runs."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        mid = await _slow_query_running(chaos, phase)
        mark = await chaos.mark(in_execution)
        assert mid in mark.in_hand
        chaos.services.kill9("execution_worker")
        mark.t0 = time.monotonic()
        chaos.services.start("execution_worker", "execution_worker")
        return mark

    return inject


def kill_sandbox_child() -> Fault:
    """SIGKILL the sandbox child running this phase's slow query: found among the
    execution worker's children in /proc (its pid is the one the worker logged for that
    message)."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        mid = await _slow_query_running(chaos, phase)
        worker = chaos.services.procs["execution_worker"].pid
        log = chaos.services.log_dir / "execution_worker.log"

        async def child() -> int | None:
            pid = _sandbox_pid(log, mid)
            return pid if pid is not None and pid in children(worker) else None

        pid = await wait_until(child, timeout=MOMENT_S, interval=0.02)
        assert pid is not None
        mark = await chaos.mark(None)
        mark.in_hand = {mid}
        os.kill(pid, signal.SIGKILL)
        mark.t0 = time.monotonic()
        return mark

    return inject


def restart_postgres() -> Fault:
    """Stop Postgres while analyses are in flight, keep it down while the workers go on
    (the stream grows by 100 events, 8 s at most), start it again."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        assert chaos.postgres is not None
        await chaos.moment(lambda: len(chaos.load.of(phase)) >= 10
                           and len(chaos.tracker.unsettled()) >= 5, "postgres: in flight")
        mark = await chaos.mark(None)
        await asyncio.to_thread(chaos.postgres.stop)
        await chaos.grown(chaos.tracker.position, 100, 8.0)
        await asyncio.to_thread(chaos.postgres.start)
        return mark

    return inject


def restart_nats() -> Fault:
    """Restart the (single) NATS server while analyses are in flight (same port and
    store): every service reconnects; in-memory consumers are gone."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        assert isinstance(chaos.nats, NatsServer)
        await chaos.moment(lambda: len(chaos.tracker.unsettled(
            lambda p: bool(p.seen))) >= 5, "nats: in flight")
        mark = await chaos.mark(lambda p: True)
        await asyncio.to_thread(chaos.nats.restart)
        return mark

    return inject


def kill_cluster_node(*, leader: bool) -> Fault:
    """SIGKILL one node of the NATS cluster — the stream's leader, or one that is not —
    while analyses are in flight; keep it down while the rest carry on (the stream grows
    by 100 events, 10 s at most), then start it again on the same store."""

    async def inject(chaos: Chaos, phase: int) -> Mark:
        cluster = chaos.nats
        assert isinstance(cluster, NatsCluster)
        await chaos.moment(lambda: len(chaos.tracker.unsettled(
            lambda p: bool(p.seen))) >= 5, "cluster: in flight")
        info = await chaos.bus.js.stream_info(chaos.bus.stream)
        assert info.cluster is not None and info.config.num_replicas == 3, info.cluster
        current = info.cluster.leader
        assert current is not None, "the stream has no leader"
        victim = current if leader else next(n for n in cluster.names if n != current)
        mark = await chaos.mark(lambda p: True)
        await asyncio.to_thread(cluster.kill9, victim)
        mark.t0 = time.monotonic()
        await chaos.grown(chaos.tracker.position, 100, 10.0)
        await asyncio.to_thread(cluster.start_node, victim)
        return mark

    return inject


async def _slow_query_running(chaos: Chaos, phase: int) -> str:
    """The message id of this phase's slow query, once its execution has started."""
    def slow() -> str | None:
        return next((a.message_id for a in chaos.load.of(phase) if a.slow), None)

    def running() -> bool:
        mid = slow()
        p = chaos.tracker.analyses.get(mid) if mid else None
        return p is not None and "execution_started" in p.seen and in_execution(p)

    await chaos.moment(running, "the slow query running")
    mid = slow()
    assert mid is not None
    return mid


SANDBOX_STARTED = "sandbox.started"  # what the execution worker logs, with pid and message


def _sandbox_pid(log: Path, message_id: str) -> int | None:
    """The pid the execution worker logged (`sandbox.started`) for this message, last."""
    pid = None
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if message_id not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                if entry["event"] == SANDBOX_STARTED and entry["message_id"] == message_id:
                    pid = int(entry["pid"])
    return pid


def table(rows: list[Row]) -> str:
    """The report: one line per fault."""
    width = max([5, *(len(r.fault) for r in rows)])
    head = (f"{'fault':<{width}}  {'completed/submitted':>19} {'lost':>5} {'dupes':>6} "
            f"{'stuck':>6} {'recover s':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        rec = f"{r.recover_s:.1f}" if r.recover_s is not None else "never"
        lines.append(f"{r.fault:<{width}}  {f'{r.completed}/{r.submitted}':>19} {r.lost:>5} "
                     f"{r.duplicates:>6} {r.stuck:>6} {rec:>10}")
    return "\n".join(lines)
