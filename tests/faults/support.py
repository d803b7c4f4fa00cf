"""What the fault suites share: services as killable processes, a burst of analyses
through the HTTP API, and the invariants every run must end with.

The invariants (asserted after every fault, by `make test` and `make chaos`):
- every submitted analysis settled, exactly once, `completed`;
- the read models equal a fresh rebuild of the stream, row for row;
- no log line, step or terminal event twice (in the stream and in the read models);
- no lock left held (in the stream's session aggregates and in `session_locks`);
- no poison row other than the ones the fold rules expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from runstream.bus import Bus, BusSettings, OrderedReader
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    DecodeError,
    ExecutionCompleted,
    LogAppended,
    ScriptGenerated,
    SessionEvent,
    StepCompleted,
    StepStarted,
    decode,
)
from runstream.projector.rebuild import rebuild_from
from runstream.store import PROJECTOR
from services.projector.tests.unit.projector_helpers import dump
from tests.integration.pipeline_support import sales_csv

QUESTION = "average revenue by region"


# --- services as processes ----------------------------------------------------------------


@dataclass
class Services:
    """Runstream services as child processes (`python -m runstream.<module>`), so a test
    can `kill -9` one and start it again."""

    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, module: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"runstream.{module}"],
            env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def service_env(settings: Any, database_url: str) -> dict[str, str]:
    """The environment of a stack's services, from its gateway settings."""
    return {
        **os.environ,
        "RUNSTREAM_NATS_URL": settings.nats_url, "RUNSTREAM_STREAM": settings.stream,
        "RUNSTREAM_PREFIX": settings.prefix, "RUNSTREAM_DATASETS_BUCKET": settings.datasets_bucket,
        "RUNSTREAM_DATABASE_URL": database_url, "RUNSTREAM_LOG_JSON": "true",
    }


# --- load --------------------------------------------------------------------------------


@dataclass
class Burst:
    sessions: list[str]
    messages: list[str]  # analysis message ids, in submit order
    submitted_at: float


async def open_sessions(client: httpx.AsyncClient, n: int) -> list[str]:
    """`n` sessions, each with the sales CSV uploaded (as a user would, over HTTP)."""
    data = sales_csv()

    async def one(i: int) -> str:
        r = await client.post("/api/sessions", json={"title": f"burst {i}"})
        assert r.status_code == 201, r.text
        sid = str(r.json()["session_id"])
        up = await client.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"},
                               content=data)
        assert up.status_code == 201, up.text
        return sid

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def submit(client: httpx.AsyncClient, sid: str, question: str = QUESTION) -> str:
    """One analysis; retried while the gateway answers 503 (a dependency restarting)."""
    for _ in range(200):
        r = await client.post(f"/api/sessions/{sid}/analyses", json={"question": question})
        if r.status_code == 202:
            return str(r.json()["message_id"])
        assert r.status_code == 503, r.text
        await asyncio.sleep(float(r.headers.get("Retry-After", "0.2")))
    raise AssertionError("the gateway stayed unavailable")


async def burst(client: httpx.AsyncClient, sessions: list[str]) -> Burst:
    """One analysis on every session at once."""
    started = time.perf_counter()
    mids = await asyncio.gather(*(submit(client, sid) for sid in sessions))
    return Burst(sessions=sessions, messages=list(mids), submitted_at=started)


# --- reading the stream ------------------------------------------------------------------


async def stream_events(bus: Bus) -> list[tuple[int, Any]]:
    """Every event of the stream, in order (undecodable ones left out)."""
    reader = OrderedReader(bus.js, bus.stream, bus.subjects.all, batch=1000,
                           fetch_timeout_s=0.5, name_prefix="verify")
    out: list[tuple[int, Any]] = []
    await reader.start(0)
    try:
        while batch := await reader.read_to_end():
            for entry in batch:
                with contextlib.suppress(DecodeError):
                    out.append((entry.seq, decode(entry.data)))
    finally:
        await reader.close()
    return out


async def wait_settled(bus: Bus, messages: list[str], timeout: float) -> float:
    """Seconds until every message has its `analysis_settled` in the stream (not Postgres:
    this holds while Postgres is down)."""
    started = time.perf_counter()
    wanted = set(messages)
    deadline = started + timeout
    while True:
        settled = {e.message_id for _, e in await stream_events(bus)
                   if isinstance(e, AnalysisSettled)}
        if wanted <= settled:
            return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(wanted - settled)} of {len(wanted)} analyses "
                               f"not settled within {timeout}s")
        await asyncio.sleep(0.5)


# --- the invariants ----------------------------------------------------------------------


