"""Helpers for projector tests: an event script with a deterministic clock, table dumps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import JetStreamContext

from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    Event,
    Lock,
    SessionCreated,
    Subjects,
    encode,
    new_id,
)
from runstream.projector.projector import Projector

SCHEMA = "runstream"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# Every table the projector writes, with the order that makes a dump comparable.
TABLES = {
    "sessions": "session_id",
    "messages": "message_id",
    "message_logs": "message_id, seq",
    "message_steps": "message_id, step",
    "step_durations": "step",
    "session_locks": "session_id",
    "datasets": "dataset_id",
    "chart_tasks": "task_id",
    "charts": "chart_id",
    "dead_letters": "seq",
    "projection_checkpoints": "name",
    "poison_events": "seq",
}


async def dump(conn_or_pool: Any, schema: str = SCHEMA) -> dict[str, list[dict[str, Any]]]:
    """Every read-model row, ordered (poison_events.at is wall-clock, so left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, order in TABLES.items():
        rows = await conn_or_pool.fetch(f'SELECT * FROM "{schema}".{table} ORDER BY {order}')
        out[table] = [
            {k: v for k, v in dict(r).items() if (table, k) != ("poison_events", "at")}
            for r in rows
        ]
    return out


class Script:
    """Builds events of one session with a deterministic clock, publishes them."""

    def __init__(self, js: JetStreamContext, prefix: str, owner: str = "alice") -> None:
        self.js = js
        self.subjects = Subjects(prefix)
        self.owner = owner
        self.session_id = new_id()
        self.tick = 0

    def at(self) -> datetime:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick)

    def base(self) -> dict[str, Any]:
        return {"event_id": new_id(), "at": self.at(), "session_id": self.session_id}

    def lock(self, message_id: str, at: datetime | None = None) -> Lock:
        start = at or T0
        return Lock(message_id=message_id, acquired_at=start, expires_at=start + timedelta(1))

    def created(self, title: str = "sales") -> SessionCreated:
        return SessionCreated(**self.base(), owner=self.owner, title=title)

    def requested(self, question: str = "how many rows?", **kw: Any) -> AnalysisRequested:
        mid = kw.pop("message_id", new_id())
        base = self.base()
        return AnalysisRequested(
            **base,
            message_id=mid,
            user_message_id=kw.pop("user_message_id", new_id()),
            owner=self.owner,
            question=question,
            lock=self.lock(mid, base["at"]),
            **kw,
        )

    def settled(self, message_id: str, status: str = "completed", **kw: Any) -> AnalysisSettled:
        return AnalysisSettled(**self.base(), message_id=message_id, status=status, **kw)

    def msg(self, cls: type[Event], message_id: str, **kw: Any) -> Any:
        base = self.base()
        if "at" in kw:
            base["at"] = kw.pop("at")
        return cls(**base, message_id=message_id, **kw)

    def chart(self, cls: type[Event], task_id: str, message_id: str, **kw: Any) -> Any:
        return cls(**self.base(), task_id=task_id, message_id=message_id, **kw)

    async def publish(self, *events: Event) -> list[int]:
        seqs = []
        for event in events:
            ack = await self.js.publish(
                self.subjects.for_event(event),
                encode(event),
                headers={"Nats-Msg-Id": event.event_id},
            )
            seqs.append(ack.seq)
        return seqs

    async def publish_raw(self, subject: str, data: bytes) -> int:
        return (await self.js.publish(subject, data)).seq


async def read_items(
    js: JetStreamContext, stream: str, seqs: list[int]
) -> list[tuple[int, str, bytes]]:
    items = []
    for seq in seqs:
        msg = await js.get_msg(stream, seq)
        assert msg.seq is not None and msg.subject is not None
        items.append((msg.seq, msg.subject, msg.data or b""))
    return items


class Fold:
    """Publish events and fold them in one batch: the common step of every fold test."""

    def __init__(self, script: Script, projector: Projector, js: JetStreamContext, stream: Any):
        self.script, self.projector, self.js, self.stream = script, projector, js, stream

    async def __call__(self, *events: Event) -> int:
        seqs = await self.script.publish(*events)
        items = await read_items(self.js, self.stream.stream, seqs)
        return await self.projector.apply_batch(items)
