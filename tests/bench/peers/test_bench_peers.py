"""Issue 11, side by side: the same 5-step job on Runstream and on Celery + Redis.

The job: "average revenue by region" over a BENCH_PEERS_ROWS-row sales CSV (200,000 by
default, about 8 MB), in five steps - context, plan, script, execute, chart - each
doing the same work on both sides (tests/bench/peers/job.py says exactly what), each
reported when done. A client in the browser's position follows every job:

- Runstream: gateway, projector and the three workers as processes (rules planner), a
  session per client with the CSV uploaded, its SSE stream open first (as the web UI
  does), then `POST /api/sessions/{sid}/analyses`; five `step_completed` frames, then
  `analysis_settled`;
- Celery 5 with Redis (broker and result backend, a dedicated database flushed here):
  one task with `update_state` per step, a prefork worker with 3 processes (Runstream
  runs 3 workers), behind a Litestar web app (tests/bench/peers/celery_web.py), followed
  (a) by polling `GET /jobs/{id}` every 500 ms, as celery-progress does, and (b) through
  a Redis pub/sub -> SSE bridge.

For 1 client (BENCH_PEERS_SEQUENTIAL jobs one after another) and for
BENCH_PEERS_CONCURRENT clients (one job each, all at once): submit latency, the time
from a step's end (the worker's own clock) to the client seeing it, end to end per job,
jobs/s. Then kill -9 mid-job with BENCH_PEERS_KILL_JOBS jobs in flight: Runstream's
execution worker (restarted, as a supervisor would); Celery's pool process running the
job, with `acks_late` off, on, and on with `reject_on_worker_lost`; the whole Celery
worker (restarted), `acks_late` off and on.

What is asserted is what was measured: every job completed with the independently
computed averages and the same chart on both sides, and every client saw every step
once and in order. Speed is printed, never asserted. One table at the end; the samples
go to a JSON file, the step-visibility plot to BENCH_PEERS_PLOT (default: beside it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bench.peers.celery_side import (
    POOL,
    CeleryStack,
    kill_scenario,
    redis_answers,
)
from tests.bench.peers.clients import (
    JobRecord,
    RunstreamTab,
    celery_poll_job,
    celery_sse_job,
)
from tests.bench.peers.job import QUESTION, STEPS, Dataset, make_dataset
from tests.bench.peers.report import KillRow, Report, Run
from tests.bench.support import BenchEnv, RawHttp, Service, run_services, token

REDIS_URL = os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379/11")
ROWS = int(os.environ.get("BENCH_PEERS_ROWS", "200000"))
SEQUENTIAL = int(os.environ.get("BENCH_PEERS_SEQUENTIAL", "20"))
CONCURRENT = int(os.environ.get("BENCH_PEERS_CONCURRENT", "50"))
KILL_JOBS = int(os.environ.get("BENCH_PEERS_KILL_JOBS", "6"))
WARMUP = 2
JOB_TIMEOUT_S = 300.0
HOST = "127.0.0.1"

pytestmark = pytest.mark.skipif(not redis_answers(REDIS_URL),
                                reason=f"no Redis answers at {REDIS_URL}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("peers-data"), ROWS)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Iterator[Report]:
    rep = Report(meta={
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "rows": dataset.rows,
        "csv_bytes": dataset.size, "question": QUESTION, "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "pool": POOL,
    })
    yield rep
    rep.meta["load_avg_end"] = os.getloadavg()
    out = tmp_path_factory.getbasetemp() / "bench-peers"
    if rep.runs or rep.kills:
        rep.dump(out / "peers.json")
        plot = Path(os.environ.get("BENCH_PEERS_PLOT") or out / "peers-step-visibility.png")
        if rep.runs:
            rep.plot(plot)
        fetch = rep.meta.get("object_store_get_ms")
        fetched = (f"Runstream's workers fetch the CSV from the NATS object store: p50 "
                   f"{sorted(fetch)[len(fetch) // 2]:.0f} ms per fetch (5 fetches, timed "
                   f"alone); the Celery task reads it from local disk\n") if fetch else ""
        print(f"\n\n[bench peers] '{QUESTION}' over a {dataset.rows:,}-row CSV "
              f"({dataset.size / 1e6:.1f} MB); Celery: prefork x{POOL}, Redis {REDIS_URL}; "
              f"load average {rep.meta['load_avg_start'][0]:.1f} -> "
              f"{rep.meta['load_avg_end'][0]:.1f}\n{rep.table()}\n"
              f"where the time goes (p50 ms, workers' own clocks):\n{rep.breakdown()}\n"
              f"{fetched}"
              f"samples: {out / 'peers.json'}; plot: {plot}\n")


# --- checks shared by both sides ------------------------------------------------------------


def check_steps(rec: JobRecord) -> None:
    """Every step seen once, in order (within one run of the job)."""
    assert [s.step for s in rec.steps] == list(STEPS), (rec.system, rec.job_id, rec.steps)
    assert len({s.run for s in rec.steps}) == 1, rec.steps
    assert rec.done is not None and rec.done >= rec.steps[-1].seen


def check_result(rows: list[list[Any]], expected: dict[str, float]) -> list[str]:
    """The averages computed in Python; returns the regions in the result's order."""
    got = {row[0]: row[1] for row in rows}
    assert set(got) == set(expected), rows
    for region, mean in expected.items():
        assert got[region] == pytest.approx(mean, rel=1e-9), (region, got[region], mean)
    return [row[0] for row in rows]


