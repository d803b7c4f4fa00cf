"""`runstream failed list|retry`: dead letters, and a new analysis of a dead one's question."""

from __future__ import annotations

from typing import Any

import asyncpg

from runstream.bus import Bus, SessionAggregate
from runstream.cli.settings import CliSettings
from runstream.contracts import new_id


async def list_dead_letters(settings: CliSettings, limit: int) -> list[dict[str, Any]]:
    from runstream.store import create_pool
    from runstream.store.queries import ReadModels

    pool = await create_pool(settings.database_url, schema=settings.db_schema, max_size=2)
    try:
        return await ReadModels(pool).list_dead_letters(limit=limit)
    finally:
        await pool.close()


def render_dead_letters(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no dead letters"
    lines = [f"{'at':<20} {'message':<28} {'consumer':<18} {'deliv':>5}  reason"]
    for r in rows:
        at = r["at"].strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{at:<20} {r['message_id']:<28} {r['consumer']:<18} {r['deliveries']:>5}  "
            f"{r['reason']}"
        )
        lines.append(f"{'':<20} session {r['session_id']}  subject {r['subject']}")
    return "\n".join(lines)


class RetryRefused(Exception):
    pass


async def find_question(settings: CliSettings, message_id: str) -> dict[str, Any]:
    """The session, owner, question and dataset of an analysis message."""
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.db_schema}
    )
    try:
        row = await conn.fetchrow(
            """
            SELECT m.session_id, m.owner, m.role, m.dataset_id,
                   coalesce(nullif(m.question, ''), nullif(u.question, ''), u.content, '')
                       AS question
            FROM messages m LEFT JOIN messages u ON u.message_id = m.user_message_id
            WHERE m.message_id = $1
            """,
            message_id,
        )
    finally:
        await conn.close()
    if row is None:
        raise RetryRefused(f"no message {message_id} in the read models")
    if row["role"] != "assistant":
        raise RetryRefused(f"{message_id} is a user message; retry the analysis message")
    if not row["question"]:
        raise RetryRefused(f"message {message_id} has no question to ask again")
    return dict(row)


async def retry(settings: CliSettings, message_id: str) -> dict[str, str]:
    found = await find_question(settings, message_id)
    new_message, user_message = new_id(), new_id()
    async with Bus.connect(settings.bus(), name="runstream-failed-retry") as bus:
        committed = await SessionAggregate(bus).request_analysis(
            found["session_id"], owner=found["owner"], question=found["question"],
            message_id=new_message, user_message_id=user_message,
            dataset_id=found["dataset_id"], retry_of=message_id,
        )
    return {
        "session_id": found["session_id"], "message_id": new_message,
        "user_message_id": user_message, "seq": str(committed.seq),
    }