@dataclass
class Verdict:
    submitted: int
    completed: int
    lost_events: int  # events in the stream the read models do not reflect
    duplicates: int  # terminal events, steps or log lines stored twice
    stuck: int  # analyses not settled, or locks still held


async def _caught_up(pool: asyncpg.Pool, last_seq: int, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            seq = await pool.fetchval(
                "SELECT coalesce((SELECT seq FROM projection_checkpoints WHERE name = $1), 0)",
                PROJECTOR)
            if seq >= last_seq:
                return
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the projector did not reach {last_seq} within {timeout}s")
        await asyncio.sleep(0.1)


def _stream_duplicates(events: list[tuple[int, Any]]) -> Counter[str]:
    """Facts recorded twice in the stream: one settle, one script, one result, one start
    and completion per step and attempt, one stored copy of each log line."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for _, e in events:
        match e:
            case AnalysisSettled():
                counts[("settled", e.message_id)] += 1
            case ScriptGenerated():
                counts[("script", e.message_id, e.attempt)] += 1
            case ExecutionCompleted():
                counts[("result", e.message_id, e.attempt)] += 1
            case StepStarted():
                counts[("step_started", e.message_id, e.attempt, e.step)] += 1
            case StepCompleted():
                counts[("step_completed", e.message_id, e.attempt, e.step)] += 1
            case LogAppended():
                counts[("log", e.event_id)] += 1
            case _:
                pass
    return Counter({str(k): n - 1 for k, n in counts.items() if n > 1})


async def verify(
    bus: Bus, database_url: str, messages: list[str], *, schema: str = "runstream",
    expect: str = "completed", catch_up_s: float = 60.0,
) -> Verdict:
    """Assert every invariant; returns the figures for a report."""
    events = await stream_events(bus)
    last_seq = events[-1][0] if events else 0
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2,
                                     server_settings={"search_path": schema})
    assert pool is not None
    verify_schema = f"verify_{secrets.token_hex(4)}"
    try:
        await _caught_up(pool, last_seq, catch_up_s)

        # Every analysis settled exactly once, as expected.
        settles = Counter(e.message_id for _, e in events if isinstance(e, AnalysisSettled))
        status = {r["message_id"]: r["status"] for r in await pool.fetch(
            "SELECT message_id, status FROM messages WHERE message_id = any($1)", messages)}
        not_settled = [m for m in messages if settles[m] == 0]
        assert not not_settled, f"{len(not_settled)} analyses never settled"
        completed = sum(1 for m in messages if status.get(m) == "completed")
        assert completed == len(messages) or expect != "completed", Counter(status.values())

        # Nothing twice: in the stream, and in the read models.
        dupes = _stream_duplicates(events)
        assert not dupes, f"recorded twice in the stream: {dict(list(dupes.items())[:5])}"
        row_dupes = await pool.fetchval(
            "SELECT count(*) - count(DISTINCT event_id) FROM message_logs")
        assert row_dupes == 0, f"{row_dupes} log rows stored twice"

        # No lock held: the last session event of every session carries none.
        last_lock: dict[str, Any] = {}
        for _, e in events:
            if isinstance(e, SessionEvent):
                last_lock[e.session_id] = e.lock
        held = {sid: lock for sid, lock in last_lock.items() if lock is not None}
        assert not held, f"{len(held)} session locks still held in the stream"
        assert await pool.fetchval("SELECT count(*) FROM session_locks") == 0

        # Only the poison the fold rules expect (late logs of a cancelled or re-run step).
        poison = await pool.fetch(
            "SELECT seq, error FROM poison_events WHERE error NOT LIKE 'late log:%' "
            "AND error NOT LIKE 'stale log:%'")
        assert not poison, [dict(r) for r in poison[:5]]

        # The read models equal a fresh rebuild of the stream, row for row.
        live = await dump(pool, schema)
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all,
                           schema=verify_schema)
        rebuilt = await dump(pool, verify_schema)
        differing = [t for t in live if live[t] != rebuilt[t]]
        assert not differing, f"read models differ from a rebuild in {differing}"
        requested = sum(1 for _, e in events if isinstance(e, AnalysisRequested))
        assert requested >= len(messages)
        return Verdict(submitted=len(messages), completed=completed, lost_events=0,
                       duplicates=0, stuck=0)
    finally:
        with contextlib.suppress(Exception):
            await pool.execute(f'DROP SCHEMA IF EXISTS "{verify_schema}" CASCADE')
        await pool.close()


def bus_settings(settings: Any) -> BusSettings:
    return BusSettings(url=settings.nats_url, stream=settings.stream, prefix=settings.prefix,
                       datasets_bucket=settings.datasets_bucket)
