"""Running the Celery side: the worker (prefork, 3 processes) and its web app as child
processes on a dedicated Redis database, and the kill -9 scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from celery import Celery

from runstream.testing import free_port, wait_until
from runstream.testing.procs import live_children as children
from tests.bench.peers.celery_app import TASK, make_app, progress_messages
from tests.bench.peers.report import KillRow
from tests.bench.support import ROOT

POOL = 3  # worker processes: as many as Runstream's workers (analysis, execution, chart)
QUEUE = "celery"  # the default queue: a Redis list
UNACKED = "unacked"  # kombu's hash of delivered, not yet acknowledged messages
VISIBILITY_TIMEOUT_S = 3600  # kombu's default for Redis


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def flush(url: str) -> None:
    """The benchmark owns this database: empty it before each configuration."""
    redis.Redis.from_url(url).flushdb()


class Proc:
    """One child process, its output to a log file (shown when something goes wrong)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                               f"{self.log.read_text(errors='replace')[-4000:]}")

    def stop(self) -> None:
        """SIGTERM (Celery: warm shutdown), SIGKILL after 20 s; then its children too."""
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill9_tree(self) -> list[int]:
        """SIGKILL the process and every child it has, at once (a node lost, an OOM kill
        of the container); returns the pids."""
        assert self.proc is not None
        pids = [self.proc.pid, *children(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        return pids


@dataclass
class CeleryStack:
    url: str
    log_dir: Path
    dataset_file: Path
    acks_late: bool = False
    reject_on_worker_lost: bool = False
    web: bool = True
    app: Celery = field(init=False)
    worker: Proc | None = None
    webapp: Proc | None = None
    port: int = 0
    started: int = 0

    def __post_init__(self) -> None:
        self.app = make_app(self.url, acks_late=self.acks_late,
                            reject_on_worker_lost=self.reject_on_worker_lost)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env.update({"PEERS_REDIS_URL": self.url, "PEERS_DATASET": str(self.dataset_file),
                    "PEERS_ACKS_LATE": "1" if self.acks_late else "0",
                    "PEERS_REJECT_ON_WORKER_LOST": "1" if self.reject_on_worker_lost else "0",
                    "PYTHONUNBUFFERED": "1"})
        return env

    def start_worker(self) -> Proc:
        self.started += 1
        self.worker = Proc(
            f"celery-worker-{self.started}",
            [sys.executable, "-m", "celery", "-A", "tests.bench.peers.celery_app", "worker",
             "--pool", "prefork", "--concurrency", str(POOL), "--loglevel", "WARNING",
             "--hostname", f"peers{self.started}@%h"],
            self.env(), self.log_dir).start()
        return self.worker

    async def wait_worker(self, timeout: float = 60) -> None:
        """Ready: the worker answers a ping and its pool processes are up."""
        worker = self.worker
        assert worker is not None

        async def ready() -> bool:
            worker.check_alive()
            replies = await asyncio.to_thread(self.app.control.ping, timeout=0.5)
            return bool(replies) and len(children(worker.pid)) >= POOL

        await wait_until(ready, timeout=timeout, interval=0.2)

    async def wait_web(self, timeout: float = 60) -> None:
        webapp = self.webapp
        assert webapp is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=2) as c:
            async def ready() -> bool:
                webapp.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    r = await c.get("/healthz")
                    return r.status_code == 200 and bool(r.json()["ok"])
                return False

            await wait_until(ready, timeout=timeout, interval=0.1)

    async def warm_up(self, job: dict[str, Any], timeout: float = 120) -> set[int]:
        """Run jobs until every pool process has run one (each has loaded the task's
        libraries, drawn a chart once and profiled the dataset): three at a time."""
        assert self.worker is not None
        pool = children(self.worker.pid)
        warmed: set[int] = set()
        deadline = time.monotonic() + timeout
        while not pool <= warmed:
            assert time.monotonic() < deadline, f"pool {pool} not warmed: {warmed}"
            results = [self.app.send_task(TASK, args=[job]) for _ in range(POOL)]
            for r in results:
                out = await asyncio.to_thread(r.get, timeout=60)
                warmed.add(int(out["pid"]))
        return warmed

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CeleryStack]:
        flush(self.url)
        try:
            self.start_worker()
            if self.web:
                self.port = free_port()
                self.webapp = Proc("celery-web", [sys.executable, "-m",
                                                  "tests.bench.peers.celery_web"],
                                   {**self.env(), "PEERS_HTTP_PORT": str(self.port)},
                                   self.log_dir).start()
            await self.wait_worker()
            if self.web:
                await self.wait_web()
            yield self
        finally:
            for proc in (self.webapp, self.worker):
                if proc is not None:
                    proc.stop()
            flush(self.url)


def _finals_in(log: ProgressLog, ids: list[str], meta: Any) -> Any:
    """Every job that ended has had its `final` message read off the channel."""
    async def probe() -> bool:
        ended = [i for i in ids if (await asyncio.to_thread(meta, i))["status"] == "SUCCESS"]
        return all(i in log.finals for i in ended)
    return probe


