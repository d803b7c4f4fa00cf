"""Dead letters: an analysis whose delivery ran out of attempts settles `failed`."""

from __future__ import annotations

from typing import Any

import structlog

from runstream.bus import Bus, MaxDeliveries
from runstream.contracts import (
    AnalysisRequested,
    DeadLetter,
    ErrorInfo,
    LogAppended,
    MessageEvent,
    StepStarted,
    decode,
)
from runstream.pipeline.guard import MessageGuard
from runstream.pipeline.reporter import StepReporter

logger = structlog.get_logger()


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
    logger.warning("dead_letter.settled", consumer=dead_letter.consumer,
                   stream_seq=dead_letter.stream_seq, message_id=event.message_id)
    return True


async def on_max_deliveries(bus: Bus, adv: MaxDeliveries, raw: Any) -> None:
    """A `watch_max_deliveries` callback for the pipeline consumers."""
    if raw is None:
        logger.warning("dead_letter.aged_out", consumer=adv.consumer, stream_seq=adv.stream_seq)
        return
    try:
        event = decode(raw.data or b"")
    except Exception:
        logger.warning("dead_letter.undecodable", stream_seq=adv.stream_seq)
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
