"""Fold one event into the read models, inside the caller's transaction.

Every statement is deterministic in (seq, event): times come from the event, never from
the clock, so folding the same stream twice gives identical rows (rebuild relies on it).
Terminal statuses are sticky: once a message or chart task is settled, later events never
change its status; only the log lines that end one of its steps may still land.

Some events are refused (`Poison`): an orphan (its session, message or chart task does not
exist), an event naming a message of another session, a log of an older attempt, and a
log after the settle that ends none of the message's steps. The check runs before the
event writes anything; the projector stores it as a poison row and folding goes on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import msgspec
import structlog

from runstream.contracts import (
    ACTIVE,
    LOG_TEXT_MAX_BYTES,
    MESSAGE_TERMINAL,
    TASK_TERMINAL,
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    ChartCancelled,
    ChartCancelRequested,
    ChartCompleted,
    ChartEvent,
    ChartFailed,
    ChartProgressed,
    ChartRequested,
    ChartStarted,
    DatasetAttached,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    LockRenewed,
    LogAppended,
    MessageEvent,
    ScriptGenerated,
    SessionCreated,
    SessionEvent,
    SessionRead,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    sql_list,
    truncate_text,
)

logger = structlog.get_logger()

StepEvent: TypeAlias = StepStarted | StepProgressed | StepCompleted | StepFailed

_NOT_TERMINAL = f"status NOT IN {sql_list(MESSAGE_TERMINAL)}"
_TASK_OPEN = f"status NOT IN {sql_list(TASK_TERMINAL)}"


# ON CONFLICT DO NOTHING: the same event_id re-published under a new seq is stored once.
_INSERT_LOG = """
    INSERT INTO message_logs (message_id, seq, event_id, session_id, at, level, text, step,
                              truncated)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT DO NOTHING
"""


class Poison(Exception):
    """The fold refuses this event: it becomes a poison row with `reason`, nothing else.

    A decision about the event, not a database error: raised before the event writes
    anything, so the rest of the batch stands without a savepoint.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageFacts(NamedTuple):
    session_id: str
    status: str
    attempt: int


class Known:
    """What this batch has already found to exist, so each check costs one query per
    entity and batch, not per event (logs are most of the stream).

    Sessions and chart tasks never disappear during a fold. A message's status and
    attempt change: the folds that change them `forget` it, so a cached answer is always
    the one a query would give at that point of the stream.
    """

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.tasks: dict[str, str] = {}  # task_id -> session_id
        self.messages: dict[str, MessageFacts] = {}

    async def session(self, conn: asyncpg.Connection, session_id: str) -> None:
        if session_id in self.sessions:
            return
        if not await conn.fetchval("SELECT true FROM sessions WHERE session_id = $1", session_id):
            raise Poison(f"orphan: session {session_id} does not exist")
        self.sessions.add(session_id)

    async def message(
        self, conn: asyncpg.Connection, message_id: str, session_id: str
    ) -> MessageFacts:
        facts = self.messages.get(message_id)
        if facts is None:
            row = await conn.fetchrow(
                "SELECT session_id, status, attempt FROM messages WHERE message_id = $1",
                message_id,
            )
            if row is None:
                raise Poison(f"orphan: message {message_id} does not exist")
            facts = self.messages[message_id] = MessageFacts(*row)
        if facts.session_id != session_id:
            raise Poison(
                f"mismatch: message {message_id} belongs to session {facts.session_id}, "
                f"not {session_id}"
            )
        return facts

    async def task(self, conn: asyncpg.Connection, task_id: str, session_id: str) -> None:
        owner = self.tasks.get(task_id)
        if owner is None:
            owner = await conn.fetchval(
                "SELECT session_id FROM chart_tasks WHERE task_id = $1", task_id
            )
            if owner is None:
                raise Poison(f"orphan: chart task {task_id} does not exist")
            self.tasks[task_id] = owner
        if owner != session_id:
            raise Poison(
                f"mismatch: chart task {task_id} belongs to session {owner}, not {session_id}"
            )

    def forget(self, *message_ids: str) -> None:
        for message_id in message_ids:
            self.messages.pop(message_id, None)


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value) if value is not None else None


