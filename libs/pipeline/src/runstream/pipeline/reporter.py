"""Step reporting with deterministic event ids.

Idempotency per (message, attempt, step): every event a step publishes gets a
deterministic id, `derived_id(message_id, attempt, step, kind, n)`, used as its
Nats-Msg-Id, so a redelivered step republishes the same ids and JetStream drops the
duplicates. A step whose `step_completed` is already stored is skipped outright, so a
redelivery after a crash resumes where the last delivery stopped.
"""

from __future__ import annotations

import time
from typing import Any

from runstream.bus import Bus, Published
from runstream.contracts import (
    PIPELINE_STEPS,
    STEP_TITLES,
    Event,
    LogAppended,
    LogLevel,
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
