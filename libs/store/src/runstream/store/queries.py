"""Read-model queries for the gateway and the CLI: plain dicts, each with `as_of_seq`.

A read that spans several queries runs in one REPEATABLE READ read-only transaction, and
reads the projector checkpoint inside that same snapshot. The projector commits rows and
checkpoint together, so `as_of_seq` is exactly the last stream sequence the snapshot
reflects: streaming from `after_seq=as_of_seq` yields precisely what it lacks.

With P partitions (`partitions` > 1) the position of a read is per session: a read of
one session (its session, messages, a message, its logs, charts, analysis status) is as
of its partition's position (`source_seq` of the partition's checkpoint); a read without
a session (the session list) is as of the least position of all partitions
(docs/read-models.md, "Positions with partitions").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg
import structlog

from runstream.contracts import ACTIVE, partition_of, sql_list

logger = structlog.get_logger()

NOTIFY_CHANNEL = "rs_projected"
PROJECTOR = "projector"

_SESSION_COLS = """
    session_id, owner, title, created_at, status, active_message_id, last_activity_at,
    last_settled_at, last_read_at, has_notification, last_seq
"""
_MESSAGE_COLS = """
    message_id, session_id, role, owner, user_message_id, reply_message_id, question, content,
    status, attempt, created_at, started_at, settled_at, settled_seq, summary, error, result,
    script,
    retry_of, dataset_id, last_seq
"""
_STEP_COLS = """
    step, idx, total, status, progress, detail, attempt, started_at, ended_at, duration_ms,
    error, error_code, eta_ms
"""
_LOG_COLS = "seq, event_id, at, level, text, step"
_CHART_COLS = "chart_id, task_id, message_id, session_id, kind, title, spec, svg, created_at"
_TASK_COLS = """
    task_id, message_id, session_id, owner, status, progress, current_step, step_progress,
    eta_ms, adjustment_query, force_create, auto, cancel_requested, error, error_code,
    created_at, updated_at, last_seq
"""
_DATASET_COLS = """
    dataset_id, session_id, name, format, object_name, table_name, size_bytes, row_count,
    columns, sample_rows, created_at