async def fold_event(
    conn: asyncpg.Connection,
    seq: int,
    subject: str,
    event: Event,
    positions: Positions | None = None,
) -> None:
    """Apply one decoded event at stream sequence `seq` (the caller owns the transaction).

    Raises `Poison` (before writing anything) for an event the read models refuse.
    With `positions`, the per-entity `last_seq`/activity updates are collected there and
    written once per batch by `positions.flush(conn)` (same result, far fewer statements).
    """
    batch = positions if positions is not None else Positions(defer_logs=False)
    known = batch.known
    await _admit(conn, event, known)
    match event:
        # --- session aggregate --------------------------------------------------------
        case SessionCreated():
            await conn.execute(
                """
                INSERT INTO sessions (session_id, owner, title, created_at, last_activity_at,
                                      last_seq)
                VALUES ($1, $2, $3, $4, $4, $5)
                ON CONFLICT (session_id) DO NOTHING
                """,
                event.session_id,
                event.owner,
                event.title,
                event.at,
                seq,
            )
        case DatasetAttached():
            await conn.execute(
                """
                INSERT INTO datasets (dataset_id, session_id, name, format, object_name,
                                      table_name, size_bytes, row_count, columns, sample_rows,
                                      created_at, last_seq)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (dataset_id) DO NOTHING
                """,
                event.dataset_id,
                event.session_id,
                event.name,
                event.format,
                event.object_name,
                event.table_name,
                event.size_bytes,
                event.row_count,
                _builtins(event.columns),
                event.sample_rows,
                event.at,
                seq,
            )
        case AnalysisRequested():
            await _analysis_requested(conn, seq, event)
            known.forget(event.message_id, event.user_message_id)
        case LockRenewed():
            pass  # the lock itself is synced below, as for every session event
        case AnalysisSettled():
            await _analysis_settled(conn, seq, event)
            known.forget(event.message_id)
        case SessionRead():
            await conn.execute(
                """
                UPDATE sessions SET last_read_at = $2, has_notification = false
                WHERE session_id = $1
                """,
                event.session_id,
                event.at,
            )
        # --- message aggregate --------------------------------------------------------
        case AnalysisStarted():
            await conn.execute(
                f"""
                UPDATE messages SET status = 'running', attempt = greatest(attempt, $3),
                                    started_at = coalesce(started_at, $2)
                WHERE message_id = $1 AND {_NOT_TERMINAL}
                """,
                event.message_id,
                event.at,
                event.attempt,
            )
            known.forget(event.message_id)
        case StepStarted() | StepProgressed() | StepCompleted() | StepFailed():
            facts = await known.message(conn, event.message_id, event.session_id)
            await _step(conn, seq, event, facts)
        case LogAppended():
            # An older or foreign publisher may send more than the contract allows.
            text, truncated = truncate_text(event.text, LOG_TEXT_MAX_BYTES)
            if truncated:
                logger.warning("projector.log_truncated", seq=seq, message_id=event.message_id)
            row = (
                event.message_id, seq, event.event_id, event.session_id, event.at,
                event.level, text, event.step, truncated,
            )  # fmt: skip
            if batch.defer_logs:
                batch.logs.append(row)
            else:
                await conn.execute(_INSERT_LOG, *row)
        case ScriptGenerated():
            script = {
                "sql": event.sql,
                "explanation": event.explanation,
                "interpretation": event.interpretation,
                "planner": event.planner,
                "dataset": _builtins(event.dataset),
            }
            await conn.execute(
                f"UPDATE messages SET script = $2 WHERE message_id = $1 AND {_NOT_TERMINAL}",
                event.message_id,
                script,
            )
        case ExecutionCompleted():
            result = {
                "columns": _builtins(event.columns),
                "rows": event.rows,
                "row_count": event.row_count,
                "truncated": event.truncated,
                "markdown": event.markdown,
                "duration_ms": event.duration_ms,
            }
            if event.display_rows:  # an older event has only the raw rows
                result["formats"] = _builtins(event.formats)
                result["display_rows"] = event.display_rows
            # The result says what it is: the plan's interpretation, when the script had one.
            await conn.execute(
                f"""
                UPDATE messages
                SET result = $2::jsonb || jsonb_strip_nulls(
                        jsonb_build_object('interpretation', nullif(script->>'interpretation', ''))
                    ),
                    error = NULL
                WHERE message_id = $1 AND {_NOT_TERMINAL}
                """,
                event.message_id,
                result,
            )
        case ExecutionFailed():
            # Only the detail: the status changes on analysis_settled alone.
            error = {
                "code": event.kind,
                "message": event.error,
                "step": "execute",
                "details": {"duration_ms": event.duration_ms},
            }
            await conn.execute(
                f"UPDATE messages SET error = $2 WHERE message_id = $1 AND {_NOT_TERMINAL}",
                event.message_id,
                error,
            )
        # --- chart-task aggregate -----------------------------------------------------
        case ChartRequested():
            await conn.execute(
                """
                INSERT INTO chart_tasks (task_id, message_id, session_id, owner, status,
                                         adjustment_query, force_create, auto, created_at,
                                         updated_at, last_seq)
                VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8, $9)
                ON CONFLICT (task_id) DO NOTHING
                """,
                event.task_id,
                event.message_id,
                event.session_id,
                event.owner,
                event.adjustment_query,
                event.force_create,
                event.auto,
                event.at,
                seq,
            )
        case ChartStarted():
            await conn.execute(
                f"""
                UPDATE chart_tasks SET status = 'running', eta_ms = coalesce($2, eta_ms)
                WHERE task_id = $1 AND {_TASK_OPEN}
                """,
                event.task_id,
                event.eta_ms,
            )
        case ChartProgressed():
            await conn.execute(
                f"""
                UPDATE chart_tasks SET status = 'running', progress = $2, current_step = $3,
                                       step_progress = $4, eta_ms = coalesce($5, eta_ms)
                WHERE task_id = $1 AND {_TASK_OPEN}
                """,
                event.task_id,
                event.progress,
                event.current_step,
                event.step_progress,
                event.eta_ms,
            )
        case ChartCompleted():
            await _chart_completed(conn, seq, event)
        case ChartFailed():
            await conn.execute(
                f"""
                UPDATE chart_tasks SET status = 'failed', error = $2, error_code = $3,
                                       eta_ms = NULL
                WHERE task_id = $1 AND {_TASK_OPEN}
                """,
                event.task_id,
                event.error,
                event.code,
            )
        case ChartCancelRequested():
            await conn.execute(
                f"""
                UPDATE chart_tasks SET cancel_requested = true
                WHERE task_id = $1 AND {_TASK_OPEN}
                """,
                event.task_id,
            )
        case ChartCancelled():
            await conn.execute(
                f"""
                UPDATE chart_tasks SET status = 'cancelled', eta_ms = NULL
                WHERE task_id = $1 AND {_TASK_OPEN}
                """,
                event.task_id,
            )
        case _:
            pass  # execution_started, cancel_requested, future types: positions only
    if isinstance(event, SessionEvent):
        await _sync_lock(conn, event)
    if isinstance(event, SessionCreated):
        # Last, once every write of the event went through: an event whose savepoint
        # rolls back must not leave its session known.
        known.sessions.add(event.session_id)
    batch.record(seq, event)
    if positions is None:
        await batch.flush(conn)


