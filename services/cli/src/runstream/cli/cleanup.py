"""`runstream cleanup`: forget what is settled and older than a cutoff, everywhere.

Three kinds of leftovers, each removed from the stream first and then from the read
models, so an interrupted run is finished by running it again (every step is
idempotent) and a rebuild never brings anything back:

- a session that is idle (no analysis holds it) and whose last activity is older than
  the cutoff: its subjects `rs.<sid>.>`, its dataset objects, its rows in every table;
- the logs of an analysis settled before the cutoff, in a session that stays: its
  `rs.<sid>.msg.<mid>.log_appended` subject and its `message_logs` rows (the steps,
  the script, the result and the charts stay);
- a chart task that ended without a chart (failed or cancelled) before the cutoff:
  `rs.<sid>.chart.<tid>.>` and its `chart_tasks` row. A completed task's chart is part
  of the answer: it goes with its session.

`runstream cleanup`, the periodic run under `runstream up` and the Helm CronJob all
call `cleanup()` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from runstream.bus import Bus, delete_dataset
from runstream.cli.settings import CliSettings
from runstream.contracts import MESSAGE_TERMINAL, sql_list

logger = structlog.get_logger()

# read-model tables keyed by session_id (order: children before the session row)
SESSION_TABLES = (
    "message_logs", "message_steps", "charts", "chart_tasks", "dead_letters",
    "datasets", "session_locks", "messages", "sessions",
)
ENDED_WITHOUT_CHART = ("failed", "cancelled")


@dataclass
class Candidate:
    """A whole session to forget."""

    session_id: str
    owner: str
    last_activity_at: datetime
    messages: int
    datasets: list[str]
    stream_messages: int = 0


@dataclass
class MessageLogs:
    """The logs of one settled analysis in a session that stays."""

    message_id: str
    session_id: str
    settled_at: datetime
    logs: int
    stream_messages: int = 0


@dataclass
class ChartTask:
    """A chart task that ended without a chart."""

    task_id: str
    message_id: str
    session_id: str
    status: str
    updated_at: datetime
    stream_messages: int = 0


@dataclass
class Plan:
    """What one run removes (or, dry, would remove)."""

    sessions: list[Candidate] = field(default_factory=list)
    logs: list[MessageLogs] = field(default_factory=list)
    chart_tasks: list[ChartTask] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sessions or self.logs or self.chart_tasks)

    def keys(self) -> dict[str, list[str]]:
        """The ids it names, per kind: what a dry run and a real run must agree on."""
        return {
            "sessions": [c.session_id for c in self.sessions],
            "logs": [m.message_id for m in self.logs],
            "chart_tasks": [t.task_id for t in self.chart_tasks],
        }


async def find_candidates(conn: Any, cutoff: datetime) -> list[Candidate]:
    rows = await conn.fetch(
        """
        SELECT s.session_id, s.owner, coalesce(s.last_activity_at, s.created_at) AS last_at,
               (SELECT count(*) FROM messages m WHERE m.session_id = s.session_id) AS messages,
               coalesce((SELECT array_agg(d.object_name) FROM datasets d
                         WHERE d.session_id = s.session_id), '{}') AS datasets
        FROM sessions s
        WHERE s.status = 'idle'
          AND NOT EXISTS (SELECT 1 FROM session_locks l
                          WHERE l.session_id = s.session_id AND l.expires_at > now())
          AND coalesce(s.last_activity_at, s.created_at) < $1
        ORDER BY last_at, s.session_id
        """,
        cutoff,
    )
    return [
        Candidate(r["session_id"], r["owner"], r["last_at"], r["messages"], list(r["datasets"]))
        for r in rows
    ]


async def find_logs(conn: Any, cutoff: datetime, skip: set[str]) -> list[MessageLogs]:
    rows = await conn.fetch(
        f"""
        SELECT m.message_id, m.session_id, m.settled_at, count(*) AS logs
        FROM messages m JOIN message_logs l ON l.message_id = m.message_id
        WHERE m.status IN {sql_list(MESSAGE_TERMINAL)} AND m.settled_at < $1
        GROUP BY m.message_id, m.session_id, m.settled_at
        ORDER BY m.settled_at, m.message_id
        """,
        cutoff,
    )
    return [MessageLogs(r["message_id"], r["session_id"], r["settled_at"], r["logs"])
            for r in rows if r["session_id"] not in skip]


async def find_chart_tasks(conn: Any, cutoff: datetime, skip: set[str]) -> list[ChartTask]:
    rows = await conn.fetch(
        f"""
        SELECT task_id, message_id, session_id, status, updated_at FROM chart_tasks
        WHERE status IN {sql_list(ENDED_WITHOUT_CHART)} AND updated_at < $1
        ORDER BY updated_at, task_id
        """,
        cutoff,
    )
    return [ChartTask(r["task_id"], r["message_id"], r["session_id"], r["status"],
                      r["updated_at"]) for r in rows if r["session_id"] not in skip]


async def _count(bus: Bus, subject: str) -> int:
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def cleanup(settings: CliSettings, older_than: timedelta, *, dry_run: bool) -> Plan:
    """Find what is settled and older than `older_than`; unless `dry_run`, remove it."""
    from runstream.store import connect

    cutoff = datetime.now(UTC) - older_than
    conn = await connect(settings.database_url, schema=settings.db_schema)
    try:
        plan = Plan(sessions=await find_candidates(conn, cutoff))
        going = {c.session_id for c in plan.sessions}
        plan.logs = await find_logs(conn, cutoff, going)
        plan.chart_tasks = await find_chart_tasks(conn, cutoff, going)
        if not plan:
            return plan
        async with Bus.connect(settings.bus(), name="runstream-cleanup") as bus:
            await _apply(bus, conn, plan, dry_run=dry_run)
    finally:
        await conn.close()
    if not dry_run:
        logger.info("cleanup.finished", sessions=len(plan.sessions), logs=len(plan.logs),
                    chart_tasks=len(plan.chart_tasks), older_than_s=older_than.total_seconds())
    return plan


async def _apply(bus: Bus, conn: Any, plan: Plan, *, dry_run: bool) -> None:
    subjects = bus.subjects
    for c in plan.sessions:
        subject = subjects.session_all(c.session_id)
        c.stream_messages = await _count(bus, subject)
        if dry_run:
            continue
        await bus.js.purge_stream(bus.stream, subject=subject)
        for object_name in c.datasets:
            await delete_dataset(bus, object_name)
        async with conn.transaction():
            for table in SESSION_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE session_id = $1", c.session_id)
        logger.info("cleanup.session_removed", session_id=c.session_id, owner=c.owner,
                    messages=c.messages, datasets=len(c.datasets),
                    stream_messages=c.stream_messages)
    for m in plan.logs:
        subject = subjects.message(m.session_id, m.message_id, "log_appended")
        m.stream_messages = await _count(bus, subject)
        if dry_run:
            continue
        await bus.js.purge_stream(bus.stream, subject=subject)
        await conn.execute("DELETE FROM message_logs WHERE message_id = $1", m.message_id)
        logger.info("cleanup.logs_removed", session_id=m.session_id, message_id=m.message_id,
                    logs=m.logs, stream_messages=m.stream_messages)
    for t in plan.chart_tasks:
        subject = subjects.chart_all(t.task_id, t.session_id)
        t.stream_messages = await _count(bus, subject)
        if dry_run:
            continue
        await bus.js.purge_stream(bus.stream, subject=subject)
        await conn.execute("DELETE FROM chart_tasks WHERE task_id = $1", t.task_id)
        logger.info("cleanup.chart_task_removed", session_id=t.session_id, task_id=t.task_id,
                    status=t.status, stream_messages=t.stream_messages)


def render(plan: Plan, *, dry_run: bool, older_than: str) -> str:
    verb = "would remove" if dry_run else "removed"
    if not plan:
        return f"nothing settled older than {older_than}"
    lines = [
        f"{verb} session {c.session_id} (owner {c.owner}, last active "
        f"{c.last_activity_at:%Y-%m-%d %H:%M}): {c.messages} messages, "
        f"{len(c.datasets)} datasets, {c.stream_messages} stream messages"
        for c in plan.sessions
    ]
    lines += [
        f"{verb} the logs of message {m.message_id} (session {m.session_id}, settled "
        f"{m.settled_at:%Y-%m-%d %H:%M}): {m.logs} lines, {m.stream_messages} stream messages"
        for m in plan.logs
    ]
    lines += [
        f"{verb} chart task {t.task_id} ({t.status} {t.updated_at:%Y-%m-%d %H:%M}, message "
        f"{t.message_id}): {t.stream_messages} stream messages"
        for t in plan.chart_tasks
    ]
    lines.append(f"{verb} {len(plan.sessions)} sessions, the logs of {len(plan.logs)} "
                 f"analyses, {len(plan.chart_tasks)} chart tasks (settled, older than "
                 f"{older_than})")
    return "\n".join(lines)
