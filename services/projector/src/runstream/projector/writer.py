"""The batch fold's I/O half: load the rows a batch needs, write what it changed.

A constant number of statements per batch and table, whatever the batch size: one
`SELECT … WHERE key = ANY($1)` per table to load, one
`INSERT … SELECT FROM json_to_recordset($1)` per table to write (`ON CONFLICT … DO
UPDATE` for the rows the reducers keep whole, `DO NOTHING` for the append-only tables):
the rows of a table travel as one JSON document, encoded by msgspec in one call. Why
that rather than `unnest` of one array per column, or `COPY` into a temporary table:
docs/projector.md ("The batch fold").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from runstream.projector.fold import Keys, Row, State, Table


@dataclass(frozen=True)
class Spec:
    """One read-model table as the writer sees it."""

    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (column, Postgres type), in insert order
    # Columns never read back by a fold: not loaded, and written only when a batch set
    # them (NULL in a row means "unchanged"): the result of a message, its largest value.
    lazy: frozenset[str] = frozenset()
    append_only: bool = False

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def upsert_sql(self) -> str:
        cols = ", ".join(f'"{name}"' for name in self.names)
        record = ", ".join(f'"{name}" {kind}' for name, kind in self.columns)
        sql = (
            f"INSERT INTO {self.name} ({cols}) SELECT {cols} "
            f"FROM json_to_recordset($1::json) AS s({record})"
        )
        if self.append_only:
            return sql + " ON CONFLICT DO NOTHING"
        sets = ", ".join(
            f'"{name}" = coalesce(excluded."{name}", {self.name}."{name}")'
            if name in self.lazy
            else f'"{name}" = excluded."{name}"'
            for name in self.names
            if name not in self.key
        )
        return f"{sql} ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {sets}"

    def select_sql(self) -> str:
        cols = ", ".join(name for name in self.names if name not in self.lazy)
        return f"SELECT {cols} FROM {self.name} WHERE {self.key[0]} = ANY($1::text[])"


def _spec(name: str, key: str, columns: str, **kw: Any) -> Spec:
    cols = tuple(
        (part.split()[0], " ".join(part.split()[1:])) for part in columns.split(",") if part.strip()
    )
    return Spec(name=name, key=tuple(key.split(",")), columns=cols, **kw)


SESSIONS = _spec(
    "sessions",
    "session_id",
    """
    session_id text, owner text, title text, created_at timestamptz, status text,
    active_message_id text, last_activity_at timestamptz, last_settled_at timestamptz,
    last_read_at timestamptz, has_notification boolean, last_seq bigint""",
)
MESSAGES = _spec(
    "messages",
    "message_id",
    """
    message_id text, session_id text, role text, owner text, user_message_id text,
    reply_message_id text, question text, content text, status text, attempt integer,
    created_at timestamptz, sort_key bigint, started_at timestamptz, settled_at timestamptz,
    summary text, error jsonb, result jsonb, script jsonb, retry_of text, dataset_id text,
    last_seq bigint, settled_seq bigint""",
    lazy=frozenset({"result"}),
)
STEPS = _spec(
    "message_steps",
    "message_id,step",
    """
    message_id text, step text, session_id text, idx integer, total integer, status text,
    progress float8, detail text, attempt integer, started_at timestamptz,
    ended_at timestamptz, duration_ms bigint, error text, error_code text, eta_ms bigint,
    mean_counted boolean, last_seq bigint""",
)
# Keyed by (part, step): each partition keeps its own running means (the reducers see
# one partition's rows, keyed by step; the writer adds the partition).
DURATIONS = _spec(
    "step_durations", "part,step", "part integer, step text, count bigint, mean_ms float8"
)
TASKS = _spec(
    "chart_tasks",
    "task_id",
    """
    task_id text, message_id text, session_id text, owner text, status text,
    progress float8, current_step text, step_progress float8, eta_ms bigint,
    adjustment_query text, force_create boolean, auto boolean, cancel_requested boolean,
    error text, error_code text, created_at timestamptz, updated_at timestamptz,
    last_seq bigint""",
)
LOCKS = _spec(
    "session_locks",
    "session_id",
    """
    session_id text, message_id text, acquired_at timestamptz, expires_at timestamptz""",
)
DATASETS = _spec(
    "datasets",
    "dataset_id",
    """
    dataset_id text, session_id text, name text, format text, object_name text,
    table_name text, size_bytes bigint, row_count bigint, columns jsonb, sample_rows jsonb,
    created_at timestamptz, last_seq bigint""",
    append_only=True,
)
LOGS = _spec(
    "message_logs",
    "message_id,seq",
    """
    message_id text, seq bigint, event_id text, session_id text, at timestamptz, level text,
    text text, step text, truncated boolean""",
    append_only=True,
)
CHARTS = _spec("charts", "chart_id", """
    chart_id text, task_id text, message_id text, session_id text, kind text, title text,
    spec jsonb, svg text, duration_ms bigint, created_at timestamptz, seq bigint""",
    append_only=True)  # fmt: skip
DEAD_LETTERS = _spec(
    "dead_letters",
    "seq",
    """
    seq bigint, message_id text, session_id text, consumer text, stream_seq bigint,
    deliveries integer, subject text, reason text, at timestamptz""",
    append_only=True,
)
POISON = _spec("poison_events", "seq", "seq bigint, subject text, data bytea, error text",
               append_only=True)  # fmt: skip

_SQL = {spec.name: spec.upsert_sql() for spec in (
    SESSIONS, MESSAGES, STEPS, DURATIONS, TASKS, LOCKS, DATASETS, LOGS, CHARTS, DEAD_LETTERS,
    POISON,
)}  # fmt: skip
_SELECT = {spec.name: spec.select_sql() for spec in (SESSIONS, MESSAGES, STEPS, TASKS)}
_DELETE_LOCKS = "DELETE FROM session_locks WHERE session_id = ANY($1::text[])"


async def load(conn: asyncpg.Connection, keys: Keys, part: int = 0) -> State:
    """The current rows of everything `keys` names (five statements at most); the
    running step means are those of partition `part`."""
    state = State(part=part)
    await _load(conn, SESSIONS, keys.sessions, state.sessions, lambda r: r["session_id"])
    await _load(conn, MESSAGES, keys.messages, state.messages, lambda r: r["message_id"])
    if keys.messages:
        for record in await conn.fetch(_SELECT["message_steps"], list(keys.messages)):
            row = dict(record)
            state.steps.rows[(row["message_id"], row["step"])] = row
            state.step_names(row["message_id"]).append(row["step"])
        for record in await conn.fetch(
            "SELECT step, count, mean_ms FROM step_durations WHERE part = $1", part
        ):
            state.durations.rows[record["step"]] = dict(record)
    await _load(conn, TASKS, keys.tasks, state.tasks, lambda r: r["task_id"])
    return state


async def _load(
    conn: asyncpg.Connection, spec: Spec, keys: Iterable[str], table: Table, key: Any
) -> None:
    wanted = list(keys)
    if not wanted:
        return
    table.rows.update(dict.fromkeys(wanted))
    for record in await conn.fetch(_SELECT[spec.name], wanted):
        row = dict(record)
        table.rows[key(row)] = row


async def write(conn: asyncpg.Connection, state: State) -> int:
    """Apply every change in `state`; returns the number of statements sent."""
    statements = 0
    for spec, table in (
        (SESSIONS, state.sessions), (MESSAGES, state.messages), (STEPS, state.steps),
        (DURATIONS, state.durations), (TASKS, state.tasks),
    ):  # fmt: skip
        rows = [row for _, row in table.changed()]
        if spec is DURATIONS:
            rows = [{**row, "part": state.part} for row in rows]
        statements += await _upsert(conn, spec, rows)
    gone = [sid for sid, lock in state.locks.items() if lock is None]
    if gone:
        await conn.execute(_DELETE_LOCKS, gone)
        statements += 1
    statements += await _upsert(conn, LOCKS, [lock for lock in state.locks.values() if lock])
    for spec, appends in (
        (DATASETS, state.datasets), (LOGS, state.logs), (CHARTS, state.charts),
        (DEAD_LETTERS, state.dead_letters), (POISON, state.poison),
    ):  # fmt: skip
        rows = appends.rows
        if spec is POISON:  # bytes travel as bytea's hex input form
            rows = [{**row, "data": "\\x" + row["data"].hex()} for row in rows]
        statements += await _upsert(conn, spec, rows)
    return statements


async def _upsert(conn: asyncpg.Connection, spec: Spec, rows: Sequence[Row]) -> int:
    if not rows:
        return 0
    await conn.execute(_SQL[spec.name], rows)  # one JSON document (the pool's codec)
    return 1