async def _admit(conn: asyncpg.Connection, event: Event, known: Known) -> None:
    """Raise Poison for an event the read models must not take; write nothing."""
    match event:
        case SessionCreated():
            pass
        case AnalysisSettled():
            await known.session(conn, event.session_id)
            await known.message(conn, event.message_id, event.session_id)
        case SessionEvent():
            await known.session(conn, event.session_id)
        case LogAppended():
            facts = await known.message(conn, event.message_id, event.session_id)
            await _admit_log(conn, event, facts)
        case MessageEvent():
            await known.message(conn, event.message_id, event.session_id)
        case ChartRequested():
            await known.session(conn, event.session_id)
            await known.message(conn, event.message_id, event.session_id)
        case ChartEvent():
            await known.task(conn, event.task_id, event.session_id)
        case _:
            pass  # no aggregate to check


async def _admit_log(conn: asyncpg.Connection, event: LogAppended, facts: MessageFacts) -> None:
    """A log of an older attempt never lands; after the settle, only a log that ends one
    of the settled attempt's steps does (a worker finishing the step it was in when the
    analysis was cancelled). Anything else would rewrite a finished story."""
    mid = event.message_id
    if event.attempt < facts.attempt:
        raise Poison(
            f"stale log: attempt {event.attempt} of message {mid}, "
            f"which is at attempt {facts.attempt}"
        )
    if facts.status not in MESSAGE_TERMINAL:
        return
    if event.attempt != facts.attempt:
        raise Poison(
            f"late log: attempt {event.attempt} of message {mid}, "
            f"settled {facts.status} at attempt {facts.attempt}"
        )
    if not event.step:
        raise Poison(f"late log: message {mid} is settled {facts.status} and the log has no step")
    ran = await conn.fetchval(
        "SELECT true FROM message_steps WHERE message_id = $1 AND step = $2", mid, event.step
    )
    if not ran:
        raise Poison(
            f"late log: message {mid} is settled {facts.status} and never ran step {event.step}"
        )


