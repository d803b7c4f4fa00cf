"""Chaos in the suite: a worker process killed with SIGKILL in the middle of a step."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import nats

from tests.integration.conftest import collect, new_session
from tests.integration.pipeline_support import FakeChatCompletions, sales_csv

# ~2 s of work in the sandbox: long enough to be killed mid-step, correct enough to chart.
SLOW_SQL = (
    "SELECT region, avg(revenue) AS avg_revenue, "
    "(SELECT count(*) FROM range(16000) a, range(16000) b "
    " WHERE (a.range * 7 + b.range) % 13 = 5) AS pairs "
    "FROM data GROUP BY region ORDER BY region"
)


def _worker(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"runstream.{module}"], env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


async def test_a_worker_killed_mid_step_is_redelivered_and_the_analysis_completes_once(
    stack_factory, tmp_path, database_url,
):
    async with FakeChatCompletions(stalls=0, sql=SLOW_SQL) as fake, stack_factory() as stack:
        s = stack.settings
        env = {
            **os.environ,
            "RUNSTREAM_NATS_URL": s.nats_url, "RUNSTREAM_STREAM": s.stream,
            "RUNSTREAM_PREFIX": s.prefix, "RUNSTREAM_DATASETS_BUCKET": s.datasets_bucket,
            "RUNSTREAM_PLANNER": "openai", "RUNSTREAM_OPENAI_BASE_URL": fake.base_url,
            "RUNSTREAM_OPENAI_MODEL": "fake", "RUNSTREAM_OPENAI_API_KEY": "test",
            "RUNSTREAM_ACK_WAIT_S": "2", "RUNSTREAM_SANDBOX_TIMEOUT_S": "60",
            "RUNSTREAM_LOG_JSON": "true",
        }
        log = tmp_path / "workers.log"
        procs = {m: _worker(m, env, log)
                 for m in ("analysis_worker", "execution_worker", "chart_worker")}
        nc = await nats.connect(s.nats_url)
        try:
            async with stack.client() as c:
                sid = await new_session(c)
                up = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"},
                                  content=sales_csv())
                assert up.status_code == 201, up.text
                started = asyncio.get_running_loop().create_future()

                async def on_started(msg) -> None:
                    if not started.done():
                        started.set_result(msg.subject)

                sub = await nc.subscribe(f"live.{s.prefix}.{sid}.msg.*.execution_started",
                                         cb=on_started)
                mid = (await c.post(f"/api/sessions/{sid}/analyses",
                                    json={"question": "average revenue by region"})).json()[
                    "message_id"]
                await asyncio.wait_for(started, 60)
                await sub.unsubscribe()

                victim = procs["execution_worker"]
                sandbox_children = _children(victim.pid)
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                deadline = asyncio.get_running_loop().time() + 5
                while any(_alive(p) for p in sandbox_children):
                    assert asyncio.get_running_loop().time() < deadline, "sandbox outlived it"
                    await asyncio.sleep(0.05)
                procs["execution_worker"] = _worker("execution_worker", env, log)

                async with c.stream("GET", f"/api/messages/{mid}/events") as r:
                    frames = await collect(r, lambda f: False, timeout=120)
                assert frames[-1].event == "analysis_settled", log.read_text()[-3000:]
                assert frames[-1].data["status"] == "completed", frames[-1].data
                counts = Counter(f.event for f in frames)
                assert counts["analysis_settled"] == 1
                assert counts["execution_completed"] == 1, "the result is stored once"
                assert counts["step_started"] == 5 and counts["step_completed"] == 5
                message = (await c.get(f"/api/messages/{mid}",
                                       params={"min_seq": frames[-1].id})).json()
        finally:
            await nc.close()
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert [st["step"] for st in message["steps"]] == [
        "context", "plan", "script", "execute", "chart"]
    assert message["result"]["row_count"] == 4
    conn = await asyncpg.connect(database_url)
    try:
        dupes = await conn.fetchval(
            "SELECT count(*) FROM (SELECT text FROM runstream.message_logs WHERE message_id=$1"
            " GROUP BY text, step HAVING count(*) > 1) d", mid)
        steps = await conn.fetchval(
            "SELECT count(*) FROM runstream.message_steps WHERE message_id=$1", mid)
    finally:
        await conn.close()
    assert dupes == 0, "no log line was stored twice"
    assert steps == 5