"""
_ACTIVE_TASK = f"status IN {sql_list(ACTIVE)}"
_CHECKPOINT_SQL = "SELECT coalesce((SELECT seq FROM projection_checkpoints WHERE name = $1), 0)"
_SOURCE_SQL = (
    "SELECT coalesce((SELECT source_seq FROM projection_checkpoints WHERE name = $1), 0)"
)
# The least position of all partitions (0 while one of them has no checkpoint yet).
_LEAST_SQL = """
SELECT CASE WHEN count(*) = $2 THEN min(coalesce(source_seq, 0)) ELSE 0 END
FROM projection_checkpoints WHERE name = ANY($1::text[])
"""
_SESSION_OF_MESSAGE = "SELECT session_id FROM messages WHERE message_id = $1"
# Each partition keeps its own running means: combined, weighted by their counts.
_ESTIMATES_SQL = """
SELECT step, sum(count * mean_ms) / nullif(sum(count), 0) AS mean_ms
FROM step_durations GROUP BY step HAVING sum(count) > 0 ORDER BY step
"""
_ESTIMATE_SQL = """
SELECT sum(count * mean_ms) / nullif(sum(count), 0) FROM step_durations WHERE step = $1
"""


def checkpoint_name(partitions: int, part: int) -> str:
    """The checkpoint row of partition `part` of `partitions` (`projector` when P=1)."""
    return PROJECTOR if partitions <= 1 else f"{PROJECTOR}.{partitions}.{part}"


def parse_notify(payload: str) -> tuple[int | None, int] | None:
    """`rs_projected` payload -> (partition or None for the single projector, position)."""
    part, _, seq = payload.rpartition(":")
    try:
        return (int(part) if part else None), int(seq)
    except ValueError:
        return None


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


class ReadModels:
    """Queries over the read models of one schema (the pool's search_path).

    `dsn` enables LISTEN-based `wait_for_seq` on a dedicated connection (not a pool
    connection); without it waiting falls back to polling alone. When that connection is
    lost (Postgres restarted, backend terminated) it is opened again in the background,
    with backoff, until it is back or the models are closed.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        dsn: str | None = None,
        projector: str = PROJECTOR,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        partitions: int = 1,
    ) -> None:
        self._pool = pool
        self.partitions = partitions
        self._names = [checkpoint_name(partitions, k) for k in range(partitions)]
        self._dsn = dsn
        self._projector = projector
        self._poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._listener: asyncpg.Connection | None = None
        self._listener_lock = asyncio.Lock()
        self._listener_retry_at = 0.0
        self._relisten: asyncio.Task[None] | None = None
        self._closed = False
        # partition (0 for the single projector) -> the latest position NOTIFY reported
        self._notified: dict[int, int] = {}
        # (partition, or None for the least of all; position; woken when reached)
        self._waiters: set[tuple[int | None, int, asyncio.Future[None]]] = set()

    # --- plumbing ---------------------------------------------------------------------
    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield conn

    def partition(self, session_id: str | None) -> int | None:
        """The partition whose position a read of `session_id` is as of (None: the least
        of all partitions; 0 for the single projector)."""
        if self.partitions <= 1:
            return 0
        return None if session_id is None else partition_of(session_id, self.partitions)

    async def _as_of(self, conn: asyncpg.Connection, session_id: str | None = None) -> int:
        """The position this snapshot reflects for a read of `session_id` (None: a read
        across sessions)."""
        if self.partitions <= 1:
            return int(await conn.fetchval(_CHECKPOINT_SQL, self._projector))
        part = self.partition(session_id)
        if part is None:
            return int(await conn.fetchval(_LEAST_SQL, self._names, self.partitions))
        return int(await conn.fetchval(_SOURCE_SQL, self._names[part]))

    async def _as_of_message(self, conn: asyncpg.Connection, message_id: str) -> int:
        session_id = None
        if self.partitions > 1:
            session_id = await conn.fetchval(_SESSION_OF_MESSAGE, message_id)
        return await self._as_of(conn, session_id)

    # --- sessions ---------------------------------------------------------------------
    async def session_owner(self, session_id: str) -> str | None:
        """Whose the session is (None: no such session): one key lookup, no snapshot."""
        owner = await self._pool.fetchval(
            "SELECT owner FROM sessions WHERE session_id = $1", session_id
        )
        return None if owner is None else str(owner)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session with its `lock` ({message_id, acquired_at, expires_at} or None)."""
        async with self._snapshot() as conn:
            as_of = await self._as_of(conn, session_id)
            row = await conn.fetchrow(
                f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = $1", session_id
            )
            if row is None:
                return None
            lock = await conn.fetchrow(
                "SELECT message_id, acquired_at, expires_at FROM session_locks"
                " WHERE session_id = $1",
                session_id,
            )
        return {**dict(row), "lock": dict(lock) if lock else None, "as_of_seq": as_of}

    async def list_sessions(self, owner: str, *, limit: int = 200) -> dict[str, Any]:
        """{sessions: [session, most recently active first], as_of_seq}."""
        async with self._snapshot() as conn:
            as_of = await self._as_of(conn)
            rows = await conn.fetch(
                f"""
                SELECT {_SESSION_COLS} FROM sessions WHERE owner = $1
                ORDER BY coalesce(last_activity_at, created_at) DESC, session_id
                LIMIT $2
                """,
                owner,
                limit,
            )
        return {"sessions": _rows(rows), "as_of_seq": as_of}

    # --- messages ---------------------------------------------------------------------
    async def list_messages(self, session_id: str) -> dict[str, Any]:
        """{session_id, messages: [oldest first, each with `charts`], as_of_seq}."""
        async with self._snapshot() as conn:
            as_of = await self._as_of(conn, session_id)
            rows = await conn.fetch(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE session_id = $1 ORDER BY sort_key",
                session_id,
            )
            charts = await conn.fetch(
                f"SELECT {_CHART_COLS} FROM charts WHERE session_id = $1 ORDER BY seq",
                session_id,
            )
        by_message: dict[str, list[dict[str, Any]]] = {}
        for chart in charts:
            by_message.setdefault(chart["message_id"], []).append(dict(chart))
        messages = [{**dict(r), "charts": by_message.get(r["message_id"], [])} for r in rows]
        return {"session_id": session_id, "messages": messages, "as_of_seq": as_of}

    async def get_message(self, message_id: str, *, details: bool = True) -> dict[str, Any] | None:
        """The message with `steps` (by idx), `logs` (by seq), `charts`, and `as_of_seq`.

        `details=False` skips steps, logs and charts (a cheap existence/owner/status check).
        """
        async with self._snapshot() as conn:
            row = await conn.fetchrow(
                f"SELECT {_MESSAGE_COLS} FROM messages WHERE message_id = $1", message_id
            )
            if row is None:
                return None
            as_of = await self._as_of(conn, row["session_id"])
            message = {**dict(row), "as_of_seq": as_of}
            if details:
                message.update(await self._message_details(conn, message_id))
        return message

    async def _message_details(self, conn: asyncpg.Connection, message_id: str) -> dict[str, Any]:
        steps = await conn.fetch(
            f"SELECT {_STEP_COLS} FROM message_steps WHERE message_id = $1 ORDER BY idx, step",
            message_id,
        )
        logs = await conn.fetch(
            f"SELECT {_LOG_COLS} FROM message_logs WHERE message_id = $1 ORDER BY seq",
            message_id,
        )
        charts = await conn.fetch(
            f"SELECT {_CHART_COLS} FROM charts WHERE message_id = $1 ORDER BY seq", message_id
        )
        return {"steps": _rows(steps), "logs": _rows(logs), "charts": _rows(charts)}

    async def get_logs(
        self, message_id: str, after_seq: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        """{message_id, logs: [seq > after_seq, by seq], has_more, as_of_seq}.

        With `has_more`, ask again from the last returned seq before streaming.
        """
        async with self._snapshot() as conn:
            as_of = await self._as_of_message(conn, message_id)
            rows = await conn.fetch(
                f"""
                SELECT {_LOG_COLS} FROM message_logs
                WHERE message_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
                """,
                message_id,
                after_seq,
                limit + 1,
            )
        return {
            "message_id": message_id,
            "logs": _rows(rows[:limit]),
            "has_more": len(rows) > limit,
            "as_of_seq": as_of,
        }

    async def analysis_status(self, session_id: str) -> dict[str, Any] | None:
        """The page-refresh call: {session_id, is_analyzing, message_id, status, logs, steps,
        lock, step_estimates, as_of_seq}. The message is the active one while analyzing,
        else the latest analysis of the session (None in a session that never ran one).
        `step_estimates` is the running mean duration of each step (ms), the basis of an
        ETA that does not depend on when the page was opened (with partitions, each
        keeps its own means: combined as sum(count * mean) / sum(count))."""
        async with self._snapshot() as conn:
            as_of = await self._as_of(conn, session_id)
            session = await conn.fetchrow(
                "SELECT status, active_message_id FROM sessions WHERE session_id = $1",
                session_id,
            )
            if session is None:
                return None
            is_analyzing = session["status"] == "analyzing"
            message = None
            if is_analyzing and session["active_message_id"]:
                message = await conn.fetchrow(
                    "SELECT message_id, status FROM messages WHERE message_id = $1",
                    session["active_message_id"],
                )
            if message is None:
                message = await conn.fetchrow(
                    """
                    SELECT message_id, status FROM messages
                    WHERE session_id = $1 AND role = 'assistant'
                    ORDER BY sort_key DESC LIMIT 1
                    """,
                    session_id,
                )
            lock = await conn.fetchrow(
                "SELECT message_id, acquired_at, expires_at FROM session_locks"
                " WHERE session_id = $1",
                session_id,
            )
            logs: list[dict[str, Any]] = []
            steps: list[dict[str, Any]] = []
            if message is not None:
                details = await self._message_details(conn, message["message_id"])
                logs, steps = details["logs"], details["steps"]
            estimates = await conn.fetch(_ESTIMATES_SQL)
        return {
            "session_id": session_id,
            "is_analyzing": is_analyzing,
            "message_id": message["message_id"] if message else None,
            "status": message["status"] if message else None,
            "logs": logs,
            "steps": steps,
            "lock": dict(lock) if lock else None,
            "step_estimates": {r["step"]: max(0, round(r["mean_ms"])) for r in estimates},
            "as_of_seq": as_of,
        }

    # --- datasets ---------------------------------------------------------------------
    async def get_dataset(self, dataset_id: str) -> dict[str, Any] | None:
        row = await self._pool.fetchrow(
            f"SELECT {_DATASET_COLS} FROM datasets WHERE dataset_id = $1", dataset_id
        )
        return dict(row) if row else None

    async def list_datasets(self, session_id: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            f"SELECT {_DATASET_COLS} FROM datasets WHERE session_id = $1"
            " ORDER BY created_at, dataset_id",
            session_id,
        )
        return _rows(rows)

    # --- charts -----------------------------------------------------------------------
    async def get_chart_task(self, task_id: str) -> dict[str, Any] | None:
        """The task (progress, current_step, step_progress, eta_ms, ...) with its `chart`."""
        async with self._snapshot() as conn:
            row = await conn.fetchrow(
                f"SELECT {_TASK_COLS} FROM chart_tasks WHERE task_id = $1", task_id
            )
            if row is None:
                return None
            as_of = await self._as_of(conn, row["session_id"])
            chart = await conn.fetchrow(
                f"SELECT {_CHART_COLS} FROM charts WHERE task_id = $1 ORDER BY seq DESC LIMIT 1",
                task_id,
            )
        return {**dict(row), "chart": dict(chart) if chart else None, "as_of_seq": as_of}

    async def list_charts(self, message_id: str) -> dict[str, Any]:
        """{message_id, charts, active_tasks, has_active_tasks, as_of_seq}."""
        async with self._snapshot() as conn:
            as_of = await self._as_of_message(conn, message_id)
            charts = await conn.fetch(
                f"SELECT {_CHART_COLS} FROM charts WHERE message_id = $1 ORDER BY seq",
                message_id,
            )
            tasks = await conn.fetch(
                f"""
                SELECT {_TASK_COLS} FROM chart_tasks
                WHERE message_id = $1 AND {_ACTIVE_TASK} ORDER BY created_at, task_id
                """,
                message_id,
            )
        return {
            "message_id": message_id,
            "charts": _rows(charts),
            "active_tasks": _rows(tasks),
            "has_active_tasks": bool(tasks),
            "as_of_seq": as_of,
        }

    # --- operations -------------------------------------------------------------------
    async def list_dead_letters(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Deliveries that ran out of attempts, newest first."""
        rows = await self._pool.fetch(
            """
            SELECT seq, message_id, session_id, consumer, stream_seq, deliveries, subject,
                   reason, at
            FROM dead_letters ORDER BY at DESC, seq DESC LIMIT $1
            """,
            limit,
        )
        return _rows(rows)

    async def step_eta_ms(self, step: str) -> int | None:
        """The running mean duration of a step, the basis of every ETA (None before data)."""
        mean = await self._pool.fetchval(_ESTIMATE_SQL, step)
        return None if mean is None else round(mean)

    async def checkpoint(self, name: str = PROJECTOR) -> int:
        """The projector's position: its checkpoint, or with partitions the least
        position of all partitions (see `position`)."""
        if self.partitions > 1 and name == PROJECTOR:
            return await self.position()
        return int(await self._pool.fetchval(_CHECKPOINT_SQL, name))

    async def position(self, session_id: str | None = None) -> int:
        """The stream sequence the read models cover for reads of `session_id` (None:
        reads across sessions)."""
        async with self._pool.acquire() as conn:
            return await self._as_of(conn, session_id)

    # --- waiting on a position --------------------------------------------------------
    async def wait_for_seq(
        self, seq: int, timeout: float, session_id: str | None = None
    ) -> bool:
        """True once the read models cover `seq` for reads of `session_id` (its
        partition's position; None: every partition's); False at the timeout.

        Woken by NOTIFY on `rs_projected` (one shared listener connection per ReadModels,
        outside the pool), with a poll every `poll_interval` as the fallback. A pool
        connection is only borrowed for each single position read.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        part = self.partition(session_id)
        if self._reached(part, seq):
            return True
        await self._ensure_listener()
        waiter: tuple[int | None, int, asyncio.Future[None]] = (part, seq, loop.create_future())
        self._waiters.add(waiter)  # registered before the first read: no lost wake-up
        future = waiter[2]
        try:
            while True:
                if future.done() or await self.position(session_id) >= seq:
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(future), min(remaining, self._poll_interval)
                    )
                if future.done():
                    return True
        finally:
            self._waiters.discard(waiter)
            if not future.done():
                future.cancel()

    def _reached(self, part: int | None, seq: int) -> bool:
        """Whether NOTIFY already reported a position >= seq (for `part`, or for every
        partition when None)."""
        if part is not None:
            return self._notified.get(part, 0) >= seq
        if len(self._notified) < self.partitions:
            return False
        return min(self._notified.values()) >= seq

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        parsed = parse_notify(payload)
        if parsed is None:
            return
        part, seq = parsed
        if (part is None) != (self.partitions <= 1) or (part or 0) >= self.partitions:
            return  # another partitioning than this reader's: its polls still see it
        # The latest, not the largest: notifications arrive in commit order, and a
        # rebuild from a recreated stream moves the checkpoint back.
        self._notified[part or 0] = seq
        for target_part, target, fut in list(self._waiters):
            if not fut.done() and self._reached(target_part, target):
                fut.set_result(None)

    def _on_listener_lost(self, conn: object) -> None:
        if self._listener is conn:
            self._listener = None
        if self._closed or self._dsn is None:
            return
        if self._relisten is None or self._relisten.done():
            # Waiters still poll meanwhile; this only brings back the quick wake-up.
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.2
        while not self._closed and self._listener is None:
            await self._ensure_listener(now=True)
            if self._listener is not None:
                logger.info("store.listen_restored")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _ensure_listener(self, *, now: bool = False) -> None:
        if self._listener is not None and self._listener.is_closed():
            self._listener = None  # lost without the termination callback having run yet
        if self._dsn is None or self._listener is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        if not now and loop.time() < self._listener_retry_at:
            return
        async with self._listener_lock:
            if self._listener is not None:
                return
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                try:
                    await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                except BaseException:
                    conn.terminate()
                    raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # Polling still works; try LISTEN again in a while.
                self._listener_retry_at = loop.time() + 5.0
                logger.warning("store.listen_failed", error=str(exc) or type(exc).__name__)
                return
            conn.add_termination_listener(self._on_listener_lost)
            if self._closed:
                await conn.close()
                return
            self._listener = conn

    async def close(self) -> None:
        self._closed = True
        if self._relisten is not None:
            self._relisten.cancel()
            with suppress(asyncio.CancelledError):
                await self._relisten
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            await conn.close()
        for _, _, fut in list(self._waiters):
            fut.cancel()