class ProgressLog:
    """Every progress message of every task, read off the pub/sub channel by the harness."""

    def __init__(self, url: str) -> None:
        self.redis = aioredis.from_url(url)
        self.steps: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.finals: dict[str, tuple[str, float]] = {}  # job -> (state, when it was stored)
        self.script_done: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        async for job, data in progress_messages(self.redis, self.subscribed):
            if "final" in data:
                self.finals[job] = (data["final"], data["at"])
                continue
            self.steps[job].append(data)
            if data["step"] == "script":
                self.script_done.put_nowait((job, data))

    def runs(self, job: str) -> list[str]:
        return list(dict.fromkeys(s["run"] for s in self.steps[job]))


async def kill_scenario(stack: CeleryStack, job: dict[str, Any], *, jobs: int,
                        whole_worker: bool, name: str) -> KillRow:
    """Submit `jobs` at once; when the first of them reports its `script` step (its
    process is then loading the CSV for the query), SIGKILL that pool process — or the
    whole worker, which a supervisor starts again at once. Then wait until every job
    has ended or nothing in Celery will ever run it again (the queue is empty and the
    worker holds nothing), and count how each ended."""
    log = ProgressLog(stack.url)
    reader = asyncio.create_task(log.run())
    try:
        await asyncio.wait_for(log.subscribed.wait(), 10)
        ids = [str(stack.app.send_task(TASK, args=[job]).id) for _ in range(jobs)]
        victim, step = await asyncio.wait_for(log.script_done.get(), 120)
        assert stack.worker is not None
        killed_at = time.time()
        if whole_worker:
            stack.worker.kill9_tree()
            stack.start_worker()
            await stack.wait_worker()
        else:
            os.kill(int(step["pid"]), signal.SIGKILL)
        r = redis.Redis.from_url(stack.url)

        def meta(job_id: str) -> dict[str, Any]:
            return dict(stack.app.backend.get_task_meta(job_id))

        async def settled() -> bool:
            states = [(await asyncio.to_thread(meta, i))["status"] for i in ids]
            if all(s in ("SUCCESS", "FAILURE") for s in states):
                return True
            # Some have not ended: is anything left that would run them?
            if await asyncio.to_thread(r.llen, QUEUE):
                return False
            inspect = stack.app.control.inspect(timeout=1.0)
            active = await asyncio.to_thread(inspect.active) or {}
            reserved = await asyncio.to_thread(inspect.reserved) or {}
            return not any(active.values()) and not any(reserved.values())

        await wait_until(settled, timeout=180, interval=0.5)
        await wait_until(_finals_in(log, ids, meta), timeout=10)
        unacked = {json.loads(v)[0]["headers"]["id"]
                   for v in (await asyncio.to_thread(r.hvals, UNACKED))}
        row = KillRow(name=name, jobs=jobs)
        last_done = None
        for i in ids:
            m = await asyncio.to_thread(meta, i)
            runs = log.runs(i)
            if i == victim:  # the kill landed mid-job: its killed run never reported `execute`
                killed = [s for s in log.steps[i] if s["run"] == step["run"]]
                assert [s["step"] for s in killed] == ["context", "plan", "script"], killed
            if m["status"] == "SUCCESS":
                if len(runs) > 1:
                    row.rerun += 1
                else:
                    row.completed_once += 1
                if i == victim or len(runs) > 1:
                    last_done = max(last_done or 0.0, log.finals[i][1])
            elif m["status"] == "FAILURE":
                row.failed += 1
            elif i in unacked:
                row.stuck_until_visibility += 1
            else:
                row.stuck_forever += 1
        if last_done is not None:
            row.recovered_s = last_done - killed_at
        notes = []
        metas = {i: meta(i) for i in ids}
        failures = {repr(m["result"])[:90] for m in metas.values() if m["status"] == "FAILURE"}
        if failures:
            notes.append("the client is told: " + "; ".join(sorted(failures)))
        if row.rerun:
            notes.append("re-run from step 1 at once: the client saw context, plan, script "
                         "twice")
        stuck = {i: m["status"] for i, m in metas.items()
                 if m["status"] not in ("SUCCESS", "FAILURE")}
        if row.stuck_forever:
            states = sorted({s for i, s in stuck.items() if i not in unacked})
            notes.append(f"{row.stuck_forever} acked before the kill: state {'/'.join(states)} "
                         "for ever, nothing will run them again")
        if row.stuck_until_visibility:
            states = sorted({s for i, s in stuck.items() if i in unacked})
            notes.append(f"{row.stuck_until_visibility} in Redis' unacked hash (state "
                         f"{'/'.join(states)}): redelivered only after visibility_timeout "
                         f"({VISIBILITY_TIMEOUT_S} s)")
        row.note = "; ".join(notes)
        return row
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await log.redis.aclose()
