"""Step reporting and the per-message guard every pipeline worker shares.

Idempotency per (message, attempt, step): every event a step publishes gets a
deterministic id, `derived_id(message_id, attempt, step, kind, n)`, used as its
Nats-Msg-Id, so a redelivered step republishes the same ids and JetStream drops the
duplicates. A step whose `step_completed` is already stored is skipped outright, so a
redelivery after a crash resumes where the last delivery stopped.

The guard answers the two questions a worker asks before every step: was the message
cancelled (stop quietly: the gateway settled it), and does it still hold the session
lock (renew it; another holder means the message settles `expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from nats.js import api

from runstream.bus.bus import Bus, Published
from runstream.bus.consumer import MaxDeliveries
from runstream.bus.errors import NotLockHolder
from runstream.bus.session import SessionAggregate
from runstream.contracts import (
    PIPELINE_STEPS,
    STEP_TITLES,
    AnalysisRequested,
    AnalysisSettled,
    DeadLetter,
    ErrorInfo,
    Event,
    LogAppended,
    LogLevel,
    MessageEvent,
    SessionEvent,
    SettledStatus,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    decode,
    derived_id,
    step_index,
    truncate_text,
    utcnow,
)

logger = structlog.get_logger()

class Stop(Exception):
    """Stop working on this message and ack it: it was cancelled, settled or taken over."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def read_subject(bus: Bus, subject: str, *, timeout: float = 5.0) -> list[Any]:
    """Every stored message on `subject` (wildcards allowed), oldest first.

    An ordered push consumer delivers from the start; we stop at the last sequence
    that existed when we began, so the read is a consistent prefix of the stream.
    """
    info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
    if not info.state.subjects:
        return []
    last = int(info.state.last_seq)
    sub = await bus.js.subscribe(
        subject, stream=bus.stream, ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL, inactive_threshold=30.0,
    )
    out: list[Any] = []
    try:
        expected = sum(int(n) for n in info.state.subjects.values())
        while len(out) < expected:
            msg = await sub.next_msg(timeout=timeout)
            out.append(msg)
            if msg.metadata.sequence.stream >= last:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out


async def session_events(bus: Bus, session_id: str) -> list[SessionEvent]:
    """The session aggregate's whole history, oldest first (undecodable events skipped)."""
    events: list[SessionEvent] = []
    for msg in await read_subject(bus, bus.subjects.session(session_id)):
        with contextlib.suppress(Exception):
            event = decode(msg.data)
            if isinstance(event, SessionEvent):
                events.append(event)
    return events


