"""What the fault suites share: services as killable processes, a burst of analyses
through the HTTP API, and the invariants every run must end with.

The invariants (counted by `measure`, asserted by `verify` after every fault, in
`make test` and `make chaos`):
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
from runstream.store import checkpoint_name
from services.projector.tests.unit.projector_helpers import dump
from tests.integration.pipeline_support import sales_csv
from tests.stack import TEST_PARTITIONS

# The projector's position in the event stream: its checkpoint, or with P partitions
# the least `source_seq` of them all (0 until every partition has a checkpoint).
POSITION_SQL = (
    "SELECT coalesce((SELECT seq FROM {table} WHERE name = 'projector'), 0)"
    if TEST_PARTITIONS <= 1 else
    "SELECT CASE WHEN count(*) = {p} THEN min(coalesce(source_seq, 0)) ELSE 0 END"
    " FROM {table} WHERE name IN ({names})"
)


def position_sql(table: str = "projection_checkpoints") -> str:
    names = ", ".join(f"'{checkpoint_name(TEST_PARTITIONS, k)}'" for k in range(TEST_PARTITIONS))
    return POSITION_SQL.format(table=table, p=TEST_PARTITIONS, names=names)

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
        "RUNSTREAM_PARTITIONS": str(TEST_PARTITIONS),
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
    """What a run left behind, counted (not assumed) before anything is asserted.

    - lost: submitted analyses the stream never recorded or never settled, rows a fresh
      rebuild of the stream has that the live read models lack (or hold differently),
      and events the projector refused as poison without a fold rule saying so;
    - duplicates: facts stored twice in the stream (settles, scripts, results, step
      starts/completions per attempt, log lines) or in the read models (log rows twice,
      rows the live read models have that a rebuild does not produce);
    - stuck: analyses requested in the stream (by anyone) never settled, and session
      locks still held (in the stream's session aggregates or in `session_locks`).
    """

    submitted: int
    completed: int
    lost: int
    duplicates: int
    stuck: int
    problems: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # settled status of `messages`

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicates == self.stuck == 0


async def _caught_up(pool: asyncpg.Pool, last_seq: int, timeout: float) -> int:
    """The projector's checkpoint once it reaches `last_seq` (or where it stopped)."""
    deadline = time.perf_counter() + timeout
    seq = 0
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            seq = await pool.fetchval(position_sql())
            if seq >= last_seq:
                return int(seq)
        if time.perf_counter() > deadline:
            return int(seq)
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


def _rows(table: list[dict[str, Any]]) -> Counter[str]:
    return Counter(repr(sorted(row.items())) for row in table)


async def measure(
    bus: Bus, database_url: str, messages: list[str], *, schema: str = "runstream",
    catch_up_s: float = 60.0,
) -> Verdict:
    """Count what the invariants forbid, after the projector has caught up with the
    stream as it is now; `messages` are the analyses the caller got a 202 for."""
    events = await stream_events(bus)
    last_seq = events[-1][0] if events else 0
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2,
                                     server_settings={"search_path": schema})
    assert pool is not None
    verify_schema = f"verify_{secrets.token_hex(4)}"
    problems: list[str] = []
    lost = duplicates = stuck = 0
    try:
        checkpoint = await _caught_up(pool, last_seq, catch_up_s)
        if checkpoint < last_seq:
            problems.append(f"the projector stopped at {checkpoint} of {last_seq}")

        # Every submitted analysis recorded and settled; every recorded one settled.
        settles = {e.message_id: e for _, e in events if isinstance(e, AnalysisSettled)}
        requested = {e.message_id for _, e in events if isinstance(e, AnalysisRequested)}
        unrecorded = [m for m in messages if m not in requested]
        unsettled = [m for m in messages if m not in settles]
        lost += len(unrecorded) + len(unsettled)
        if unrecorded:
            problems.append(f"{len(unrecorded)} accepted analyses not in the stream")
        if unsettled:
            problems.append(f"{len(unsettled)} submitted analyses never settled")
        pending = [m for m in requested if m not in settles]
        stuck += len(pending)
        if pending:
            problems.append(f"{len(pending)} analyses in the stream never settled")
        statuses: Counter[str] = Counter(
            str(settles[m].status) for m in messages if m in settles)

        # Nothing twice: in the stream, and in the read models.
        dupes = _stream_duplicates(events)
        if dupes:
            duplicates += sum(dupes.values())
            problems.append(f"recorded twice in the stream: {dict(list(dupes.items())[:5])}")
        row_dupes = int(await pool.fetchval(
            "SELECT count(*) - count(DISTINCT event_id) FROM message_logs"))
        if row_dupes:
            duplicates += row_dupes
            problems.append(f"{row_dupes} log rows stored twice")

        # No lock held: the last session event of every session carries none.
        last_lock: dict[str, Any] = {}
        for _, e in events:
            if isinstance(e, SessionEvent):
                last_lock[e.session_id] = e.lock
        held = [sid for sid, lock in last_lock.items() if lock is not None]
        lock_rows = int(await pool.fetchval("SELECT count(*) FROM session_locks"))
        stuck += len(held) + lock_rows
        if held or lock_rows:
            problems.append(f"locks held: {len(held)} in the stream, {lock_rows} rows")

        # Only the poison the fold rules expect (late logs of a cancelled or re-run step).
        poison = await pool.fetch(
            "SELECT seq, error FROM poison_events WHERE error NOT LIKE 'late log:%' "
            "AND error NOT LIKE 'stale log:%'")
        if poison:
            lost += len(poison)
            problems.append(f"poison: {[dict(r) for r in poison[:5]]}")

        # The read models equal a fresh rebuild of the stream, row for row.
        live = await dump(pool, schema)
        await rebuild_from(database_url, bus.js, bus.stream, bus.subjects.all,
                           schema=verify_schema, partitions=TEST_PARTITIONS,
                           prefix=bus.settings.prefix)
        rebuilt = await dump(pool, verify_schema)
        for table in live:
            have, want = _rows(live[table]), _rows(rebuilt[table])
            missing, extra = sum((want - have).values()), sum((have - want).values())
            lost += missing
            duplicates += extra
            if missing or extra:
                problems.append(f"{table}: {missing} rows of a rebuild missing, "
                                f"{extra} rows a rebuild does not have")
        return Verdict(submitted=len(messages), completed=statuses["completed"], lost=lost,
                       duplicates=duplicates, stuck=stuck, problems=problems,
                       statuses=statuses)
    finally:
        with contextlib.suppress(Exception):
            await pool.execute(f'DROP SCHEMA IF EXISTS "{verify_schema}" CASCADE')
        await pool.close()


async def verify(
    bus: Bus, database_url: str, messages: list[str], *, schema: str = "runstream",
    expect: str = "completed", catch_up_s: float = 60.0,
) -> Verdict:
    """Assert every invariant (nothing lost, twice or stuck; all `expect`ed to complete
    did); returns the figures for a report."""
    verdict = await measure(bus, database_url, messages, schema=schema, catch_up_s=catch_up_s)
    assert verdict.clean, verdict.problems
    if expect == "completed":
        assert verdict.completed == verdict.submitted, (
            f"{verdict.submitted - verdict.completed} of {verdict.submitted} not completed: "
            f"{verdict.statuses}")
    return verdict


def bus_settings(settings: Any) -> BusSettings:
    return BusSettings(url=settings.nats_url, stream=settings.stream, prefix=settings.prefix,
                       datasets_bucket=settings.datasets_bucket)