_DECIMALS = re.compile(r"\d+\.\d{5,}")


def svg_digest(svg: str | None) -> str:
    """The SVG's digest with coordinates rounded to 4 decimals: DuckDB's `avg` of doubles
    may differ in the last bits from one run to the next (so may the bars, by 1e-13 px)."""
    assert svg, "no SVG"
    rounded = _DECIMALS.sub(lambda m: f"{float(m.group()):.4f}", svg)
    return hashlib.sha256(rounded.encode()).hexdigest()[:16]


# --- Runstream --------------------------------------------------------------------------------


async def _sessions(http: httpx.AsyncClient, data: bytes, n: int) -> list[tuple[str, str, int]]:
    """n sessions, each with the CSV uploaded: (session id, dataset id, as_of_seq)."""
    gate = asyncio.Semaphore(4)

    async def one() -> tuple[str, str, int]:
        async with gate:
            r = await http.post("/api/sessions", json={"title": "peers"})
            assert r.status_code == 201, r.text
            sid = r.json()["session_id"]
            r = await http.post(f"/api/sessions/{sid}/datasets", params={"name": "sales.csv"},
                                content=data)
            assert r.status_code == 201, r.text
            body = r.json()
            return sid, body["dataset_id"], int(body["as_of_seq"])

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _connections(n: int, headers: dict[str, str], port: int) -> list[RawHttp]:
    return [await RawHttp(HOST, port, headers).__aenter__() for _ in range(n)]


async def _close(conns: list[RawHttp]) -> None:
    for c in conns:
        await c.__aexit__(None, None, None)


@pytest.mark.timeout(1800)
async def test_runstream(bench_env: BenchEnv, tmp_path: Path, dataset: Dataset,
                         report: Report) -> None:
    data = dataset.path.read_bytes()
    async with run_services(bench_env, tmp_path, workers=True) as stack:
        port = int(stack.url.rsplit(":", 1)[1])
        bearer = token(bench_env.jwt_secret)
        headers = {"Authorization": f"Bearer {bearer}"}
        async with stack.client(timeout=120) as http:
            sessions = await _sessions(http, data, max(CONCURRENT, KILL_JOBS, 1))
            tabs = [await RunstreamTab(HOST, port, bearer, sid, seq).open()
                    for sid, _, seq in sessions]
            try:
                # One client: WARMUP, then SEQUENTIAL analyses one after another.
                # (A connection per job, opened before the clock starts: an idle keep-alive
                # connection would be closed by the server while a job runs.)
                _, ds0, _ = sessions[0]
                sequential = []
                for n in range(WARMUP + SEQUENTIAL):
                    async with RawHttp(HOST, port, headers) as conn:
                        rec = await tabs[0].job(conn, ds0, QUESTION, JOB_TIMEOUT_S)
                    if n >= WARMUP:
                        sequential.append(rec)
                # CONCURRENT clients, one analysis each, all at once.
                conns = await _connections(CONCURRENT, headers, port)
                concurrent = list(await asyncio.gather(*(
                    tabs[i].job(conns[i], sessions[i][1], QUESTION, JOB_TIMEOUT_S)
                    for i in range(CONCURRENT))))
                await _close(conns)

                reference = await _check_runstream(http, tabs, sequential + concurrent, dataset)
                report.meta["runstream_reference"] = reference
                report.runs += [Run("runstream", 1, sequential),
                                Run("runstream", CONCURRENT, concurrent)]
                assert all(t.order_errors == 0 for t in tabs)

                r = await http.get(f"/api/sessions/{sessions[0][0]}/datasets")
                (listed,) = r.json()["datasets"]
                report.meta["object_store_get_ms"] = await _object_store_get_ms(
                    bench_env, listed["object_name"])
                report.kills.append(await _runstream_kill(
                    stack, bench_env, tmp_path, tabs, sessions, headers, port, http, dataset))
            finally:
                for tab in tabs:
                    await tab.close()


