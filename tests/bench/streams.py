"""Streams for the benchmarks: the events of whole analyses, published fast.

`analysis_events` is one analysis as the pipeline writes it (36 events: requested,
started, five steps with progress and log lines, script, execution, settled).
`publish_analyses` publishes many of them with asynchronous acknowledgements (the
benchmarks fill streams of up to a million events; no publish here is conditional).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from runstream.bus import Bus
from runstream.contracts import (
    AnalysisRequested,
    AnalysisSettled,
    AnalysisStarted,
    Column,
    Event,
    ExecutionCompleted,
    ExecutionStarted,
    Lock,
    LogAppended,
    ScriptGenerated,
    SessionCreated,
    StepCompleted,
    StepProgressed,
    StepStarted,
    encode,
    new_id,
)

STEPS = ("context", "plan", "script", "execute", "chart")
ANALYSES_PER_SESSION = 4


def analysis_events(sid: str, owner: str, t: datetime) -> list[Event]:
    """The events of one whole analysis, as the pipeline writes them (36 events)."""
    mid, umid = new_id(), new_id()
    lock = Lock(message_id=mid, acquired_at=t, expires_at=t + timedelta(minutes=30))

    def at(i: int) -> datetime:
        return t + timedelta(milliseconds=10 * i)

    events: list[Event] = [
        AnalysisRequested(
            event_id=new_id(),
            at=at(0),
            session_id=sid,
            lock=lock,
            message_id=mid,
            user_message_id=umid,
            owner=owner,
            question="average revenue by region",
        ),
        AnalysisStarted(
            event_id=new_id(), at=at(1), session_id=sid, message_id=mid, worker="bench"
        ),
    ]
    i = 2
    for index, step in enumerate(STEPS, 1):
        m: dict[str, Any] = {"session_id": sid, "message_id": mid}
        events += [
            StepStarted(event_id=new_id(), at=at(i), step=step, index=index, total=len(STEPS), **m),
            LogAppended(
                event_id=new_id(), at=at(i), text=f"Step {index}/5: {step}...", step=step, **m
            ),
            StepProgressed(event_id=new_id(), at=at(i + 1), step=step, progress=50.0, **m),
            StepProgressed(event_id=new_id(), at=at(i + 2), step=step, progress=90.0, **m),
            LogAppended(
                event_id=new_id(),
                at=at(i + 3),
                level="success",
                text=f"{step} done",
                step=step,
                **m,
            ),
            StepCompleted(event_id=new_id(), at=at(i + 3), step=step, duration_ms=30, **m),
        ]
        i += 4
        if step == "script":
            events.append(
                ScriptGenerated(
                    event_id=new_id(),
                    at=at(i),
                    sql="SELECT region, avg(revenue) FROM data GROUP BY region",
                    explanation="average by region",
                    planner="rules",
                    **m,
                )
            )
        if step == "execute":
            events += [
                ExecutionStarted(event_id=new_id(), at=at(i), **m),
                ExecutionCompleted(
                    event_id=new_id(),
                    at=at(i + 1),
                    row_count=4,
                    columns=[
                        Column(name="region", type="VARCHAR"),
                        Column(name="avg_revenue", type="DOUBLE"),
                    ],
                    rows=[["North", 1.5], ["South", 2.5], ["East", 3.5], ["West", 4.5]],
                    **m,
                ),
            ]
    events.append(
        AnalysisSettled(
            event_id=new_id(),
            at=at(i + 2),
            session_id=sid,
            lock=None,
            message_id=mid,
            status="completed",
            summary="4 rows",
        )
    )
    return events


def sessions_of_analyses(analyses: int, owner: str = "bench") -> Iterator[list[Event]]:
    """Sessions of four analyses each (one after the other), `analyses` in all: each item
    is one session's events in order (its creation first)."""
    t0 = datetime.now(UTC)
    made = 0
    while made < analyses:
        sid = new_id()
        events: list[Event] = [
            SessionCreated(event_id=new_id(), at=t0, session_id=sid, owner=owner)
        ]
        for k in range(min(ANALYSES_PER_SESSION, analyses - made)):
            events += analysis_events(sid, owner, t0 + timedelta(seconds=k))
            made += 1
        yield events


async def publish_analyses(bus: Bus, analyses: int, *, interleave: int = 64) -> int:
    """Publish `analyses` whole analyses, `interleave` sessions at a time mixed in the
    stream (as concurrent users would); returns the number of events published."""
    js = bus.js
    published = 0
    pending: list[asyncio.Future[Any]] = []
    groups = sessions_of_analyses(analyses)
    while True:
        window = [g for _, g in zip(range(interleave), groups, strict=False)]
        if not window:
            break
        longest = max(len(g) for g in window)
        for i in range(longest):
            for group in window:
                if i < len(group):
                    event = group[i]
                    pending.append(await js.publish_async(
                        bus.subjects.for_event(event), encode(event), stream=bus.stream
                    ))  # fmt: skip
                    published += 1
        if len(pending) > 20_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return published
