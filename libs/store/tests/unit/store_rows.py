"""Rows written the way the projector writes them (store tests do not import services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

T0 = datetime(2025, 1, 1, tzinfo=UTC)


async def set_checkpoint(conn: Any, seq: int) -> None:
    await conn.execute(
        """
        INSERT INTO projection_checkpoints (name, seq) VALUES ('projector', $1)
        ON CONFLICT (name) DO UPDATE SET seq = excluded.seq
        """,
        seq,
    )


async def session(conn: Any, sid: str, owner: str = "alice", **kw: Any) -> None:
    cols = {
        "session_id": sid,
        "owner": owner,
        "title": "t",
        "created_at": T0,
        "last_activity_at": T0,
        "last_seq": 1,
        **kw,
    }
    await _insert(conn, "sessions", cols)


async def message(conn: Any, mid: str, sid: str, sort_key: int, **kw: Any) -> None:
    cols = {
        "message_id": mid,
        "session_id": sid,
        "role": "assistant",
        "owner": "alice",
        "question": "q",
        "status": "pending",
        "created_at": T0 + timedelta(seconds=sort_key),
        "sort_key": sort_key,
        "last_seq": sort_key,
        **kw,
    }
    await _insert(conn, "messages", cols)


async def log(conn: Any, mid: str, seq: int, text: str, sid: str = "s1") -> None:
    await _insert(
        conn,
        "message_logs",
        {
            "message_id": mid,
            "seq": seq,
            "event_id": f"e{seq}",
            "session_id": sid,
            "at": T0 + timedelta(seconds=seq),
            "level": "info",
            "text": text,
        },
    )


async def _insert(conn: Any, table: str, cols: dict[str, Any]) -> None:
    names = ", ".join(cols)
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    await conn.execute(f"INSERT INTO {table} ({names}) VALUES ({params})", *cols.values())


async def insert(pool: asyncpg.Pool, table: str, **cols: Any) -> None:
    async with pool.acquire() as conn:
        await _insert(conn, table, cols)
