"""The operating commands against real NATS and Postgres: cleanup, failed retry, tail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from runstream.bus import Bus, LockHeld, SessionAggregate, get_dataset, put_dataset
from runstream.cli import cleanup as cl
from runstream.cli import failed
from runstream.cli.settings import CliSettings
from runstream.cli.tail import tail
from runstream.contracts import AnalysisRequested, ErrorInfo, LogAppended, new_id, utcnow
from runstream.store import connect, migrate
from runstream.testing import wait_until

SCHEMA = "runstream"


@pytest.fixture
async def db(database_url: str) -> Any:
    conn = await connect(database_url, schema=SCHEMA)
    await migrate(conn, SCHEMA)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(bus: Bus, database_url: str) -> CliSettings:
    return CliSettings().model_copy(update={
        "nats_url": bus.settings.url, "stream": bus.stream, "prefix": bus.settings.prefix,
        "datasets_bucket": bus.settings.datasets_bucket, "database_url": database_url,
        "db_schema": SCHEMA,
    })


async def _session_rows(
    db: asyncpg.Connection, sid: str, *, last_at: datetime, status: str = "idle",
    question: str = "q", message_id: str | None = None, object_name: str | None = None,
) -> str:
    """Read-model rows as the projector would have written them for one session."""
    mid = message_id or new_id()
    await db.execute(
        """INSERT INTO sessions (session_id, owner, created_at, status, last_activity_at, last_seq)
           VALUES ($1, 'alice', $2, $3, $2, 1)""", sid, last_at, status,
    )
    await db.execute(
        """INSERT INTO messages (message_id, session_id, role, owner, question, status,
                                 created_at, sort_key, last_seq)
           VALUES ($1, $2, 'assistant', 'alice', $3, 'failed', $4, 3, 1)""",
        mid, sid, question, last_at,
    )
    if object_name:
        await db.execute(
            """INSERT INTO datasets (dataset_id, session_id, name, format, object_name,
                                     size_bytes, row_count, columns, sample_rows, created_at,
                                     last_seq)
               VALUES ($1, $2, 'd.csv', 'csv', $3, 3, 1, '[]', '[]', $4, 1)""",
            new_id(), sid, object_name, last_at,
        )
    return mid


async def _stream_count(bus: Bus, sid: str) -> int:
    info = await bus.js.stream_info(bus.stream, subjects_filter=bus.subjects.session_all(sid))
    return sum((info.state.subjects or {}).values())


async def test_cleanup_removes_only_settled_sessions_older_than_the_cutoff(
    bus: Bus, db: asyncpg.Connection, settings: CliSettings
) -> None:
    sessions = SessionAggregate(bus)
    old, recent, busy = new_id(), new_id(), new_id()
    for sid in (old, recent, busy):
        await sessions.create(sid, owner="alice")
    week_ago = datetime.now(UTC) - timedelta(days=7)
    await put_dataset(bus, f"{old}-data", b"a,b\n1,2\n")
    await _session_rows(db, old, last_at=week_ago, object_name=f"{old}-data")
    await _session_rows(db, recent, last_at=datetime.now(UTC))
    await _session_rows(db, busy, last_at=week_ago, status="analyzing")

    planned = await cl.cleanup(settings, timedelta(hours=24), dry_run=True)
    assert [c.session_id for c in planned.sessions] == [old]
    assert planned.sessions[0].stream_messages == 1
    assert planned.sessions[0].datasets == [f"{old}-data"]
    assert await _stream_count(bus, old) == 1  # a dry run removes nothing
    assert await db.fetchval("SELECT count(*) FROM sessions") == 3

    removed = await cl.cleanup(settings, timedelta(hours=24), dry_run=False)
    assert removed.keys() == planned.keys()
    assert await _stream_count(bus, old) == 0
    assert await _stream_count(bus, recent) == 1 and await _stream_count(bus, busy) == 1
    with pytest.raises(Exception):  # noqa: B017 - the object is gone, whichever error says so
        await get_dataset(bus, f"{old}-data")
    left = {r["session_id"] for r in await db.fetch("SELECT session_id FROM sessions")}
    assert left == {recent, busy}
    assert await db.fetchval("SELECT count(*) FROM messages WHERE session_id = $1", old) == 0
    assert await db.fetchval("SELECT count(*) FROM datasets") == 0
    assert "would remove session" in cl.render(planned, dry_run=True, older_than="24h")


async def test_failed_retry_asks_the_same_question_again_linked_to_the_old_message(
    bus: Bus, db: asyncpg.Connection, settings: CliSettings
) -> None:
    sessions = SessionAggregate(bus)
    sid, mid = new_id(), new_id()
    await sessions.create(sid, owner="alice")
    await sessions.request_analysis(
        sid, owner="alice", question="average units by region", message_id=mid,
        user_message_id=new_id(),
    )
    await sessions.settle(sid, mid, "failed", error=ErrorInfo(code="x", message="boom"))
    await _session_rows(
        db, sid, last_at=datetime.now(UTC), question="average units by region", message_id=mid
    )

    done = await failed.retry(settings, mid)

    state = await sessions.load(sid)
    assert isinstance(state.event, AnalysisRequested)
    assert state.event.retry_of == mid
    assert state.event.question == "average units by region"
    assert state.event.message_id == done["message_id"] != mid
    assert state.lock is not None and state.lock.message_id == done["message_id"]
    with pytest.raises(LockHeld):  # the retry now holds the session
        await failed.retry(settings, mid)
    with pytest.raises(failed.RetryRefused):
        await failed.retry(settings, new_id())


async def test_tail_prints_earlier_and_live_events_of_one_session_only(
    bus: Bus, settings: CliSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = SessionAggregate(bus)
    sid, other, mid = new_id(), new_id(), new_id()
    await sessions.create(sid, owner="alice", title="mine")
    await sessions.create(other, owner="alice", title="not mine")
    stop = asyncio.Event()
    task = asyncio.create_task(tail(settings, sid, 0, stop))
    seen = ""

    async def printed(text: str) -> bool:
        nonlocal seen
        seen += capsys.readouterr().out
        return text in seen

    try:
        await wait_until(lambda: printed("session_created"), timeout=10)
        await bus.publish(LogAppended(
            event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
            level="warning", text="Step 2/5: planning the query",
        ))
        await wait_until(lambda: printed("[warning] Step 2/5: planning the query"), timeout=10)
    finally:
        stop.set()
        await task
    assert "title=mine" in seen and "not mine" not in seen


async def test_status_reports_the_stream_consumers_and_projector_lag(
    bus: Bus, db: asyncpg.Connection, settings: CliSettings
) -> None:
    from runstream.bus import ConsumerSpec, ensure_consumer
    from runstream.cli import status

    sessions = SessionAggregate(bus)
    for _ in range(3):
        await sessions.create(new_id(), owner="alice")
    spec = ConsumerSpec(durable="projector", filter_subjects=[bus.subjects.all])
    await ensure_consumer(bus, spec)
    await db.execute("INSERT INTO projection_checkpoints (name, seq) VALUES ('projector', 1)")

    report = await status.collect(settings)

    assert report["stream"]["messages"] == 3 and report["stream"]["last_seq"] == 3
    (consumer,) = report["consumers"]
    assert consumer["name"] == "projector" and consumer["pending"] == 3
    assert report["checkpoint"] == 1 and report["lag"] == 2
    text = status.render(report, settings.nats_url)
    assert "checkpoint 1 of 3 (lag 2)" in text


async def test_rebuild_folds_the_whole_stream_into_fresh_read_models(
    bus: Bus, settings: CliSettings, database_url: str, tmp_path: Any
) -> None:
    import os
    import sys

    sessions = SessionAggregate(bus)
    sid, mid = new_id(), new_id()
    await sessions.create(sid, owner="alice", title="rebuilt")
    await sessions.request_analysis(sid, owner="alice", question="how many rows?",
                                    message_id=mid, user_message_id=new_id())
    env = {
        **os.environ, "RUNSTREAM_NATS_URL": bus.settings.url, "RUNSTREAM_STREAM": bus.stream,
        "RUNSTREAM_PREFIX": bus.settings.prefix, "RUNSTREAM_DATABASE_URL": database_url,
        "RUNSTREAM_DB_SCHEMA": SCHEMA,
    }
    runstream = os.path.join(os.path.dirname(sys.executable), "runstream")
    proc = await asyncio.create_subprocess_exec(
        runstream, "rebuild", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "2 events folded" in out.decode()
    conn = await connect(database_url, schema=SCHEMA)
    try:
        title = await conn.fetchval("SELECT title FROM sessions WHERE session_id=$1", sid)
        status = await conn.fetchval("SELECT status FROM messages WHERE message_id=$1", mid)
        checkpoint = await conn.fetchval("SELECT seq FROM projection_checkpoints")
    finally:
        await conn.close()
    assert (title, status, checkpoint) == ("rebuilt", "pending", 2)