async def _check_runstream(http: httpx.AsyncClient, tabs: list[RunstreamTab],
                           records: list[JobRecord], dataset: Dataset) -> dict[str, Any]:
    """Every analysis completed, the client saw its five steps once and in order, and the
    read models hold the right averages and a chart; returns what the Celery side must
    match (the regions' order, the chart)."""
    last_seq = max(t.last_id for t in tabs)
    reference: dict[str, Any] = {}
    for rec in records:
        assert rec.state == "completed", rec
        check_steps(rec)
        r = await http.get(f"/api/messages/{rec.job_id}", params={"min_seq": last_seq})
        assert r.status_code == 200, r.text
        message = r.json()
        assert message["status"] == "completed", message
        assert [s["step"] for s in message["steps"]] == list(STEPS)
        order = check_result(message["result"]["rows"], dataset.expected)
        (chart,) = message["charts"]
        got = {"order": order, "kind": chart["kind"], "title": chart["title"],
               "svg": svg_digest(chart["svg"])}
        assert reference in ({}, got), (reference, got)
        reference = got
    return reference


async def _object_store_get_ms(env: BenchEnv, object_name: str) -> list[float]:
    """What fetching the CSV from the NATS object store costs a worker (both Runstream
    workers that read the dataset do it), timed on its own, five times."""
    from runstream.bus import Bus, get_dataset

    times = []
    async with Bus.connect(env.bus_settings(), name="bench-peers") as bus:
        for _ in range(5):
            began = time.perf_counter()
            await get_dataset(bus, object_name)
            times.append((time.perf_counter() - began) * 1000)
    return times


async def _runstream_kill(stack: Any, env: BenchEnv, log_dir: Path, tabs: list[RunstreamTab],
                          sessions: list[tuple[str, str, int]], headers: dict[str, str],
                          port: int, http: httpx.AsyncClient, dataset: Dataset) -> KillRow:
    """KILL_JOBS analyses at once; when the first of them has `execution_started` (its
    query is about to run in a sandbox child), SIGKILL the execution worker and start a
    new one at once, as a supervisor would. Every analysis must still complete with the
    right result, each step seen once and in order."""
    conns = await _connections(KILL_JOBS, headers, port)
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_frame(mid: str, event: str) -> None:
        if event == "execution_started" and not first.done():
            first.set_result(mid)

    for tab in tabs[:KILL_JOBS]:
        tab.listener = on_frame
    jobs = [asyncio.create_task(tabs[i].job(conns[i], sessions[i][1], QUESTION, 240))
            for i in range(KILL_JOBS)]
    victim = await asyncio.wait_for(first, 120)
    old = stack.services["execution_worker"]
    old.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    old.proc.wait()
    stack.services["execution_worker"] = Service(
        "runstream.execution_worker", env.environ(), log_dir).start()
    records = list(await asyncio.gather(*jobs))
    await _close(conns)
    for tab in tabs[:KILL_JOBS]:
        tab.listener = None

    row = KillRow(name="Runstream: execution worker, restarted", jobs=KILL_JOBS)
    last_seq = max(t.last_id for t in tabs)
    for rec in records:
        assert rec.state == "completed", rec
        check_steps(rec)
        r = await http.get(f"/api/messages/{rec.job_id}", params={"min_seq": last_seq})
        check_result(r.json()["result"]["rows"], dataset.expected)
        execute = next(s for s in rec.steps if s.step == "execute")
        if execute.at > killed_at and rec.started("execute") < killed_at:
            row.resumed += 1  # it was in the execution worker when it died
            row.recovered_s = max(row.recovered_s or 0.0, (rec.done or 0.0) - killed_at)
        else:
            row.completed_once += 1
    victim_rec = next(r for r in records if r.job_id == victim)
    assert next(s for s in victim_rec.steps if s.step == "execute").at > killed_at, \
        "the kill landed after the victim's execute step"
    row.note = ("Runstream: redelivered after ack_wait (RUNSTREAM_ACK_WAIT_S, 30 s); steps "
                "done before the kill are not run again; every step seen once")
    return row


