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
    "step_durations": "part, step",
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


async def publish_story(script: Script) -> list[int]:
    """A whole session: dataset, a completed analysis with a chart, a cancelled one, a
    dead-lettered one, an ad hoc chart task, a read marker, a log over the text limit,
    and six poison events (STORY_POISON): undecodable bytes, two late logs after the
    cancel and three orphans."""
    from runstream.contracts import (
        AnalysisStarted,
        ChartCompleted,
        ChartProgressed,
        ChartRequested,
        ChartStarted,
        Column,
        DatasetAttached,
        DeadLetter,
        ErrorInfo,
        ExecutionCompleted,
        LogAppended,
        ScriptGenerated,
        SessionRead,
        StepCompleted,
        StepProgressed,
        StepStarted,
    )

    s = script
    ds = DatasetAttached(
        **s.base(),
        dataset_id=new_id(),
        name="d.csv",
        format="csv",
        object_name="o",
        size_bytes=10,
        row_count=2,
        columns=[Column(name="a", type="INTEGER")],
        sample_rows=[[1], [2]],
    )
    seqs = await s.publish(s.created(), ds)
    for outcome in ("completed", "cancelled", "failed"):
        req = s.requested(f"question ending {outcome}", dataset_id=ds.dataset_id)
        mid = req.message_id
        events: list[Event] = [req, s.msg(AnalysisStarted, mid)]
        for i, step in enumerate(("context", "plan", "script", "execute", "chart"), 1):
            events += [
                s.msg(StepStarted, mid, step=step, index=i, total=5),
                s.msg(StepProgressed, mid, step=step, progress=50.0),
                s.msg(LogAppended, mid, text=f"{step} going", step=step),
                s.msg(StepCompleted, mid, step=step, duration_ms=100 * i),
            ]
            if step == "script":
                events.append(
                    s.msg(ScriptGenerated, mid, sql="SELECT 1", explanation="e", planner="rules")
                )
            if step == "execute":
                events.append(
                    s.msg(
                        ExecutionCompleted,
                        mid,
                        columns=[Column(name="x", type="INTEGER")],
                        rows=[[1]],
                        row_count=1,
                    )
                )
            if outcome == "cancelled" and step == "plan":
                break
        tid = new_id()
        if outcome == "completed":
            events += [
                s.chart(ChartRequested, tid, mid, auto=True),
                s.chart(ChartStarted, tid, mid),
                s.chart(ChartProgressed, tid, mid, progress=60.0, current_step="render"),
                s.chart(
                    ChartCompleted,
                    tid,
                    mid,
                    chart_id=new_id(),
                    kind="bar",
                    spec={"mark": "bar"},
                    svg="<svg/>",
                ),
            ]
        dead = None
        error = None
        if outcome == "failed":
            error = ErrorInfo(code="dead_letter", message="ran out of deliveries")
            dead = DeadLetter(consumer="chart", stream_seq=3, deliveries=5, subject="x")
        events.append(
            s.settled(mid, outcome, summary=f"{outcome}!", error=error, dead_letter=dead, lock=None)
        )
        if outcome == "cancelled":  # the worker had not noticed the cancel yet
            events += [
                s.msg(LogAppended, mid, text="plan finished anyway", step="plan"),  # kept
                s.msg(LogAppended, mid, text="writing the script", step="script"),  # late
                s.msg(LogAppended, mid, text="no step"),  # late
            ]
        if outcome == "completed":
            events.append(s.msg(LogAppended, mid, text="x" * 40_000, step="execute"))
        seqs += await s.publish(*events)
    seqs.append(await s.publish_raw(f"{s.subjects.prefix}.{s.session_id}.session", b"\x00garbage"))
    stranger = Script(s.js, s.subjects.prefix, s.owner)  # its session_created never happened
    seqs += await s.publish(
        s.msg(StepStarted, "no-such-message", step="plan", index=2, total=5),
        s.chart(ChartStarted, "no-such-task", "no-such-message"),
        stranger.requested(),
        SessionRead(**s.base(), owner=s.owner),
    )
    return seqs


STORY_POISON = 6
