"""Events the fold must not take become poison rows with a reason, and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from runstream.contracts import (
    LOG_TEXT_MAX_BYTES,
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
    DatasetAttached,
    DeadLetter,
    Event,
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
    new_id,
    truncate_text,
    utf8_size,
)
from services.projector.tests.unit.projector_helpers import Fold, Script, dump

# What folding an event always moves, even a refused one.
_BOOKKEEPING = ("poison_events", "projection_checkpoints")


async def refused(fold: Fold, pool: asyncpg.Pool, event: Event) -> str:
    """Fold `event` alone; assert it wrote no row anywhere; return its poison reason."""
    before = await dump(pool)
    seq = await fold(event)
    after = await dump(pool)
    changed = [t for t in after if t not in _BOOKKEEPING and after[t] != before[t]]
    assert changed == [], f"a refused event wrote to {changed}"
    assert await pool.fetchval("SELECT seq FROM projection_checkpoints") == seq
    row = await pool.fetchrow("SELECT subject, error FROM poison_events WHERE seq = $1", seq)
    assert row is not None, "no poison row"
    assert row["subject"] == fold.script.subjects.for_event(event)
    return str(row["error"])


async def logs(pool: asyncpg.Pool, message_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT text FROM message_logs WHERE message_id = $1 ORDER BY seq", message_id
    )
    return [r["text"] for r in rows]


async def poison(pool: asyncpg.Pool) -> list[str]:
    return [r["error"] for r in await pool.fetch("SELECT error FROM poison_events ORDER BY seq")]


# --- orphans --------------------------------------------------------------------------
MESSAGE_EVENTS: dict[str, Callable[[Script, str], Event]] = {
    "analysis_started": lambda s, mid: s.msg(AnalysisStarted, mid, worker="w"),
    "step_started": lambda s, mid: s.msg(StepStarted, mid, step="plan", index=2, total=5),
    "step_progressed": lambda s, mid: s.msg(StepProgressed, mid, step="plan", progress=5.0),
    "step_completed": lambda s, mid: s.msg(StepCompleted, mid, step="plan", duration_ms=9),
    "step_failed": lambda s, mid: s.msg(StepFailed, mid, step="plan", error="e"),
    "log_appended": lambda s, mid: s.msg(LogAppended, mid, text="hello", step="plan"),
    "script_generated": lambda s, mid: s.msg(
        ScriptGenerated, mid, sql="SELECT 1", explanation="", planner="rules"
    ),
    "execution_started": lambda s, mid: s.msg(ExecutionStarted, mid),
    "execution_completed": lambda s, mid: s.msg(
        ExecutionCompleted, mid, columns=[Column(name="x", type="INTEGER")], rows=[[1]], row_count=1
    ),
    "execution_failed": lambda s, mid: s.msg(ExecutionFailed, mid, kind="sql", error="e"),
    "cancel_requested": lambda s, mid: s.msg(CancelRequested, mid, requested_by="alice"),
}


@pytest.mark.parametrize("kind", sorted(MESSAGE_EVENTS))
async def test_a_message_event_whose_message_does_not_exist_is_poisoned_and_writes_no_row(
    kind: str, fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    await fold(script.created())
    mid = new_id()
    reason = await refused(fold, pool, MESSAGE_EVENTS[kind](script, mid))
    assert reason == f"orphan: message {mid} does not exist"


SESSION_EVENTS: dict[str, Callable[[Script], Event]] = {
    "analysis_requested": lambda s: s.requested(),
    "dataset_attached": lambda s: DatasetAttached(
        **s.base(),
        dataset_id="d",
        name="d.csv",
        format="csv",
        object_name="o",
        size_bytes=1,
        row_count=1,
        columns=[],
        sample_rows=[],
    ),
    "lock_renewed": lambda s: LockRenewed(
        **s.base(), message_id="m", stage="plan", lock=s.lock("m")
    ),
    "analysis_settled": lambda s: s.settled("m", "failed", lock=None),
    "session_read": lambda s: SessionRead(**s.base(), owner=s.owner),
}


@pytest.mark.parametrize("kind", sorted(SESSION_EVENTS))
async def test_a_session_event_whose_session_does_not_exist_is_poisoned_and_writes_no_row(
    kind: str, fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    reason = await refused(fold, pool, SESSION_EVENTS[kind](script))
    assert reason == f"orphan: session {script.session_id} does not exist"


async def test_a_settle_of_a_message_that_does_not_exist_raises_no_notification_nor_dead_letter(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    await fold(script.created())
    dead = DeadLetter(consumer="execution", stream_seq=3, deliveries=5)
    reason = await refused(fold, pool, script.settled("ghost", "failed", dead_letter=dead))
    assert reason == "orphan: message ghost does not exist"


async def test_a_chart_request_for_a_message_that_does_not_exist_is_poisoned(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    await fold(script.created())
    reason = await refused(fold, pool, script.chart(ChartRequested, new_id(), "ghost"))
    assert reason == "orphan: message ghost does not exist"


async def test_a_chart_request_in_a_session_that_does_not_exist_is_poisoned(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    reason = await refused(fold, pool, script.chart(ChartRequested, new_id(), "m"))
    assert reason == f"orphan: session {script.session_id} does not exist"


CHART_EVENTS: dict[str, Callable[[Script, str, str], Event]] = {
    "chart_started": lambda s, tid, mid: s.chart(ChartStarted, tid, mid),
    "chart_progressed": lambda s, tid, mid: s.chart(
        ChartProgressed, tid, mid, progress=5.0, current_step="render"
    ),
    "chart_completed": lambda s, tid, mid: s.chart(
        ChartCompleted, tid, mid, chart_id=new_id(), kind="bar"
    ),
    "chart_failed": lambda s, tid, mid: s.chart(ChartFailed, tid, mid, error="e"),
    "chart_cancel_requested": lambda s, tid, mid: s.chart(ChartCancelRequested, tid, mid),
    "chart_cancelled": lambda s, tid, mid: s.chart(ChartCancelled, tid, mid),
}


@pytest.mark.parametrize("kind", sorted(CHART_EVENTS))
async def test_a_chart_event_whose_task_does_not_exist_is_poisoned_and_writes_no_row(
    kind: str, fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    await fold(script.created(), req)
    tid = new_id()
    reason = await refused(fold, pool, CHART_EVENTS[kind](script, tid, req.message_id))
    assert reason == f"orphan: chart task {tid} does not exist"


async def test_an_event_naming_a_message_of_another_session_is_poisoned(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    other = Script(script.js, script.subjects.prefix)
    req = script.requested()
    await fold(script.created(), req, other.created())
    reason = await refused(
        fold, pool, other.msg(StepStarted, req.message_id, step="plan", index=2, total=5)
    )
    assert reason == (
        f"mismatch: message {req.message_id} belongs to session {script.session_id}, "
        f"not {other.session_id}"
    )


async def test_folding_goes_on_after_an_orphan_in_the_same_batch(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    checkpoint = await fold(
        script.created(),
        script.msg(LogAppended, "ghost", text="lost"),
        req,
        script.msg(LogAppended, req.message_id, text="kept"),
    )
    assert await pool.fetchval("SELECT seq FROM projection_checkpoints") == checkpoint
    assert await pool.fetchval("SELECT array_agg(text) FROM message_logs") == ["kept"]
    assert await poison(pool) == ["orphan: message ghost does not exist"]
    assert await pool.fetchval("SELECT status FROM sessions") == "analyzing"


async def test_an_orphan_and_an_event_postgres_refuses_in_one_batch_are_both_poisoned(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    # The NUL byte sends the batch through one savepoint per event: the orphan is
    # refused there too.
    req = script.requested()
    await fold(
        script.created(),
        req,
        script.msg(LogAppended, req.message_id, text="nul \x00 byte"),
        script.msg(StepStarted, "ghost", step="plan", index=2, total=5),
        script.msg(LogAppended, req.message_id, text="kept"),
    )
    assert await logs(pool, req.message_id) == ["kept"]
    reasons = await poison(pool)
    assert reasons[0].startswith("fold: ")
    assert reasons[1:] == ["orphan: message ghost does not exist"]
    assert await pool.fetchval("SELECT count(*) FROM message_steps") == 0


async def test_a_step_whose_step_started_was_trimmed_still_gets_its_row_when_its_message_exists(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    await fold(
        script.created(),
        req,
        script.msg(StepCompleted, req.message_id, step="plan", duration_ms=40),
    )
    step = await pool.fetchrow("SELECT status, duration_ms FROM message_steps")
    assert (step["status"], step["duration_ms"]) == ("completed", 40)
    assert await poison(pool) == []


# --- logs after the settle and of older attempts ----------------------------------------
async def _cancelled_during_plan(fold: Fold, script: Script, attempt: int = 1) -> str:
    """A message cancelled while its `plan` step (of `attempt`) was running."""
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(AnalysisStarted, mid, attempt=attempt),
        script.msg(StepStarted, mid, step="context", index=1, total=5, attempt=attempt),
        script.msg(StepCompleted, mid, step="context", duration_ms=5, attempt=attempt),
        script.msg(StepStarted, mid, step="plan", index=2, total=5, attempt=attempt),
        script.settled(mid, "cancelled", lock=None),
    )
    return mid


async def test_a_log_after_the_settle_that_ends_a_step_of_the_same_attempt_is_kept(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    mid = await _cancelled_during_plan(fold, script)
    await fold(script.msg(LogAppended, mid, text="plan ready", step="plan", level="success"))
    assert await logs(pool, mid) == ["plan ready"]
    assert await poison(pool) == []


async def test_a_log_after_the_settle_of_another_attempt_is_poisoned_as_late(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    mid = await _cancelled_during_plan(fold, script)
    reason = await refused(
        fold, pool, script.msg(LogAppended, mid, text="plan", step="plan", attempt=2)
    )
    assert reason == f"late log: attempt 2 of message {mid}, settled cancelled at attempt 1"


async def test_a_log_after_the_settle_without_a_step_or_for_a_step_that_never_ran_is_late(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    mid = await _cancelled_during_plan(fold, script)
    no_step = await refused(fold, pool, script.msg(LogAppended, mid, text="done"))
    assert no_step == f"late log: message {mid} is settled cancelled and the log has no step"
    empty = await refused(fold, pool, script.msg(LogAppended, mid, text="done", step=""))
    assert empty == no_step
    never = await refused(fold, pool, script.msg(LogAppended, mid, text="sql", step="script"))
    assert never == f"late log: message {mid} is settled cancelled and never ran step script"


async def test_a_log_of_an_earlier_attempt_never_lands_even_before_the_settle(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(AnalysisStarted, mid, attempt=1),
        script.msg(LogAppended, mid, text="first try", step="plan", attempt=1),
        script.msg(AnalysisStarted, mid, attempt=2),
        script.msg(LogAppended, mid, text="second try", step="plan", attempt=2),
    )
    reason = await refused(
        fold, pool, script.msg(LogAppended, mid, text="zombie", step="plan", attempt=1)
    )
    assert reason == f"stale log: attempt 1 of message {mid}, which is at attempt 2"
    assert await logs(pool, mid) == ["first try", "second try"]


async def test_a_settle_inside_a_batch_applies_to_the_logs_after_it_in_that_batch(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    # One batch: what the fold knew about the message before the settle must not leak
    # past it.
    req = script.requested()
    mid = req.message_id
    await fold(
        script.created(),
        req,
        script.msg(StepStarted, mid, step="plan", index=2, total=5),
        script.msg(LogAppended, mid, text="before", step="plan"),
        script.msg(LogAppended, mid, text="no step before"),
        script.settled(mid, "cancelled", lock=None),
        script.msg(LogAppended, mid, text="after", step="plan"),
        script.msg(LogAppended, mid, text="no step after"),
    )
    assert await logs(pool, mid) == ["before", "no step before", "after"]
    assert await poison(pool) == [
        f"late log: message {mid} is settled cancelled and the log has no step"
    ]


async def test_a_900_kb_log_on_a_settled_message_is_poisoned_and_stored_nowhere(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    # The observed bug: it became a 900,000-character log row.
    mid = await _cancelled_during_plan(fold, script)
    huge = script.msg(LogAppended, mid, text="z" * 900_000)
    reason = await refused(fold, pool, huge)
    assert reason.startswith(f"late log: message {mid}")


# --- log text size ----------------------------------------------------------------------
async def test_a_900_kb_log_reaching_the_projector_is_truncated_to_the_limit_and_marked(
    fold: Fold, script: Script, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    mid = req.message_id
    already_cut, _ = truncate_text("w" * 50_000)  # what StepReporter.log publishes
    await fold(
        script.created(),
        req,
        script.msg(LogAppended, mid, text="y" * 900_000, step="execute"),  # a foreign publisher
        script.msg(LogAppended, mid, text=already_cut, step="execute"),
        script.msg(LogAppended, mid, text="short", step="execute"),
    )
    rows = await pool.fetch(
        "SELECT text, truncated FROM message_logs WHERE message_id = $1 ORDER BY seq", mid
    )
    cut = rows[0]
    assert cut["truncated"] is True
    assert utf8_size(cut["text"]) <= LOG_TEXT_MAX_BYTES
    assert cut["text"].startswith("y" * 16_000)
    assert cut["text"].endswith(" … [truncated: 900000 bytes in all]")
    # Within the limit: stored whole and unmarked (the publisher's marker is in the text).
    assert [(r["text"], r["truncated"]) for r in rows[1:]] == [
        (already_cut, False),
        ("short", False),
    ]
    assert await poison(pool) == []