# --- Celery -----------------------------------------------------------------------------------


@pytest.mark.timeout(1800)
async def test_celery(tmp_path: Path, dataset: Dataset, report: Report) -> None:
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(dataset.job_args("ds-0")))
    stack = CeleryStack(REDIS_URL, tmp_path, dataset_file)
    async with stack.running():
        await stack.warm_up({**dataset.job_args("ds-0"), "question": QUESTION})
        port = stack.port
        runs: list[Run] = []
        for system in ("celery-poll", "celery-sse"):
            sequential = []
            for _ in range(SEQUENTIAL):
                async with RawHttp(HOST, port, {}) as conn:
                    sequential.append(await _celery_job(system, conn, port, "ds-0"))
            runs.append(Run(system, 1, sequential))
        for system in ("celery-poll", "celery-sse"):
            # A dataset of its own per client, as Runstream's sessions (each profiled once
            # per process); client 0 shares the one of the sequential runs, as in Runstream.
            ids = ["ds-0", *(f"{system}-ds-{i}" for i in range(1, CONCURRENT))]
            conns = await _connections(CONCURRENT, {}, port)
            concurrent = list(await asyncio.gather(*(
                _celery_job(system, conns[i], port, ids[i]) for i in range(CONCURRENT))))
            await _close(conns)
            runs.append(Run(system, CONCURRENT, concurrent))
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
            for run in runs:
                for rec in run.records:
                    await _check_celery(http, rec, dataset, report)
    report.runs += runs


async def _celery_job(system: str, conn: RawHttp, port: int, dataset_id: str) -> JobRecord:
    if system == "celery-poll":
        return await celery_poll_job(conn, dataset_id, QUESTION, JOB_TIMEOUT_S)
    return await celery_sse_job(conn, HOST, port, dataset_id, QUESTION, JOB_TIMEOUT_S)


async def _check_celery(http: httpx.AsyncClient, rec: JobRecord, dataset: Dataset,
                        report: Report) -> None:
    assert rec.state == "SUCCESS", rec
    check_steps(rec)
    if not rec.result:
        r = await http.get(f"/jobs/{rec.job_id}")
        assert r.status_code == 200, r.text
        rec.result = r.json()["result"]
    result = rec.result
    assert [s["step"] for s in result["steps"]] == list(STEPS)
    order = check_result(result["rows"], dataset.expected)
    chart = result["chart"]
    got = {"order": order, "kind": chart["kind"], "title": chart["title"],
           "svg": svg_digest(chart["svg"])}
    reference = report.meta.get("runstream_reference")
    if reference:  # the same rows in the same order, the same chart, byte for byte
        assert got == reference, (got, reference)
    rec.result = {}  # the samples file keeps timings, not results


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("acks_late", "reject", "whole"), [
    (False, False, False), (True, False, False), (True, True, False),
    (False, False, True), (True, False, True),
], ids=["pool-child-acks-early", "pool-child-acks-late", "pool-child-acks-late-reject",
        "worker-acks-early", "worker-acks-late"])
async def test_celery_kill(tmp_path: Path, dataset: Dataset, report: Report, acks_late: bool,
                           reject: bool, whole: bool) -> None:
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(dataset.job_args("ds-0")))
    stack = CeleryStack(REDIS_URL, tmp_path, dataset_file, acks_late=acks_late,
                        reject_on_worker_lost=reject, web=False)
    what = "whole worker, restarted" if whole else "job's pool process"
    config = f"acks_late {'on' if acks_late else 'off'}" + (
        " + reject_on_worker_lost" if reject else "")
    async with stack.running():
        row = await kill_scenario(stack, {**dataset.job_args("ds-k"), "question": QUESTION},
                                  jobs=KILL_JOBS, whole_worker=whole,
                                  name=f"Celery, {config}: {what}")
    report.kills.append(row)
    assert row.completed + row.failed + row.stuck_until_visibility + row.stuck_forever == \
        KILL_JOBS, row
