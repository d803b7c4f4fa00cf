"""`runstream cleanup`: forget settled sessions older than a cutoff, everywhere.

A session qualifies when it is idle (no analysis holds it) and its last activity is
older than the cutoff. For each: purge its subjects from the stream, delete its dataset
objects, then delete its read-model rows. The stream goes first, so an interrupted run
is finished by running it again (every step is idempotent), and a rebuild never brings
a cleaned-up session back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runstream.bus import Bus, delete_dataset
from runstream.cli.settings import CliSettings

# read-model tables keyed by session_id (order: children before the session row)
SESSION_TABLES = (
    "message_logs", "message_steps", "charts", "chart_tasks", "dead_letters",
    "datasets", "session_locks", "messages", "sessions",
)


@dataclass
class Candidate:
    session_id: str
    owner: str
    last_activity_at: datetime
    messages: int
    datasets: list[str]
    stream_messages: int = 0


async def find_candidates(conn: object, cutoff: datetime) -> list[Candidate]:
    rows = await conn.fetch(  # type: ignore[attr-defined]
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
        ORDER BY last_at
        """,
        cutoff,
    )
    return [
        Candidate(r["session_id"], r["owner"], r["last_at"], r["messages"], list(r["datasets"]))
        for r in rows
    ]


async def cleanup(
    settings: CliSettings, older_than: timedelta, *, dry_run: bool
) -> list[Candidate]:
    from runstream.store import connect

    cutoff = datetime.now(UTC) - older_than
    conn = await connect(settings.database_url, schema=settings.db_schema)
    try:
        candidates = await find_candidates(conn, cutoff)
        if not candidates:
            return []
        async with Bus.connect(settings.bus(), name="runstream-cleanup") as bus:
            for c in candidates:
                subject = bus.subjects.session_all(c.session_id)
                info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
                c.stream_messages = sum((info.state.subjects or {}).values())
                if dry_run:
                    continue
                await bus.js.purge_stream(bus.stream, subject=subject)
                for object_name in c.datasets:
                    await delete_dataset(bus, object_name)
                async with conn.transaction():
                    for table in SESSION_TABLES:
                        sql = f"DELETE FROM {table} WHERE session_id = $1"
                        await conn.execute(sql, c.session_id)
    finally:
        await conn.close()
    return candidates


def render(candidates: list[Candidate], *, dry_run: bool, older_than: str) -> str:
    verb = "would remove" if dry_run else "removed"
    if not candidates:
        return f"nothing settled older than {older_than}"
    lines = [
        f"{verb} session {c.session_id} (owner {c.owner}, last active "
        f"{c.last_activity_at:%Y-%m-%d %H:%M}): {c.messages} messages, "
        f"{len(c.datasets)} datasets, {c.stream_messages} stream messages"
        for c in candidates
    ]
    lines.append(f"{verb} {len(candidates)} sessions")
    return "\n".join(lines)
