"""What every pipeline worker shares: delivery settings, its consumers, the prologue of
each handler (decode, keep only its event type, guard the message, report steps), and
one `run_pipeline_worker` that connects, consumes, watches dead letters and shuts down
in reverse."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from runstream.bus import (
    Bus,
    ConsumerSpec,
    Delivery,
    MaxDeliveries,
    MessageConsumer,
    ensure_consumer,
    watch_max_deliveries,
)
from runstream.contracts import DecodeError, Event
from runstream.pipeline.deadletters import on_max_deliveries
from runstream.pipeline.guard import MessageGuard, Stop
from runstream.pipeline.reporter import StepReporter
from runstream.runtime import ServiceSettings

logger = structlog.get_logger()

E = TypeVar("E", bound=Event)

Handler = Callable[[Delivery], Awaitable[None]]
Exhausted = Callable[[Bus, MaxDeliveries, Any], Awaitable[None]]


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


@dataclass(frozen=True)
class Consumer:
    """One durable consumer of a worker: what it reads, who handles a delivery, and what
    happens when a delivery runs out of attempts (default: settle the analysis failed)."""

    spec: ConsumerSpec
    handle: Handler
    on_exhausted: Exhausted = on_max_deliveries


def decoded(delivery: Delivery, kind: type[E]) -> E | None:
    """The delivery's event if it is a `kind`; None for anything else (acked as not ours)."""
    try:
        event = delivery.event
    except DecodeError:
        logger.warning("pipeline.undecodable_event_skipped")
        return None
    return event if isinstance(event, kind) else None


async def dispatch(
    bus: Bus,
    delivery: Delivery,
    kind: type[E],
    action: Callable[[E, MessageGuard, StepReporter], Awaitable[None]],
) -> None:
    """Run `action` for a delivery of `kind`; anything else is acked at once.

    A `Stop` (cancelled, lock lost, already settled) ends the work quietly.
    """
    event = decoded(delivery, kind)
    if event is None:
        return
    sid, mid = event.session_id, getattr(event, "message_id", "")
    guard = MessageGuard(bus, sid, mid)
    steps = StepReporter(bus, session_id=sid, message_id=mid,
                         attempt=getattr(event, "attempt", 1))
    try:
        await action(event, guard, steps)
    except Stop as stop:
        logger.info("pipeline.work_stopped", kind=kind.__name__, reason=stop.reason)


Build = Callable[[Bus, AsyncExitStack], Awaitable[list[Consumer]]]


async def run_pipeline_worker(
    name: str,
    settings: WorkerSettings,
    build: Build,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Run a worker until `stop` is set.

    Start-up: connect and provision -> `build(bus, resources)` returns the worker's
    consumers (and may enter its own resources, e.g. a process pool, into `resources`)
    -> each consumer and its dead-letter watch. Shutdown is the mirror: consumers stop
    (in-flight work finishes or is handed back) -> watches end -> resources close ->
    NATS drains.
    """
    async with AsyncExitStack() as resources:
        bus = await resources.enter_async_context(Bus.connect(settings.bus(), name=name))
        await bus.provision()
        consumers = await build(bus, resources)
        watches = []
        for consumer in consumers:
            await ensure_consumer(bus, consumer.spec)

            async def exhausted(adv: MaxDeliveries, raw: Any, c: Consumer = consumer) -> None:
                await c.on_exhausted(bus, adv, raw)

            watches.append(await watch_max_deliveries(bus, consumer.spec.durable, exhausted))
        runs = [asyncio.create_task(MessageConsumer(bus, c.spec, c.handle).run(stop))
                for c in consumers]
        if ready is not None:
            ready.set()
        try:
            await asyncio.gather(*runs)
        finally:
            for run in runs:
                run.cancel()
            for watch in watches:
                with contextlib.suppress(Exception):
                    await watch.unsubscribe()