class MessageGuard:
    """Cancel and lock checks for one analysis message."""

    def __init__(self, bus: Bus, session_id: str, message_id: str) -> None:
        self.bus = bus
        self.session_id = session_id
        self.message_id = message_id
        self.sessions = SessionAggregate(bus)
        self.log = logger.bind(session_id=session_id, message_id=message_id)

    async def cancel_requested(self) -> bool:
        subject = self.bus.subjects.message(self.session_id, self.message_id, "cancel_requested")
        return await self.bus.get_last_for_subject(subject) is not None

    async def settled(self) -> AnalysisSettled | None:
        """This message's terminal event, if the session subject holds one."""
        state = await self.sessions.load(self.session_id)
        last = state.event
        if isinstance(last, AnalysisSettled) and last.message_id == self.message_id:
            return last
        if state.lock is not None and state.lock.message_id == self.message_id:
            return None  # still holds the lock: cannot be settled
        for event in reversed(await session_events(self.bus, self.session_id)):
            if isinstance(event, AnalysisSettled) and event.message_id == self.message_id:
                return event
        return None

    async def check(self, stage: str) -> None:
        """Before a step: raise Stop when cancelled or the lock is gone; else renew it."""
        if await self.cancel_requested():
            raise Stop("cancel requested")
        try:
            await self.sessions.renew(self.session_id, self.message_id, stage=stage)
        except NotLockHolder as exc:
            await self._lost_lock(exc.holder)

    async def _lost_lock(self, holder: str | None) -> None:
        if await self.cancel_requested():
            raise Stop("cancel requested")
        if await self.settled() is not None:
            raise Stop("already settled")
        self.log.warning("lock_lost", holder=holder)
        await self.settle(
            "expired",
            error=ErrorInfo(code="lock_lost", message=f"the session lock is held by {holder}"),
        )
        raise Stop("lock lost")

    async def settle(
        self,
        status: SettledStatus,
        *,
        summary: str | None = None,
        error: ErrorInfo | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        """Settle once: a message already settled (e.g. cancelled) is left as it is."""
        if status != "cancelled" and await self.settled() is not None:
            return
        await self.sessions.settle(
            self.session_id, self.message_id, status,
            summary=summary, error=error, dead_letter=dead_letter,
        )

    @contextlib.asynccontextmanager
    async def keep_renewed(self, stage: str, every_s: float | None = None) -> AsyncIterator[None]:
        """Renew the lock every lock_ttl/3 while a long step runs."""
        interval = every_s or max(1.0, self.sessions.lock_ttl.total_seconds() / 3)

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.sessions.renew(self.session_id, self.message_id, stage=stage)
                except NotLockHolder:
                    return  # the next check() decides what that means
                except Exception:
                    self.log.warning("lock_renew_failed", exc_info=True)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class StepReporter:
    """Publishes one message's step events with deterministic ids."""

    def __init__(
        self, bus: Bus, *, session_id: str, message_id: str, attempt: int = 1
    ) -> None:
        self.bus = bus
        self.session_id = session_id
        self.message_id = message_id
        self.attempt = attempt
        self._counters: dict[tuple[str, str], int] = {}
        self._started: dict[str, float] = {}

    def event_id(self, step: str, kind: str, n: int | str = 0) -> str:
        return derived_id(self.message_id, self.attempt, step, kind, n)

    def _next(self, step: str, kind: str) -> int:
        n = self._counters.get((step, kind), 0)
        self._counters[(step, kind)] = n + 1
        return n

    def _base(self, step: str, kind: str, n: int | str = 0) -> dict[str, Any]:
        return {
            "event_id": self.event_id(step, kind, n), "at": utcnow(),
            "session_id": self.session_id, "message_id": self.message_id,
            "attempt": self.attempt,
        }

    async def publish(self, event: Event) -> Published:
        return await self.bus.publish(event)

    async def last_completed(self) -> int:
        """Index of the last completed pipeline step of this message (0: none)."""
        subject = self.bus.subjects.message(self.session_id, self.message_id, "step_completed")
        raw = await self.bus.get_last_for_subject(subject)
        if raw is None:
            return 0
        event = decode(raw.data or b"")
        if not isinstance(event, StepCompleted) or event.step not in PIPELINE_STEPS:
            return 0
        return step_index(event.step)

    async def is_completed(self, step: str) -> bool:
        return await self.last_completed() >= step_index(step)

    async def started(self, step: str, *, eta_ms: int | None = None) -> None:
        idx = step_index(step)
        self._started[step] = time.perf_counter()
        await self.publish(StepStarted(
            **self._base(step, "started"), step=step, index=idx,
            total=len(PIPELINE_STEPS), eta_ms=eta_ms,
        ))
        await self.log(step, f"Step {idx}/{len(PIPELINE_STEPS)}: {STEP_TITLES[step]}…",
                       key="started")

    async def progressed(self, step: str, progress: float, detail: str = "") -> None:
        n = self._next(step, "progressed")
        await self.publish(StepProgressed(
            **self._base(step, "progressed", n), step=step, progress=progress, detail=detail,
        ))

    def elapsed_ms(self, step: str) -> int:
        began = self._started.get(step)
        return 0 if began is None else int((time.perf_counter() - began) * 1000)

    async def completed(
        self, step: str, *, text: str | None = None, duration_ms: int | None = None
    ) -> None:
        ms = self.elapsed_ms(step) if duration_ms is None else duration_ms
        if text:
            await self.log(step, text, level="success", key="completed")
        await self.publish(StepCompleted(**self._base(step, "completed"), step=step,
                                         duration_ms=ms))

    async def failed(
        self, step: str, error: str, *, code: str = "failed", retryable: bool = False
    ) -> None:
        await self.log(step, error, level="error", key="failed")
        await self.publish(StepFailed(
            **self._base(step, "failed"), step=step, error=error, code=code,
            retryable=retryable, duration_ms=self.elapsed_ms(step),
        ))

    async def log(
        self, step: str | None, text: str, *, level: LogLevel = "info", key: str | None = None
    ) -> None:
        """A human log line. `key` makes the id unique per occurrence (e.g. per delivery).

        Text over LOG_TEXT_MAX_BYTES (a huge error, a dump) is cut to it with a marker:
        a log line must never be why an analysis fails, while `Bus.publish` refuses it.
        """
        scope = step or "-"
        n: int | str = key if key is not None else self._next(scope, "log")
        text, _ = truncate_text(text)
        await self.publish(LogAppended(**self._base(scope, "log", n), level=level, text=text,
                                       step=step))


async def settle_dead_letter(
    bus: Bus, event: Any, dead_letter: DeadLetter, *, reason: str | None = None
) -> bool:
    """Settle the analysis behind an exhausted delivery `failed`, naming the dead letter.

    Called from the MAX_DELIVERIES advisory and by a handler on its last delivery; both
    may run for one message: the settle is skipped when the message is already settled
    (and its Nats-Msg-Id is derived from the message anyway). Returns True if it settled.
    """
    if not isinstance(event, AnalysisRequested | MessageEvent):
        return False
    guard = MessageGuard(bus, event.session_id, event.message_id)
    if await guard.cancel_requested() or await guard.settled() is not None:
        return False
    attempt = getattr(event, "attempt", 1)
    steps = StepReporter(bus, session_id=event.session_id, message_id=event.message_id,
                         attempt=attempt)
    step = await _last_started_step(bus, event.session_id, event.message_id)
    if reason is None:
        reason = await _last_warning(bus, event.session_id, event.message_id)
    text = f"gave up after {dead_letter.deliveries} deliveries"
    if reason:
        text = f"{text}: {reason}"
    if step is not None:
        await steps.failed(step, text, code="max_deliveries")
    await guard.settle(
        "failed", error=ErrorInfo(code="max_deliveries", message=text, step=step),
        dead_letter=dead_letter,
    )
    logger.warning("dead_lettered", consumer=dead_letter.consumer,
                   stream_seq=dead_letter.stream_seq, message_id=event.message_id)
    return True


async def on_max_deliveries(bus: Bus, adv: MaxDeliveries, raw: Any) -> None:
    """A `watch_max_deliveries` callback for the pipeline consumers."""
    if raw is None:
        logger.warning("dead_letter_aged_out", consumer=adv.consumer, stream_seq=adv.stream_seq)
        return
    try:
        event = decode(raw.data or b"")
    except Exception:
        logger.warning("dead_letter_undecodable", stream_seq=adv.stream_seq)
        return
    await settle_dead_letter(bus, event, DeadLetter(
        consumer=adv.consumer, stream_seq=adv.stream_seq, deliveries=adv.deliveries,
        subject=raw.subject or "",
    ))


async def _last_started_step(bus: Bus, session_id: str, message_id: str) -> str | None:
    raw = await bus.get_last_for_subject(
        bus.subjects.message(session_id, message_id, "step_started"))
    if raw is None:
        return None
    event = decode(raw.data or b"")
    return event.step if isinstance(event, StepStarted) else None


async def _last_warning(bus: Bus, session_id: str, message_id: str) -> str | None:
    raw = await bus.get_last_for_subject(
        bus.subjects.message(session_id, message_id, "log_appended"))
    if raw is None:
        return None
    event = decode(raw.data or b"")
    if isinstance(event, LogAppended) and event.level in ("warning", "error"):
        return event.text
    return None
