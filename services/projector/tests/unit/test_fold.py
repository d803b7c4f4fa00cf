"""Folding each event family gives the expected read-model rows."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from runstream.contracts import (
    AnalysisStarted,
    CancelRequested,
    ChartCancelled,
    ChartCancelRequested,
    ChartCompleted,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    ChartStarted,
    Column,
    ColumnFormat,
    DatasetAttached,
    DeadLetter,
    ErrorInfo,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    LockRenewed,
    LogAppended,
    ScriptGenerated,
    SessionRead,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    encode,
    new_id,
)
from services.projector.tests.unit.projector_helpers import Fold, Script


async def test_a_created_session_is_an_idle_row_owned_by_its_creator(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    created = script.created(title="Q1 sales")
    seq = await fold(created)

    row = await pool.fetchrow("SELECT * FROM sessions WHERE session_id = $1", script.session_id)
    assert dict(row) == {
        "session_id": script.session_id,
        "owner": "alice",
        "title": "Q1 sales",
        "created_at": created.at,
        "status": "idle",
        "active_message_id": None,
        "last_activity_at": created.at,
        "last_settled_at": None,
        "last_read_at": None,
        "has_notification": False,
        "last_seq": seq,
    }
    assert await pool.fetchval("SELECT seq FROM projection_checkpoints") == seq


async def test_an_attached_dataset_keeps_its_schema_and_sample(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    ds = DatasetAttached(
        **script.base(),
        dataset_id=new_id(),
        name="sales.csv",
        format="csv",
        object_name="obj-1",
        size_bytes=1234,
        row_count=3,
        columns=[Column(name="region", type="VARCHAR"), Column(name="amount", type="DOUBLE")],
        sample_rows=[["north", 1.5], ["south", 2.0]],
    )
    await fold(script.created(), ds)

    row = await pool.fetchrow("SELECT * FROM datasets WHERE dataset_id = $1", ds.dataset_id)
    assert row["session_id"] == script.session_id
    assert row["columns"] == [
        {"name": "region", "type": "VARCHAR"},
        {"name": "amount", "type": "DOUBLE"},
    ]
    assert row["sample_rows"] == [["north", 1.5], ["south", 2.0]]
    assert (row["size_bytes"], row["row_count"], row["table_name"]) == (1234, 3, "data")


async def test_a_requested_analysis_creates_both_messages_and_takes_the_lock(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested("total sales by region?", dataset_id="ds1")
    seq = await fold(script.created(), req)

    rows = await pool.fetch(
        "SELECT * FROM messages WHERE session_id = $1 ORDER BY sort_key", script.session_id
    )
    user, assistant = (dict(r) for r in rows)
    assert user["message_id"] == req.user_message_id
    assert (user["role"], user["content"], user["status"]) == (
        "user",
        "total sales by region?",
        "completed",
    )
    assert user["reply_message_id"] == req.message_id
    assert assistant["message_id"] == req.message_id
    assert (assistant["role"], assistant["status"], assistant["user_message_id"]) == (
        "assistant",
        "pending",
        req.user_message_id,
    )
    assert (assistant["dataset_id"], assistant["owner"], assistant["last_seq"]) == (
        "ds1",
        "alice",
        seq,
    )

    session = await pool.fetchrow("SELECT * FROM sessions")
    assert (session["status"], session["active_message_id"]) == ("analyzing", req.message_id)
    lock = await pool.fetchrow("SELECT * FROM session_locks")
    assert req.lock is not None
    assert dict(lock) == {
        "session_id": script.session_id,
        "message_id": req.message_id,
        "acquired_at": req.lock.acquired_at,
        "expires_at": req.lock.expires_at,
    }


async def test_a_renewed_lock_moves_the_expiry_of_the_lock_row(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    renewed_lock = script.lock(req.message_id, script.at())
    renew = LockRenewed(**script.base(), message_id=req.message_id, stage="plan", lock=renewed_lock)
    await fold(script.created(), req, renew)
    assert await pool.fetchval("SELECT expires_at FROM session_locks") == renewed_lock.expires_at


async def test_steps_run_with_progress_and_an_eta_from_the_running_mean(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    # A first analysis teaches the mean duration of "plan": 2000 ms.
    first = script.requested()
    await fold(
        script.created(),
        first,
        script.msg(StepStarted, first.message_id, step="plan", index=2, total=5),
        script.msg(StepCompleted, first.message_id, step="plan", duration_ms=2000),
        script.settled(first.message_id, lock=None),
    )
    assert await pool.fetchval("SELECT mean_ms FROM step_durations WHERE step = 'plan'") == 2000

    second = script.requested()
    mid = second.message_id
    started = script.msg(StepStarted, mid, step="plan", index=2, total=5)
    await fold(
        second,
        script.msg(AnalysisStarted, mid, worker="w1"),
        script.msg(StepStarted, mid, step="context", index=1, total=5),
        started,
    )
    step = await pool.fetchrow(
        "SELECT * FROM message_steps WHERE message_id = $1 AND step = 'plan'", mid
    )
    assert (step["status"], step["eta_ms"], step["idx"], step["total"]) == ("running", 2000, 2, 5)
    assert (
        await pool.fetchval("SELECT status FROM messages WHERE message_id = $1", mid) == "running"
    )

    progressed = script.msg(
        StepProgressed,
        mid,
        step="plan",
        progress=40.0,
        detail="thinking",
        at=started.at + timedelta(milliseconds=500),
    )
    await fold(progressed)
    step = await pool.fetchrow(
        "SELECT * FROM message_steps WHERE message_id = $1 AND step = 'plan'", mid
    )
    elapsed_ms = (progressed.at - started.at).total_seconds() * 1000
    assert (step["progress"], step["detail"]) == (40.0, "thinking")
    assert step["eta_ms"] == 2000 - elapsed_ms == 1500

    done = script.msg(StepCompleted, mid, step="plan", duration_ms=4000)
    await fold(done)
    step = await pool.fetchrow(
        "SELECT * FROM message_steps WHERE message_id = $1 AND step = 'plan'", mid
    )
    assert (step["status"], step["progress"], step["duration_ms"], step["eta_ms"]) == (
        "completed",
        100.0,
        4000,
        0,
    )
    assert step["ended_at"] == done.at
    row = await pool.fetchrow("SELECT count, mean_ms FROM step_durations WHERE step = 'plan'")
    assert (row["count"], row["mean_ms"]) == (2, 3000.0)


async def test_a_step_completed_twice_feeds_the_running_mean_once(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(StepStarted, mid, step="execute", index=4, total=5),
        script.msg(StepCompleted, mid, step="execute", duration_ms=100),
        # A redelivered worker re-published it past the dedupe window: a new event id.
        script.msg(StepCompleted, mid, step="execute", duration_ms=100),
    )
    row = await pool.fetchrow("SELECT count, mean_ms FROM step_durations WHERE step = 'execute'")
    assert (row["count"], row["mean_ms"]) == (1, 100.0)


async def test_a_failed_step_keeps_its_error(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(StepStarted, mid, step="script", index=3, total=5),
        script.msg(StepFailed, mid, step="script", error="no such column", code="sql"),
    )
    step = await pool.fetchrow("SELECT * FROM message_steps WHERE message_id = $1", mid)
    assert (step["status"], step["error"], step["error_code"], step["eta_ms"]) == (
        "failed",
        "no such column",
        "sql",
        None,
    )
    assert (
        await pool.fetchval("SELECT status FROM messages WHERE message_id = $1", mid) == "pending"
    )


async def test_a_log_line_published_twice_is_stored_once(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    log = script.msg(LogAppended, req.message_id, level="success", text="plan ready", step="plan")
    await fold(script.created(), req, log)
    # Published again without Nats-Msg-Id, so JetStream stores it under a new sequence.
    seq = await script.publish_raw(script.subjects.for_event(log), encode(log))
    msg = await script.js.get_msg(fold.stream.stream, seq)
    await fold.projector.apply_batch([(seq, msg.subject, msg.data)])

    logs = await pool.fetch("SELECT * FROM message_logs WHERE message_id = $1", req.message_id)
    assert [(r["text"], r["level"], r["step"], r["event_id"]) for r in logs] == [
        ("plan ready", "success", "plan", log.event_id)
    ]
    assert await pool.fetchval("SELECT seq FROM projection_checkpoints") == seq


async def test_script_and_result_are_stored_on_the_assistant_message(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(
            ScriptGenerated,
            mid,
            sql="SELECT 1",
            explanation="one (a guess)",
            interpretation="The number one.",
            planner="rules",
        ),
        script.msg(ExecutionStarted, mid),
        script.msg(
            ExecutionCompleted,
            mid,
            columns=[Column(name="x", type="INTEGER")],
            rows=[[1]],
            row_count=1,
            markdown="| x |\n|---|\n| 1 |",
        ),
    )
    row = await pool.fetchrow(
        "SELECT script, result, status FROM messages WHERE message_id = $1", mid
    )
    assert row["script"] == {
        "sql": "SELECT 1",
        "explanation": "one (a guess)",
        "interpretation": "The number one.",
        "planner": "rules",
        "dataset": None,
    }
    assert row["result"] == {
        "columns": [{"name": "x", "type": "INTEGER"}],
        "rows": [[1]],
        "row_count": 1,
        "truncated": False,
        "markdown": "| x |\n|---|\n| 1 |",
        "duration_ms": 0,
        "interpretation": "The number one.",
    }
    assert row["status"] == "pending"


async def test_a_result_keeps_its_raw_rows_and_carries_their_display_form_beside_them(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(
            ExecutionCompleted,
            mid,
            columns=[Column(name="month", type="DATE"), Column(name="total", type="DOUBLE")],
            rows=[["2023-01-01", 29671.929999999997]],
            row_count=1,
            formats=[
                ColumnFormat(name="month", kind="date", grain="month"),
                ColumnFormat(name="total", kind="decimal", decimals=2),
            ],
            display_rows=[["Jan 2023", "29,671.93"]],
        ),
    )
    result = await pool.fetchval("SELECT result FROM messages WHERE message_id = $1", mid)
    assert result["rows"] == [["2023-01-01", 29671.929999999997]]
    assert result["display_rows"] == [["Jan 2023", "29,671.93"]]
    assert result["formats"] == [
        {"name": "month", "kind": "date", "decimals": 0, "grouping": True, "grain": "month"},
        {"name": "total", "kind": "decimal", "decimals": 2, "grouping": True, "grain": None},
    ]


async def test_a_failed_execution_is_error_detail_until_the_analysis_settles(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(AnalysisStarted, mid),
        script.msg(ExecutionFailed, mid, kind="timeout", error="took too long", duration_ms=5),
    )
    row = await pool.fetchrow("SELECT status, error FROM messages WHERE message_id = $1", mid)
    assert row["status"] == "running"
    assert row["error"] == {
        "code": "timeout",
        "message": "took too long",
        "step": "execute",
        "details": {"duration_ms": 5},
    }

    await fold(script.settled(mid, "failed", summary="the query timed out", lock=None))
    row = await pool.fetchrow("SELECT * FROM messages WHERE message_id = $1", mid)
    assert (row["status"], row["summary"]) == ("failed", "the query timed out")
    assert row["error"]["code"] == "timeout"


async def test_settling_frees_the_session_and_raises_a_notification_until_read(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    settled = script.settled(mid, "completed", summary="42 rows", lock=None)
    await fold(
        script.created(),
        req,
        script.msg(StepStarted, mid, step="chart", index=5, total=5),
        settled,
    )
    session = await pool.fetchrow("SELECT * FROM sessions")
    assert (session["status"], session["active_message_id"]) == ("idle", None)
    assert (session["last_settled_at"], session["has_notification"]) == (settled.at, True)
    assert await pool.fetchval("SELECT count(*) FROM session_locks") == 0
    message = await pool.fetchrow("SELECT * FROM messages WHERE message_id = $1", mid)
    assert (message["status"], message["summary"], message["settled_at"]) == (
        "completed",
        "42 rows",
        settled.at,
    )
    assert await pool.fetchval("SELECT status FROM message_steps") == "completed"

    read = SessionRead(**script.base(), owner="alice")
    await fold(read)
    session = await pool.fetchrow("SELECT * FROM sessions")
    assert (session["last_read_at"], session["has_notification"]) == (read.at, False)


async def test_a_cancelled_analysis_stays_cancelled_after_late_worker_events(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(AnalysisStarted, mid),
        script.msg(StepStarted, mid, step="plan", index=2, total=5),
        script.msg(CancelRequested, mid, requested_by="alice"),
        script.settled(mid, "cancelled", lock=None),
        # The worker had not noticed yet:
        script.msg(StepCompleted, mid, step="plan", duration_ms=10),
        script.msg(StepStarted, mid, step="script", index=3, total=5),
        script.msg(AnalysisStarted, mid, attempt=2),
        script.msg(ScriptGenerated, mid, sql="SELECT 1", explanation="", planner="rules"),
        script.settled(mid, "completed", lock=None),
    )
    message = await pool.fetchrow("SELECT * FROM messages WHERE message_id = $1", mid)
    assert (message["status"], message["script"]) == ("cancelled", None)
    steps = await pool.fetch("SELECT step, status FROM message_steps WHERE message_id = $1", mid)
    assert [tuple(r) for r in steps] == [("plan", "cancelled")]
    assert await pool.fetchval("SELECT count(*) FROM step_durations") == 0
    assert message["last_seq"] == await pool.fetchval("SELECT seq FROM projection_checkpoints")


async def test_a_lock_held_by_another_message_survives_a_settle(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    first = script.requested()
    second = script.requested()  # its lock: the first expired unseen
    assert second.lock is not None
    await fold(
        script.created(),
        first,
        second,
        script.settled(first.message_id, "expired", lock=second.lock),
    )
    session = await pool.fetchrow("SELECT * FROM sessions")
    assert (session["status"], session["active_message_id"]) == ("analyzing", second.message_id)
    assert await pool.fetchval("SELECT message_id FROM session_locks") == second.message_id


async def test_a_dead_lettered_analysis_is_listed_with_its_reason(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    settled = script.settled(
        req.message_id,
        "failed",
        error=ErrorInfo(code="dead_letter", message="execute ran out of deliveries"),
        dead_letter=DeadLetter(
            consumer="execution", stream_seq=17, deliveries=5, subject="rs.x.msg.y.z"
        ),
        lock=None,
    )
    seq = await fold(script.created(), req, settled)
    rows = await pool.fetch("SELECT * FROM dead_letters")
    assert [dict(r) for r in rows] == [
        {
            "seq": seq,
            "message_id": req.message_id,
            "session_id": script.session_id,
            "consumer": "execution",
            "stream_seq": 17,
            "deliveries": 5,
            "subject": "rs.x.msg.y.z",
            "reason": "execute ran out of deliveries",
            "at": settled.at,
        }
    ]
    error = await pool.fetchval("SELECT error FROM messages WHERE message_id = $1", req.message_id)
    assert error == {
        "code": "dead_letter",
        "message": "execute ran out of deliveries",
        "step": None,
        "details": {},
    }


async def test_a_chart_task_runs_to_a_stored_chart(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    tid, mid = new_id(), req.message_id
    await fold(
        script.created(),
        req,
        script.chart(ChartRequested, tid, mid, owner="alice", adjustment_query="as lines"),
        script.chart(ChartStarted, tid, mid, eta_ms=900),
        script.chart(
            ChartProgressed, tid, mid, progress=50.0, current_step="render", step_progress=20.0
        ),
    )
    task = await pool.fetchrow("SELECT * FROM chart_tasks WHERE task_id = $1", tid)
    assert (task["status"], task["progress"], task["current_step"], task["step_progress"]) == (
        "running",
        50.0,
        "render",
        20.0,
    )
    assert (task["eta_ms"], task["adjustment_query"], task["auto"]) == (900, "as lines", False)

    done = script.chart(
        ChartCompleted,
        tid,
        mid,
        chart_id="c1",
        kind="line",
        title="t",
        spec={"mark": "line"},
        svg="<svg/>",
    )
    await fold(done)
    task = await pool.fetchrow("SELECT * FROM chart_tasks WHERE task_id = $1", tid)
    assert (task["status"], task["progress"], task["updated_at"]) == ("completed", 100.0, done.at)
    chart = await pool.fetchrow("SELECT * FROM charts")
    assert (chart["chart_id"], chart["task_id"], chart["message_id"], chart["kind"]) == (
        "c1",
        tid,
        mid,
        "line",
    )
    assert (chart["spec"], chart["svg"]) == ({"mark": "line"}, "<svg/>")


async def test_a_cancelled_chart_task_never_shows_its_late_chart(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    tid, mid = new_id(), req.message_id
    await fold(
        script.created(),
        req,
        script.chart(ChartRequested, tid, mid),
        script.chart(ChartStarted, tid, mid),
        script.chart(ChartCancelRequested, tid, mid, requested_by="alice"),
        script.chart(ChartCancelled, tid, mid),
        script.chart(ChartCompleted, tid, mid, chart_id="late", kind="bar"),
        script.chart(ChartFailed, tid, mid, error="late failure"),
    )
    task = await pool.fetchrow("SELECT * FROM chart_tasks WHERE task_id = $1", tid)
    assert (task["status"], task["cancel_requested"], task["error"]) == ("cancelled", True, None)
    assert await pool.fetchval("SELECT count(*) FROM charts") == 0


async def test_a_failed_chart_task_keeps_its_error(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    tid = new_id()
    await fold(
        script.created(),
        req,
        script.chart(ChartRequested, tid, req.message_id, auto=True),
        script.chart(ChartFailed, tid, req.message_id, error="no numeric column", code="shape"),
    )
    task = await pool.fetchrow("SELECT * FROM chart_tasks WHERE task_id = $1", tid)
    assert (task["status"], task["error"], task["error_code"], task["auto"]) == (
        "failed",
        "no numeric column",
        "shape",
        True,
    )
