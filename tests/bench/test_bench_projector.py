"""Issue 10 figures: the read side against the bus, on one stream and machine.

- raw: a plain durable pull consumer fetching (256 at a time) and acking every message
  of the stream: the rate a Python consumer reaches without doing anything;
- fold: `python -m runstream.projector` subprocesses folding the same stream into a
  fresh schema, timed from their first committed batch to the last sequence;
- rebuild: `python -m runstream.projector rebuild` over a stream of about a million
  events, with its peak RSS;
- freshness: analyses published at a sustained rate, and how long an event takes to be
  visible to a `GET` with `min_seq` (gateway and projector as subprocesses).

Each run checks what it folded: every analysis completed with its result, every step
and log line, no poison row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from runstream.bus import Bus
from runstream.bus.partitions import provision_view, view_name
from runstream.contracts import AnalysisRequested, AnalysisSettled, SessionCreated, encode
from runstream.projector import writer as W
from runstream.projector.fold import Batch, Row
from runstream.projector.projector import session_settings
from runstream.projector.rebuild import wait_sourced
from runstream.store import open_store
from tests.bench.streams import (
    ANALYSES_PER_SESSION,
    STEPS,
    publish_analyses,
    sessions_of_analyses,
)
from tests.bench.support import BenchEnv, RawHttp, run_services, summary_ms

EVENTS_PER_ANALYSIS = 36
FOLD_ANALYSES = int(os.environ.get("BENCH_FOLD_ANALYSES", "1400"))  # ~50,000 events
REBUILD_ANALYSES = int(os.environ.get("BENCH_REBUILD_ANALYSES", "27750"))  # ~1,000,000


async def _fill(env: BenchEnv, analyses: int) -> tuple[int, float]:
    async with Bus.connect(env.bus_settings(), name="bench-publisher") as bus:
        await bus.provision()
        began = time.perf_counter()
        published = await publish_analyses(bus, analyses)
        seconds = time.perf_counter() - began
        assert await bus.last_seq() == published
    return published, seconds


async def _raw_rate(env: BenchEnv, last: int) -> float:
    """Fetch + ack the whole stream with a plain durable pull consumer."""
    nc = await nats.connect(env.nats_url)
    try:
        js = nc.jetstream()
        await js.add_consumer(env.stream, ConsumerConfig(
            durable_name="bench-raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000,
        ))  # fmt: skip
        sub = await js.pull_subscribe_bind("bench-raw", env.stream)
        seen = 0
        began = time.perf_counter()
        while seen < last:
            for msg in await sub.fetch(256, timeout=5):
                await msg.ack()
                seen += 1
        seconds = time.perf_counter() - began
        await js.delete_consumer(env.stream, "bench-raw")
    finally:
        await nc.close()
    return last / seconds


# Projector settings measured one at a time against the defaults.
KNOBS: dict[str, dict[str, object]] = {
    "default": {},
    "synchronous commit (async_commit=false)": {"async_commit": "false"},
    "no prefetch (prefetch=false)": {"prefetch": "false"},
    "fixed batches of 256 (batch_max=256)": {"batch_max": 256},
}


class Folders:
    """N projector processes on one schema; their first batch starts the clock."""

    def __init__(
        self, env: BenchEnv, schema: str, log_dir: Path, count: int = 1,
        knobs: dict[str, object] | None = None, partitions: int = 1,
    ) -> None:
        self.env, self.schema, self.count = env, schema, count
        self.partitions = partitions
        self.knobs = {**(knobs or {}), "partitions": partitions}
        self.logs = [log_dir / f"projector-{schema}-{i}.log" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        environ = self.env.environ(db_schema=self.schema, **self.knobs)
        for log in self.logs:
            with log.open("wb") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "runstream.projector"], env=environ, stdout=out,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)

    async def rate(self, last: int, timeout: float = 600, *, uniform: bool = False) -> float:
        """Events/s from the first committed batch to the last sequence. `uniform`:
        counted the partitioned way for any P (from the first batch of any partition,
        as if nothing were folded yet, until every partition covers the end)."""
        conn = await asyncpg.connect(self.env.database_url)
        try:
            first: tuple[float, int] | None = None
            deadline = time.monotonic() + timeout
            while True:
                for proc, log in zip(self.procs, self.logs, strict=True):
                    assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, f"not folded within {timeout} s"
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    if self.partitions <= 1 and not uniform:
                        seq = await conn.fetchval(
                            f"SELECT min(seq) FROM {self.schema}.projection_checkpoints"
                        )
                        now = time.perf_counter()
                        if seq and first is None:
                            first = (now, seq)
                        if seq and seq >= last and first is not None:
                            return (last - first[1]) / (now - first[0])
                    else:
                        # From the first committed batch of any partition (counted as
                        # nothing folded yet) until every partition covers the end.
                        started, least = await conn.fetchrow(
                            "SELECT max(coalesce(source_seq, seq)),"
                            " CASE WHEN count(*) = $1 THEN min(coalesce(source_seq, seq))"
                            f" ELSE 0 END FROM {self.schema}.projection_checkpoints",
                            self.partitions,
                        )
                        now = time.perf_counter()
                        if started and first is None:
                            first = (now, 0)
                        if least and least >= last and first is not None:
                            return last / (now - first[0])
                await asyncio.sleep(0.005)
        finally:
            await conn.close()


async def _check_folded(database_url: str, schema: str, analyses: int, events: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"SET search_path TO {schema}")
        completed = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'completed'"
            " AND result IS NOT NULL"
        )
        steps = await conn.fetchval("SELECT count(*) FROM message_steps WHERE status = 'completed'")
        logs = await conn.fetchval("SELECT count(*) FROM message_logs")
        poison = await conn.fetchval("SELECT count(*) FROM poison_events")
        idle = await conn.fetchval("SELECT count(*) FROM sessions WHERE status = 'idle'")
    finally:
        await conn.close()
    assert poison == 0
    assert completed == analyses
    assert steps == analyses * len(STEPS)
    assert logs == analyses * len(STEPS) * 2
    assert idle == -(-analyses // ANALYSES_PER_SESSION)
    assert events == analyses * EVENTS_PER_ANALYSIS + idle


@pytest.mark.timeout(1200)
async def test_bench_projector_fold_rate_against_a_raw_consumer(
    bench_env: BenchEnv, tmp_path: Path
) -> None:
    last, publish_s = await _fill(bench_env, FOLD_ANALYSES)
    raw = await _raw_rate(bench_env, last)
    rates: dict[str, float] = {}
    for label, knobs in KNOBS.items():
        schema = f"bench_fold_{len(rates)}"
        folders = Folders(bench_env, schema, tmp_path, knobs=knobs)
        folders.start()
        try:
            rates[label] = await folders.rate(last)
        finally:
            folders.stop()
        await _check_folded(bench_env.database_url, schema, FOLD_ANALYSES, last)
    fold = rates["default"]
    print(
        f"\n[bench projector] {last} events ({FOLD_ANALYSES} analyses) published in "
        f"{publish_s:.1f} s ({last / publish_s:.0f}/s, async acks)\n"
        f"  raw durable pull consumer, fetch 256 + ack each: {raw:.0f} events/s\n"
        f"  one projector process (batch fold): {fold:.0f} events/s\n"
        f"  ratio fold / raw: {fold / raw:.2f} (target >= 0.7)\n"
        f"  the knobs, one at a time (same stream, fresh schema each):"
    )
    for label, rate in rates.items():
        print(f"    {label:44s} {rate:7.0f} events/s  ({rate / fold:.2f} x default)")


PARTITIONS = (1, 2, 4)


@pytest.mark.timeout(1800)
async def test_bench_projector_fold_rate_by_partitions(
    bench_env: BenchEnv, tmp_path: Path
) -> None:
    """P partitions folded by P projector processes (one lease each), same stream. The
    view of each P is sourced before its projectors start (sourcing runs at the stream's
    rate in a live system), and leases renew every 0.3 s so the replicas settle on
    their shares at once: what is measured is the fold."""
    last, _ = await _fill(bench_env, FOLD_ANALYSES)
    rates: dict[int, float] = {}
    for partitions in PARTITIONS:
        if partitions > 1:
            async with Bus.connect(bench_env.bus_settings(), name="bench-view") as bus:
                await provision_view(bus.js, bus.stream, bus.settings.prefix, partitions)
                await wait_sourced(bus.js, bus.stream, view_name(bus.stream, partitions))
        schema = f"bench_parts_{partitions}"
        folders = Folders(bench_env, schema, tmp_path, count=partitions,
                          partitions=partitions, knobs={"lease_renew_s": 0.3})
        folders.start()
        try:
            rates[partitions] = await folders.rate(last, uniform=True)
        finally:
            folders.stop()
        await _check_folded(bench_env.database_url, schema, FOLD_ANALYSES, last)
    cores = os.cpu_count()
    print(f"\n[bench partitions] {last} events ({FOLD_ANALYSES} analyses), {cores} cores,"
          " from the first committed batch until every partition covers the end:")
    print(f"  {'partitions':>10s} {'processes':>9s} {'events/s':>9s} {'x 1':>6s}")
    for partitions, rate in rates.items():
        print(f"  {partitions:10d} {partitions:9d} {rate:9.0f} {rate / rates[1]:6.2f}")


def _rebuild(env: BenchEnv, schema: str, log: Path) -> tuple[float, int, Any]:
    """Run `python -m runstream.projector rebuild`; its wall time, status and rusage."""
    with log.open("wb") as out:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "runstream.projector", "rebuild"],
            env=env.environ(db_schema=schema), stdout=out, stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - began, status, usage


@pytest.mark.timeout(1800)
async def test_bench_rebuild_of_a_million_events(bench_env: BenchEnv, tmp_path: Path) -> None:
    last, publish_s = await _fill(bench_env, REBUILD_ANALYSES)
    schema = "bench_rebuild"
    log = tmp_path / "rebuild.log"
    seconds, status, usage = await asyncio.to_thread(_rebuild, bench_env, schema, log)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text()[-4000:]
    await _check_folded(bench_env.database_url, schema, REBUILD_ANALYSES, last)
    print(
        f"\n[bench rebuild] {last} events ({REBUILD_ANALYSES} analyses) published in "
        f"{publish_s:.1f} s; `runstream.projector rebuild` folded and swapped them in "
        f"{seconds:.1f} s -> {last / seconds:.0f} events/s (target: 1,000,000 in <= 180 s); "
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MB; {log.read_text().strip().splitlines()[-1]}"
    )


FRESH_RATE = float(os.environ.get("BENCH_FRESHNESS_RATE", "200"))  # analyses/s offered
FRESH_SECONDS = float(os.environ.get("BENCH_FRESHNESS_S", "30"))
FRESH_SAMPLE = 10  # every 10th analysis's settle is read back


@pytest.mark.timeout(900)
async def test_bench_freshness_under_sustained_load(bench_env: BenchEnv, tmp_path: Path) -> None:
    """Whole analyses published at FRESH_RATE/s for FRESH_SECONDS (every event of one
    analysis at once, analyses spread evenly over time); for every 10th, the time from
    publishing its `analysis_settled` to a `GET /api/messages/{mid}?min_seq=<its seq>`
    answering with it settled."""
    async with run_services(bench_env, tmp_path) as stack:
        host, port = stack.url.removeprefix("http://").split(":")
        latencies: list[float] = []
        stale = 0
        async def read_back(mid: str, sent: float, ack: asyncio.Future[Any]) -> None:
            nonlocal stale
            seq = (await ack).seq
            async with RawHttp(host, int(port), stack.headers()) as reader:  # ~20 reads/s
                status, body = await reader.request("GET", f"/api/messages/{mid}?min_seq={seq}")
            assert status == 200, body
            if body["status"] != "completed" or body["as_of_seq"] < seq:
                stale += 1
            else:
                latencies.append(time.perf_counter() - sent)

        async with Bus.connect(bench_env.bus_settings(), name="bench-publisher") as bus:
            await bus.provision()
            checks: list[asyncio.Task[None]] = []
            total = int(FRESH_RATE * FRESH_SECONDS)
            # Encoded before the clock starts: the publisher's own cost stays out of it.
            # Per analysis: its messages, and the id to read back (every 10th), if any.
            outgoing: list[tuple[list[tuple[str, bytes]], str | None]] = []
            carry: list[tuple[str, bytes]] = []  # a session's creation: with its first analysis
            for group in sessions_of_analyses(total):
                for event in group:
                    message = (bus.subjects.for_event(event), encode(event))
                    if isinstance(event, AnalysisRequested):
                        outgoing.append(([*carry, message], None))
                        carry = []
                    elif outgoing and not carry and not isinstance(event, SessionCreated):
                        outgoing[-1][0].append(message)
                    else:
                        carry.append(message)
                    if isinstance(event, AnalysisSettled) and len(outgoing) % FRESH_SAMPLE == 0:
                        outgoing[-1] = (outgoing[-1][0], event.message_id)
            began = time.perf_counter()
            published = analyses = 0
            for messages, sample in outgoing:
                analyses += 1
                delay = began + analyses / FRESH_RATE - time.perf_counter()
                if delay > 0:  # paced: unit n goes out at n / rate seconds
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                for subject, data in messages:  # the settle is the unit's last message
                    sent = time.perf_counter()
                    ack = await bus.js.publish_async(subject, data, stream=bus.stream)
                published += len(messages)
                if sample is not None:
                    checks.append(asyncio.create_task(read_back(sample, sent, ack)))
            offered_s = time.perf_counter() - began
            await asyncio.gather(*checks)
    achieved = analyses / offered_s
    assert latencies, "no read came back fresh"
    print(
        f"\n[bench freshness] {analyses} analyses ({published} events) offered at "
        f"{FRESH_RATE:.0f}/s for {FRESH_SECONDS:.0f} s: published in {offered_s:.1f} s "
        f"({achieved:.0f} analyses/s, {published / offered_s:.0f} events/s achieved); "
        f"published -> visible to GET ?min_seq: {summary_ms(latencies)} over "
        f"{len(latencies)} reads; {stale} reads not yet settled within the gateway's wait"
    )



# --- how the writer sends rows: measured, not guessed ----------------------------------

WRITER_ANALYSES = int(os.environ.get("BENCH_WRITER_ANALYSES", "1120"))  # 20 batches of 56


class UnnestWriter:
    """The same upserts with one array parameter per column (`unnest`)."""

    def __init__(self) -> None:
        self.sql = {spec.name: self._sql(spec) for spec in WRITTEN}

    @staticmethod
    def _sql(spec: W.Spec) -> str:
        params = ", ".join(
            f"${i}::{'text' if kind == 'jsonb' else kind}[]"
            for i, (_, kind) in enumerate(spec.columns, start=1)
        )
        cols = ", ".join(f'"{name}"' for name in spec.names)
        select = ", ".join(
            f'"{name}"::jsonb' if kind == "jsonb" else f'"{name}"' for name, kind in spec.columns
        )
        conflict = spec.upsert_sql().split(" ON CONFLICT", 1)[1]
        return (f"INSERT INTO {spec.name} ({cols}) SELECT {select} "
                f"FROM unnest({params}) AS s({cols}) ON CONFLICT{conflict}")

    async def write(self, conn: asyncpg.Connection, spec: W.Spec, rows: list[Row]) -> None:
        arrays = []
        for name, kind in spec.columns:
            values = [row.get(name) for row in rows]
            if kind == "jsonb":
                values = [None if v is None else msgspec.json.encode(v).decode() for v in values]
            arrays.append(values)
        await conn.execute(self.sql[spec.name], *arrays)


class CopyWriter:
    """`COPY` into a temporary table, then the same `INSERT … SELECT … ON CONFLICT`."""

    async def write(self, conn: asyncpg.Connection, spec: W.Spec, rows: list[Row]) -> None:
        temp = f"tmp_{spec.name}"
        cols = [name for name in spec.names]
        ddl = ", ".join(f'"{n}" {"text" if k == "jsonb" else k}' for n, k in spec.columns)
        await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} ({ddl}) ON COMMIT DELETE ROWS")
        records = [
            tuple(
                (None if row.get(n) is None else msgspec.json.encode(row[n]).decode())
                if k == "jsonb" else row.get(n)
                for n, k in spec.columns
            )
            for row in rows
        ]
        await conn.copy_records_to_table(temp, records=records, columns=cols)
        quoted = ", ".join(f'"{n}"' for n in cols)
        select = ", ".join(
            f'"{n}"::jsonb' if k == "jsonb" else f'"{n}"' for n, k in spec.columns
        )
        conflict = spec.upsert_sql().split(" ON CONFLICT", 1)[1]
        await conn.execute(f"INSERT INTO {spec.name} ({quoted}) SELECT {select} FROM {temp} "
                           f"ON CONFLICT{conflict}")


class JsonWriter:
    """What the projector does (`writer.write`): one JSON document per table."""

    async def write(self, conn: asyncpg.Connection, spec: W.Spec, rows: list[Row]) -> None:
        await conn.execute(spec.upsert_sql(), rows)


WRITTEN = (W.SESSIONS, W.MESSAGES, W.STEPS, W.DURATIONS, W.LOGS)


async def _write_all(writer: Any, conn: asyncpg.Connection, state: Any) -> None:
    for spec, rows in (
        (W.SESSIONS, [r for _, r in state.sessions.changed()]),
        (W.MESSAGES, [r for _, r in state.messages.changed()]),
        (W.STEPS, [r for _, r in state.steps.changed()]),
        (W.DURATIONS, [{**r, "part": state.part} for _, r in state.durations.changed()]),
        (W.LOGS, state.logs.rows),
    ):
        if rows:
            await writer.write(conn, spec, rows)


@pytest.mark.timeout(600)
async def test_bench_writer_json_against_unnest_and_copy(database_url: str) -> None:
    """The same batches (56 whole analyses each, ~2,000 events: the largest batch)
    written three ways into fresh schemas; the time of the writes alone."""
    batches = [list(chunk) for chunk in _chunks(
        [e for group in sessions_of_analyses(WRITER_ANALYSES) for e in group], 2048)]
    figures = {}
    for label, writer in (("json_to_recordset (chosen)", JsonWriter()),
                          ("unnest, one array per column", UnnestWriter()),
                          ("COPY into a temporary table", CopyWriter())):
        schema = f"bench_writer_{len(figures)}"
        async with open_store(database_url, schema=schema, max_size=1,
                              settings=session_settings()) as store:
            async with store.pool.acquire() as conn:
                wall = cpu = 0.0
                seq = 0
                for events in batches:
                    items = []
                    for event in events:
                        seq += 1
                        items.append((seq, "rs.x", encode(event)))
                    batch = Batch(items)
                    async with conn.transaction():
                        state = batch.fold_into(await W.load(conn, batch.keys))
                        began, cpu0 = time.perf_counter(), time.process_time()
                        await _write_all(writer, conn, state)
                        wall += time.perf_counter() - began
                        cpu += time.process_time() - cpu0
                dump = await conn.fetchval("SELECT count(*) FROM message_logs")
            await store.pool.execute(f"DROP SCHEMA {schema} CASCADE")
        assert dump == WRITER_ANALYSES * len(STEPS) * 2
        figures[label] = (wall, cpu)
    print(f"\n[bench writer] {len(batches)} batches of up to 2,048 events "
          f"({WRITER_ANALYSES} analyses): time spent writing")
    for label, (wall, cpu) in figures.items():
        print(f"  {label:32s} {1000 * wall / len(batches):6.1f} ms/batch wall, "
              f"{1000 * cpu / len(batches):6.1f} ms/batch projector CPU")


def _chunks(events: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]