class Positions:
    """Writes a batch can defer to its end, each as one pipelined statement:

    - what every event moves: last_seq / activity of its session, message and chart
      task. Only maxima are kept and every write is `greatest(...)`, so one flush per
      batch gives exactly what a flush after each event would;
    - log rows (`defer_logs`): no fold reads message_logs, so inserting them at the end,
      in order, changes nothing but the number of round trips.

    It also carries the batch's `Known` cache of what exists (one batch, one transaction).
    """

    def __init__(self, *, defer_logs: bool = True) -> None:
        self.defer_logs = defer_logs
        self.known = Known()
        self.logs: list[tuple[Any, ...]] = []
        self.sessions: dict[str, tuple[int, datetime]] = {}
        self.messages: dict[str, int] = {}
        self.tasks: dict[str, tuple[int, datetime]] = {}

    def record(self, seq: int, event: Event) -> None:
        self.sessions[event.session_id] = _later(self.sessions.get(event.session_id), seq, event.at)
        if isinstance(event, MessageEvent | AnalysisSettled):
            self.messages[event.message_id] = max(self.messages.get(event.message_id, 0), seq)
        if isinstance(event, ChartEvent):
            self.tasks[event.task_id] = _later(self.tasks.get(event.task_id), seq, event.at)

    async def flush(self, conn: asyncpg.Connection) -> None:
        if self.logs:
            await conn.executemany(_INSERT_LOG, self.logs)
        if self.sessions:
            await conn.executemany(
                """
                UPDATE sessions SET last_seq = greatest(last_seq, $2),
                                    last_activity_at = greatest(last_activity_at, $3)
                WHERE session_id = $1
                """,
                [(sid, seq, at) for sid, (seq, at) in self.sessions.items()],
            )
        if self.messages:
            await conn.executemany(
                "UPDATE messages SET last_seq = greatest(last_seq, $2) WHERE message_id = $1",
                list(self.messages.items()),
            )
        if self.tasks:
            await conn.executemany(
                """
                UPDATE chart_tasks SET last_seq = greatest(last_seq, $2),
                                       updated_at = greatest(updated_at, $3)
                WHERE task_id = $1
                """,
                [(tid, seq, at) for tid, (seq, at) in self.tasks.items()],
            )
        self.logs.clear()
        self.sessions.clear()
        self.messages.clear()
        self.tasks.clear()


def _later(current: tuple[int, datetime] | None, seq: int, at: datetime) -> tuple[int, datetime]:
    if current is None:
        return seq, at
    return max(current[0], seq), max(current[1], at)


async def _sync_lock(conn: asyncpg.Connection, event: SessionEvent) -> None:
    """Every session event carries the whole lock state after it: mirror it exactly."""
    if event.lock is None:
        await conn.execute("DELETE FROM session_locks WHERE session_id = $1", event.session_id)
        return
    await conn.execute(
        """
        INSERT INTO session_locks (session_id, message_id, acquired_at, expires_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (session_id) DO UPDATE
        SET message_id = excluded.message_id, acquired_at = excluded.acquired_at,
            expires_at = excluded.expires_at
        """,
        event.session_id,
        event.lock.message_id,
        event.lock.acquired_at,
        event.lock.expires_at,
    )


