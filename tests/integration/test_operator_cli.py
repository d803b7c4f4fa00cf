"""The operator's commands against a real stack (projector, gateway, workers in this
process; nats-server and Postgres real): `status` agrees with `GET /api/stats`, `follow`
renders an analysis as the UI does, and the scheduled cleanup removes exactly what
`runstream cleanup --dry-run` listed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.js import api
from prometheus_client import REGISTRY

from runstream.bus import Bus
from runstream.cli import cleanup as cl
from runstream.cli import status as st
from runstream.cli.retention import CleanupSchedule
from runstream.cli.settings import CliSettings
from runstream.contracts import (
    STEP_TITLES,
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    ChartCompleted,
    ChartFailed,
    ChartRequested,
    Lock,
    LogAppended,
    SessionCreated,
    new_id,
)
from runstream.testing import wait_until
from tests.integration.conftest import new_session
from tests.stack import TEST_PARTITIONS

RUNSTREAM = Path(sys.executable).parent / "runstream"
SCHEMA = "runstream"


def _cli_env(bus: Bus, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RUNSTREAM_") and k != "DATABASE_URL"}
    env.update({
        "RUNSTREAM_NATS_URL": bus.settings.url, "RUNSTREAM_STREAM": bus.stream,
        "RUNSTREAM_PREFIX": bus.settings.prefix,
        "RUNSTREAM_DATASETS_BUCKET": bus.settings.datasets_bucket,
        "RUNSTREAM_DATABASE_URL": database_url, "RUNSTREAM_DB_SCHEMA": SCHEMA,
        "COLUMNS": "160", **extra,
    })
    return env


def _settings(bus: Bus, database_url: str) -> CliSettings:
    return CliSettings().model_copy(update={
        "nats_url": bus.settings.url, "stream": bus.stream, "prefix": bus.settings.prefix,
        "datasets_bucket": bus.settings.datasets_bucket, "database_url": database_url,
        "db_schema": SCHEMA, "partitions": TEST_PARTITIONS,
    })


async def _run(*args: str, env: dict[str, str], cwd: Path, timeout: float = 90) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(RUNSTREAM), *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


# --- status and /api/stats --------------------------------------------------------------
async def test_status_and_api_stats_list_the_same_consumers_marked_the_same_way(
    stack_factory: Any, bus: Bus, database_url: str
) -> None:
    async with stack_factory(workers=True) as stack:
        # an ephemeral replay consumer, as a gateway's SSE catch-up or `runstream tail` makes
        replay = await bus.js.subscribe(bus.subjects.all, stream=bus.stream,
                                        ordered_consumer=True,
                                        config=api.ConsumerConfig(inactive_threshold=30.0))
        settings = _settings(bus, database_url)
        try:
            async with stack.client() as c:

                async def steady() -> Any:
                    """status, stats, status: the stats taken while nothing changed."""
                    before = await st.collect(settings)
                    stats = (await c.get("/api/stats")).json()
                    after = await st.collect(settings)
                    names = [r["name"] for r in before["consumers"]]
                    if names != [r["name"] for r in after["consumers"]]:
                        return None
                    return before, stats

                report, stats = await wait_until(steady, timeout=20)
        finally:
            await replay.unsubscribe()

    listed = [(r["name"], r["kind"], r["ephemeral"], r["stream"]) for r in report["consumers"]]
    served = [(c["name"], c["kind"], c["ephemeral"], c["stream"]) for c in stats["consumers"]]
    assert listed == served
    kinds = {kind for _, kind, _, _ in listed}
    assert kinds == {"durable", "replay", "reader"}, listed  # workers, replay, projector
    assert all(ephemeral == (kind != "durable") for _, kind, ephemeral, _ in listed)
    # with partitions the projector's readers read the partitioned view, another stream
    readers = {stream for _, kind, _, stream in listed if kind == "reader"}
    assert readers == {bus.stream if TEST_PARTITIONS == 1 else f"{bus.stream}_P{TEST_PARTITIONS}"}
    assert {stream for _, kind, _, stream in listed if kind != "reader"} == {bus.stream}
    text = st.render(report, settings.nats_url)
    for name, kind, ephemeral, stream in listed:
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        assert (f"ephemeral {kind}" if ephemeral else "durable") in line
        assert ("(view)" in line) == (stream != bus.stream)
    durable = sorted(name for name, kind, _, _ in listed if kind == "durable")
    assert set(stats["workers_seen"]) <= set(durable)


# --- follow -----------------------------------------------------------------------------
REGIONS = ["North", "South", "East", "West"]
SALES = "region,units,revenue\n" + "".join(
    f"{r},{i % 5 + 1},{10 + i * 3}\n" for i, r in enumerate(REGIONS * 10))


def _assert_rendered(text: str, message: dict[str, Any]) -> None:
    """Every step (completed), every log line, the interpretation and the whole table."""
    for step in message["steps"]:
        title = STEP_TITLES[step["step"]]
        line = next((line for line in text.splitlines() if title in line and "✓" in line), None)
        assert line is not None, f"step {title!r} not shown completed in:\n{text}"
    assert [s["step"] for s in message["steps"]] == list(STEP_TITLES)
    for log in message["logs"]:
        assert log["text"] in text
    result = message["result"]
    assert result["interpretation"] in text
    for col in result["columns"]:
        assert col["name"] in text
    for row in result["display_rows"]:
        line = next((line for line in text.splitlines() if row[0] in line and row[1] in line),
                    None)
        assert line is not None, f"row {row} not in the table:\n{text}"
    assert f"{result['row_count']} rows" in text
    assert "SELECT" in text.upper()


async def test_follow_renders_an_analysis_with_every_step_its_logs_and_the_table(
    stack_factory: Any, bus: Bus, database_url: str, tmp_path: Path
) -> None:
    overrides = {"planner_delay_s": 1.0}  # long enough to be watched
    async with stack_factory(workers=True, worker_overrides=overrides) as stack:
        env = _cli_env(bus, database_url, RUNSTREAM_URL=stack.url,
                       RUNSTREAM_TOKEN=stack.token("alice"))
        async with stack.client("alice") as c:
            sid = await new_session(c)
            r = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"},
                             content=SALES.encode())
            assert r.status_code == 201, r.text

            # A session, followed from before its analysis starts to after it settles.
            watcher = await asyncio.create_subprocess_exec(
                str(RUNSTREAM), "follow", sid, env=env, cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                async def watching() -> bool:
                    stats = (await c.get("/api/stats")).json()
                    return bool(stats["gateway"]["stream_clients"] >= 1)

                await wait_until(watching, timeout=30)
                submitted = await c.post(f"/api/sessions/{sid}/analyses",
                                         json={"question": "total revenue by region"})
                assert submitted.status_code == 202, submitted.text
                mid = submitted.json()["message_id"]
                seen = b""
                assert watcher.stdout is not None

                async def read_until_table() -> None:
                    nonlocal seen
                    while b"COMPLETED" not in seen:  # the final view's header: it settled
                        chunk = await watcher.stdout.read(4096)  # type: ignore[union-attr]
                        if not chunk:
                            pytest.fail(f"follow ended early:\n{seen.decode()}")
                        seen += chunk

                await asyncio.wait_for(read_until_table(), 90)
                watcher.send_signal(signal.SIGINT)
                rest, _ = await asyncio.wait_for(watcher.communicate(), 20)
                session_text = (seen + rest).decode()
                assert watcher.returncode == 0, session_text
            finally:
                if watcher.returncode is None:
                    watcher.kill()
                    await watcher.wait()

            message = (await c.get(f"/api/messages/{mid}")).json()
            assert message["status"] == "completed"
            # Seen live, step by step, in the order the steps ran, before the final view.
            live = [line for line in session_text.splitlines() if line.startswith("▸ ")]
            assert [line.split(" (step")[0][2:] for line in live] == list(STEP_TITLES.values())
            _assert_rendered(session_text, message)

            # The message itself, once settled: the final view, exit 0 (completed).
            code, text = await _run("follow", mid, env=env, cwd=tmp_path)
            assert code == 0, text
            _assert_rendered(text, message)
            assert "COMPLETED" in text and "total revenue by region" in text


# --- retention --------------------------------------------------------------------------
def _at(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def _analysis(bus: Bus, sid: str, days: float, logs: int) -> str:
    """An analysis that was asked, logged and settled `days` ago."""
    mid, at = new_id(), _at(days)
    lock = Lock(message_id=mid, acquired_at=at, expires_at=at + timedelta(minutes=30))
    await bus.publish(AnalysisRequested(
        event_id=new_id(), at=at, session_id=sid, lock=lock, message_id=mid,
        user_message_id=new_id(), owner="alice", question=f"question {days}"))
    await bus.publish(AnalysisStarted(event_id=new_id(), at=at, session_id=sid, message_id=mid))
    for i in range(logs):
        await bus.publish(LogAppended(event_id=new_id(), at=at, session_id=sid, message_id=mid,
                                      text=f"log {i} of {mid}"))
    await bus.publish(AnalysisSettled(event_id=new_id(), at=at, session_id=sid, message_id=mid,
                                      status="completed", summary="done"))
    return mid


async def _chart_task(bus: Bus, sid: str, mid: str, days: float, *, failed: bool) -> str:
    tid, at = new_id(), _at(days)
    await bus.publish(ChartRequested(event_id=new_id(), at=at, session_id=sid, task_id=tid,
                                     message_id=mid, owner="alice"))
    if failed:
        await bus.publish(ChartFailed(event_id=new_id(), at=at, session_id=sid, task_id=tid,
                                      message_id=mid, error="no chart fits"))
    else:
        await bus.publish(ChartCompleted(event_id=new_id(), at=at, session_id=sid, task_id=tid,
                                         message_id=mid, chart_id=new_id(), kind="bar",
                                         title="t", svg="<svg/>"))
    return tid


async def _count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_a_scheduled_cleanup_removes_exactly_what_a_dry_run_listed(
    stack_factory: Any, bus: Bus, database_url: str, tmp_path: Path
) -> None:
    async with stack_factory() as stack:  # the real projector folds the old events
        assert stack.url
        old, kept, recent = new_id(), new_id(), new_id()
        for sid, days in ((old, 30), (kept, 30), (recent, 1)):
            await bus.publish(SessionCreated(event_id=new_id(), at=_at(days), session_id=sid,
                                             owner="alice"))
        await _analysis(bus, old, 20, logs=2)
        old_logs = await _analysis(bus, kept, 20, logs=3)
        failed_task = await _chart_task(bus, kept, old_logs, 20, failed=True)
        drawn_task = await _chart_task(bus, kept, old_logs, 20, failed=False)
        fresh = await _analysis(bus, kept, 1, logs=2)
        await _analysis(bus, recent, 1, logs=1)
        last = (await bus.js.stream_info(bus.stream)).state.last_seq

        conn = await asyncpg.connect(database_url, server_settings={"search_path": SCHEMA})
        try:
            async def folded() -> bool:
                seq = await conn.fetchval("SELECT max(seq) FROM projection_checkpoints")
                return bool(seq is not None and seq >= last)

            await wait_until(folded, timeout=30)

            # What `runstream cleanup --dry-run` lists (the command, in its own process) ...
            code, listed = await _run("cleanup", "--dry-run", "--older-than", "7d",
                                      env=_cli_env(bus, database_url), cwd=tmp_path)
            assert code == 0, listed
            plan = await cl.cleanup(_settings(bus, database_url), timedelta(days=7),
                                    dry_run=True)
            assert plan.keys() == {"sessions": [old], "logs": [old_logs],
                                   "chart_tasks": [failed_task]}

            # ... is exactly what the schedule `runstream up` runs removes.
            lines: list[str] = []
            schedule = CleanupSchedule(_settings(bus, database_url), older_than=timedelta(days=7),
                                       every=timedelta(hours=1), report=lines.append)
            stop = asyncio.Event()
            task = asyncio.create_task(schedule.run(stop))

            async def ran() -> bool:
                return bool(schedule.runs)

            await wait_until(ran, timeout=30)
            stop.set()
            await asyncio.wait_for(task, 10)
            run = schedule.runs[0]
            assert run is not None and run.keys() == plan.keys()
            assert "\n".join(lines) == listed.strip().replace("would remove", "removed")

            # Gone from the stream and the read models; everything else still there.
            assert await _count(bus, bus.subjects.session_all(old)) == 0
            assert await conn.fetchval("SELECT count(*) FROM sessions WHERE session_id=$1",
                                       old) == 0
            assert await _count(bus, bus.subjects.message(kept, old_logs, "log_appended")) == 0
            assert await conn.fetchval("SELECT count(*) FROM message_logs WHERE message_id=$1",
                                       old_logs) == 0
            assert await conn.fetchval("SELECT status FROM messages WHERE message_id=$1",
                                       old_logs) == "completed"
            assert await _count(bus, bus.subjects.chart_all(failed_task, kept)) == 0
            tasks = {r["task_id"] for r in await conn.fetch("SELECT task_id FROM chart_tasks")}
            assert tasks == {drawn_task}
            assert await conn.fetchval("SELECT count(*) FROM charts") == 1
            assert await conn.fetchval("SELECT count(*) FROM message_logs WHERE message_id=$1",
                                       fresh) == 2
            rows = await conn.fetch("SELECT session_id FROM sessions")
            assert {r["session_id"] for r in rows} == {kept, recent}
        finally:
            await conn.close()
        again = await cl.cleanup(_settings(bus, database_url), timedelta(days=7), dry_run=True)
        assert not again


async def test_status_reports_how_far_every_partition_has_folded(
    stack_factory: Any, bus: Bus, database_url: str
) -> None:
    """With 4 partitions the position is the least of them: it reaches the stream's end
    once every partition has folded (or idly covered) everything."""
    async with stack_factory(partitions=4) as stack, stack.client() as c:
        sid = (await c.post("/api/sessions")).json()["session_id"]
        sub = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "rows?"})
        assert sub.status_code == 202, sub.text
        settings = _settings(bus, database_url).model_copy(update={"partitions": 4})

        async def caught_up() -> Any:
            report = await st.collect(settings)
            return report if report["lag"] == 0 and report["checkpoint"] else None

        report = await wait_until(caught_up, timeout=30)

        async def gauges() -> list[float | None]:  # the projector runs in this process
            return [REGISTRY.get_sample_value("runstream_projector_partition_position",
                                              {"partition": str(k)}) for k in range(4)]

        async def every_partition_at_the_end() -> bool:
            return await gauges() == [report["stream"]["last_seq"]] * 4
        await wait_until(every_partition_at_the_end, timeout=30)
    assert report["checkpoint"] >= sub.json()["as_of_seq"]
