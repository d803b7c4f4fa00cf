"""What every pipeline worker shares: delivery settings, its consumer, and the prologue
of each handler (decode, keep only its event type, guard the message, report steps)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from runstream.bus.bus import Bus
from runstream.bus.config import ServiceSettings
from runstream.bus.consumer import ConsumerSpec, Delivery
from runstream.bus.steps import MessageGuard, StepReporter, Stop
from runstream.contracts import DecodeError, Event

logger = structlog.get_logger()

E = TypeVar("E", bound=Event)


class WorkerSettings(ServiceSettings):
    # JetStream delivery: a transient failure is redelivered with backoff until
    # max_deliver; then the message is dead-lettered and settled failed.
    max_deliver: int = 4
    concurrency: int = 4
    ack_wait_s: float = 30.0
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)
    fetch_timeout_s: float = 0.5
    durable: str = ""


def consumer_spec(settings: WorkerSettings, filter_subject: str, durable: str = "") -> ConsumerSpec:
    return ConsumerSpec(
        durable=durable or settings.durable,
        filter_subjects=[filter_subject],
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        concurrency=settings.concurrency,
        backoff_s=settings.backoff_s,
        fetch_timeout_s=settings.fetch_timeout_s,
    )


async def dispatch(
    bus: Bus,
    delivery: Delivery,
    kind: type[E],
    action: Callable[[E, MessageGuard, StepReporter], Awaitable[None]],
) -> None:
    """Run `action` for a delivery of `kind`; anything else is acked at once.

    A `Stop` (cancelled, lock lost, already settled) ends the work quietly.
    """
    try:
        event = delivery.event
    except DecodeError:
        logger.warning("undecodable_event_skipped")
        return
    if not isinstance(event, kind):
        return
    sid, mid = event.session_id, getattr(event, "message_id", "")
    guard = MessageGuard(bus, sid, mid)
    steps = StepReporter(bus, session_id=sid, message_id=mid,
                         attempt=getattr(event, "attempt", 1))
    try:
        await action(event, guard, steps)
    except Stop as stop:
        logger.info("work_stopped", kind=kind.__name__, reason=stop.reason)