async def _analysis_requested(conn: asyncpg.Connection, seq: int, event: AnalysisRequested) -> None:
    await conn.executemany(
        """
        INSERT INTO messages (message_id, session_id, role, owner, user_message_id,
                              reply_message_id, question, content, status, created_at,
                              sort_key, retry_of, dataset_id, last_seq)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (message_id) DO NOTHING
        """,
        [
            (
                event.user_message_id, event.session_id, "user", event.owner, None,
                event.message_id, event.question, event.question, "completed", event.at,
                seq * 2, event.retry_of, event.dataset_id, seq,
            ),
            (
                event.message_id, event.session_id, "assistant", event.owner,
                event.user_message_id, None, event.question, None, "pending", event.at,
                seq * 2 + 1, event.retry_of, event.dataset_id, seq,
            ),
        ],
    )  # fmt: skip
    await conn.execute(
        """
        UPDATE sessions SET status = 'analyzing', active_message_id = $2
        WHERE session_id = $1
        """,
        event.session_id,
        event.message_id,
    )


async def _analysis_settled(conn: asyncpg.Connection, seq: int, event: AnalysisSettled) -> None:
    settled = await conn.fetchval(
        f"""
        UPDATE messages
        SET status = $2, summary = $3, content = $3, settled_at = $4,
            error = coalesce($5, CASE WHEN $2 = 'completed' THEN NULL ELSE error END),
            settled_seq = $6
        WHERE message_id = $1 AND {_NOT_TERMINAL}
        RETURNING true
        """,
        event.message_id,
        event.status,
        event.summary,
        event.at,
        _builtins(event.error),
        seq,
    )
    if settled:  # not a second settle (the message exists: _admit checked)
        # Steps still open when the analysis ends did not finish: close them.
        await conn.execute(
            f"""
            UPDATE message_steps
            SET status = CASE WHEN $2 = 'failed' THEN 'failed'
                              WHEN $2 = 'completed' THEN 'completed'
                              ELSE 'cancelled' END,
                ended_at = coalesce(ended_at, $3), eta_ms = NULL
            WHERE message_id = $1 AND status IN {sql_list(ACTIVE)}
            """,
            event.message_id,
            event.status,
            event.at,
        )
        await conn.execute(
            """
            UPDATE sessions SET last_settled_at = $2, has_notification = true
            WHERE session_id = $1
            """,
            event.session_id,
            event.at,
        )
    await conn.execute(
        """
        UPDATE sessions SET status = 'idle', active_message_id = NULL
        WHERE session_id = $1 AND active_message_id = $2
        """,
        event.session_id,
        event.message_id,
    )
    if event.dead_letter is not None:
        dl = event.dead_letter
        reason = event.error.message if event.error else (event.summary or event.status)
        await conn.execute(
            """
            INSERT INTO dead_letters (seq, message_id, session_id, consumer, stream_seq,
                                      deliveries, subject, reason, at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (seq) DO NOTHING
            """,
            seq,
            event.message_id,
            event.session_id,
            dl.consumer,
            dl.stream_seq,
            dl.deliveries,
            dl.subject,
            reason,
            event.at,
        )


async def _step(
    conn: asyncpg.Connection, seq: int, event: StepEvent, message: MessageFacts
) -> None:
    if message.status in MESSAGE_TERMINAL:
        return  # a late step of a settled analysis changes nothing
    state = await conn.fetchrow(
        """
        SELECT (SELECT mean_ms FROM step_durations WHERE step = $2) AS mean,
               s.message_id IS NOT NULL AS exists, s.started_at, s.mean_counted
        FROM (SELECT 1) AS one
        LEFT JOIN message_steps s ON s.message_id = $1 AND s.step = $2
        """,
        event.message_id,
        event.step,
    )
    mean = state["mean"]
    if not isinstance(event, StepStarted) and not state["exists"]:
        # Its step_started never reached us (trimmed stream) but its message exists
        # (_admit checked): start the row here.
        await conn.execute(
            """
            INSERT INTO message_steps (message_id, step, session_id, status, attempt, last_seq)
            VALUES ($1, $2, $3, 'running', $4, $5)
            """,
            event.message_id,
            event.step,
            event.session_id,
            event.attempt,
            seq,
        )
    match event:
        case StepStarted():
            eta = event.eta_ms if event.eta_ms is not None else _round(mean)
            await conn.execute(
                """
                INSERT INTO message_steps (message_id, step, session_id, idx, total, status,
                                           progress, attempt, started_at, eta_ms, last_seq)
                VALUES ($1, $2, $3, $4, $5, 'running', 0, $6, $7, $8, $9)
                ON CONFLICT (message_id, step) DO UPDATE
                SET idx = excluded.idx, total = excluded.total, status = 'running',
                    progress = 0, detail = '', attempt = excluded.attempt,
                    started_at = excluded.started_at, ended_at = NULL, duration_ms = NULL,
                    error = NULL, error_code = NULL, eta_ms = excluded.eta_ms,
                    last_seq = excluded.last_seq
                """,
                event.message_id,
                event.step,
                event.session_id,
                event.index,
                event.total,
                event.attempt,
                event.at,
                eta,
                seq,
            )
        case StepProgressed():
            eta = _progress_eta(state["started_at"], event, mean)
            await conn.execute(
                """
                UPDATE message_steps
                SET status = 'running', progress = $3, detail = $4,
                    eta_ms = coalesce($5, eta_ms), last_seq = $6
                WHERE message_id = $1 AND step = $2
                """,
                event.message_id,
                event.step,
                event.progress,
                event.detail,
                eta,
                seq,
            )
        case StepCompleted():
            await conn.execute(
                """
                UPDATE message_steps
                SET status = 'completed', progress = 100, ended_at = $3, duration_ms = $4,
                    eta_ms = 0, error = NULL, error_code = NULL, mean_counted = true,
                    last_seq = $5
                WHERE message_id = $1 AND step = $2
                """,
                event.message_id,
                event.step,
                event.at,
                event.duration_ms,
                seq,
            )
            if not state["mean_counted"]:
                await conn.execute(
                    """
                    INSERT INTO step_durations (step, count, mean_ms) VALUES ($1, 1, $2)
                    ON CONFLICT (step) DO UPDATE
                    SET count = step_durations.count + 1,
                        mean_ms = step_durations.mean_ms
                                  + ($2 - step_durations.mean_ms) / (step_durations.count + 1)
                    """,
                    event.step,
                    float(event.duration_ms),
                )
        case StepFailed():
            await conn.execute(
                """
                UPDATE message_steps
                SET status = 'failed', ended_at = $3,
                    duration_ms = coalesce($4, duration_ms), error = $5, error_code = $6,
                    eta_ms = NULL, last_seq = $7
                WHERE message_id = $1 AND step = $2
                """,
                event.message_id,
                event.step,
                event.at,
                event.duration_ms,
                event.error,
                event.code,
                seq,
            )


def _round(value: float | None) -> int | None:
    return None if value is None else max(0, round(value))


def _progress_eta(started_at: Any, event: StepProgressed, mean: float | None) -> int | None:
    """Remaining time: the running mean minus elapsed, else extrapolated from progress."""
    if started_at is None:
        return None
    elapsed_ms = (event.at - started_at).total_seconds() * 1000
    if mean is not None:
        return max(0, round(mean - elapsed_ms))
    if event.progress > 0:
        return max(0, round(elapsed_ms * (100 - event.progress) / event.progress))
    return None


async def _chart_completed(conn: asyncpg.Connection, seq: int, event: ChartCompleted) -> None:
    status = await conn.fetchval("SELECT status FROM chart_tasks WHERE task_id = $1", event.task_id)
    if status == "cancelled":
        return  # the user withdrew it: the late chart is not shown
    await conn.execute(
        f"""
        UPDATE chart_tasks SET status = 'completed', progress = 100, step_progress = 100,
                               eta_ms = 0, error = NULL
        WHERE task_id = $1 AND {_TASK_OPEN}
        """,
        event.task_id,
    )
    await conn.execute(
        """
        INSERT INTO charts (chart_id, task_id, message_id, session_id, kind, title, spec, svg,
                            duration_ms, created_at, seq)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (chart_id) DO NOTHING
        """,
        event.chart_id,
        event.task_id,
        event.message_id,
        event.session_id,
        event.kind,
        event.title,
        event.spec,
        event.svg,
        event.duration_ms,
        event.at,
        seq,
    )
