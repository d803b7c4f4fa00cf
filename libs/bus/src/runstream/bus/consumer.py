"""Durable pull consumers for the workers: explicit ack, nak with backoff, term,
in-progress heartbeats for long handlers, and a graceful stop. (The projector does not
use these: it reads in stream order from its own checkpoint, see `ordered`.)

Tracing and log context are set here, around the handler, never inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NotFoundError

from runstream.bus.bus import Bus
from runstream.bus.errors import Reject, Retry, nats_unavailable
from runstream.contracts import AnyEvent, DecodeError, decode
from runstream.telemetry import EVENTS_CONSUMED, HANDLE_SECONDS, consume_span

logger = structlog.get_logger()

TOP_UP_S = 0.005  # how long to wait for more after the first message of a batch


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    durable: str
    filter_subjects: list[str]
    ack_wait_s: float = 30.0
    max_deliver: int = 5  # -1: unlimited
    batch: int = 16
    concurrency: int = 4
    max_ack_pending: int = 1024
    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
    fetch_timeout_s: float = 1.0
    # On stop, in-flight handlers get this long to finish; the rest are cancelled and
    # their messages handed back (nak) for another replica or the next start.
    stop_grace_s: float = 5.0
    # How long a handler failing only because NATS is unavailable is run again in place
    # before its delivery counts as failed (longer than a cluster's leader elections).
    outage_patience_s: float = 60.0

    def nak_delay(self, num_delivered: int) -> float:
        idx = max(0, min(num_delivered - 1, len(self.backoff_s) - 1))
        return self.backoff_s[idx]


class Delivery:
    """One message as a handler sees it."""

    __slots__ = ("_event", "msg", "num_delivered", "seq", "subject")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        meta = msg.metadata
        self.seq = int(meta.sequence.stream)
        self.num_delivered = int(meta.num_delivered)
        self.subject = msg.subject
        self._event: AnyEvent | None = None

    @property
    def data(self) -> bytes:
        return self.msg.data

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})

    @property
    def event(self) -> AnyEvent:
        """The decoded event; raises DecodeError for bytes that are not one."""
        if self._event is None:
            self._event = decode(self.msg.data)
        return self._event


async def ensure_consumer(bus: Bus, spec: ConsumerSpec) -> api.ConsumerInfo:
    config = api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=spec.filter_subjects if len(spec.filter_subjects) > 1 else None,
        filter_subject=spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else None,
    )
    try:
        await bus.js.consumer_info(bus.stream, spec.durable)
    except NotFoundError:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # a replica won the race
            return await bus.js.add_consumer(bus.stream, config)
    return await bus.js.add_consumer(bus.stream, config)  # create-or-update


class _Runner:
    def __init__(self, bus: Bus, spec: ConsumerSpec) -> None:
        self.bus = bus
        self.spec = spec
        self.log = logger.bind(consumer=spec.durable)
        self._unavailable_logged = False

    async def _subscribe(self) -> Any:
        await ensure_consumer(self.bus, self.spec)
        return await self.bus.js.pull_subscribe_bind(
            durable=self.spec.durable, stream=self.bus.stream
        )

    async def _fetch(self, psub: Any, batch: int) -> list[Msg]:
        """Wait for one message, then take whatever else is ready, up to `batch`.

        A pull for N messages lingers until N arrive or it expires, so an idle consumer
        asking for a full batch would sit on its first message for the whole timeout.
        """
        try:
            msgs = list(await psub.fetch(1, timeout=self.spec.fetch_timeout_s))
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except Exception as exc:
            if not nats_unavailable(exc):
                raise
            # NATS restarting, JetStream answering 503 / no responders while a server
            # starts, or (on a cluster) no server leading the consumer while the survivors
            # of its leader's node elect another: wait and pull again, do not exit.
            self._unavailable(exc)
            await asyncio.sleep(0.5)
            return []
        self._unavailable_logged = False
        if batch > 1:
            try:
                msgs += await psub.fetch(batch - 1, timeout=TOP_UP_S)
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            except Exception as exc:
                if not nats_unavailable(exc):
                    raise
                # keep the one already received: it is ours until acked
        return msgs

    def _unavailable(self, exc: Exception) -> None:
        if not self._unavailable_logged:  # once per outage, not twice a second
            self.log.warning("consumer.unavailable", error=type(exc).__name__)
            self._unavailable_logged = True


class MessageConsumer(_Runner):
    """Hands deliveries one at a time to `handle`, up to `concurrency` at once.

    Returning acks. Raising Retry naks with a delay (JetStream redelivers up to
    max_deliver); Reject terms; any other exception is treated as transient.

    Flow: pull exactly as many messages as there are free slots, start a handler for
    each, and pull again while they run; when every slot is taken, sleep until a handler
    frees one. The in-flight count is kept by the handlers themselves (not by done
    callbacks, which only run once the loop yields), so a full runner always waits and
    never spins. Work beyond the free slots stays in JetStream, not in this process.
    """

    def __init__(
        self, bus: Bus, spec: ConsumerSpec, handle: Callable[[Delivery], Awaitable[None]]
    ) -> None:
        super().__init__(bus, spec)
        self.handle = handle
        self.in_flight = 0
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        psub = await self._subscribe()
        self.log.info("consumer.started", filters=self.spec.filter_subjects,
                      concurrency=self.spec.concurrency)
        try:
            while not stop.is_set():
                free = self.spec.concurrency - self.in_flight
                if free <= 0:
                    self._slot_freed.clear()
                    # Wakes on the first freed slot; the timeout only re-checks `stop`.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(),
                                               self.spec.fetch_timeout_s)
                    continue
                for msg in await self._fetch(psub, min(free, self.spec.batch)):
                    self.in_flight += 1
                    task = asyncio.create_task(self._one(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            if self._tasks:  # let in-flight handlers finish: their messages are not acked yet
                _, late = await asyncio.wait(self._tasks, timeout=self.spec.stop_grace_s)
                for task in late:
                    task.cancel()
                if late:
                    self.log.warning("consumer.stop_cancelled", handlers=len(late))
                    await asyncio.wait(late, timeout=5.0)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            self.log.info("consumer.stopped")

    async def _handle_riding_out_outages(self, delivery: Delivery) -> None:
        """Run the handler; while it fails because NATS itself is unavailable (a restart,
        a cluster electing leaders), run it again here, the message kept in progress by
        the heartbeat, instead of spending one of its deliveries: an outage is not the
        message's fault, and handlers are idempotent per (message, attempt, step)."""
        deadline = time.monotonic() + self.spec.outage_patience_s
        while True:
            try:
                await self.handle(delivery)
                return
            except (Retry, Reject):
                raise
            except Exception as exc:
                if not nats_unavailable(exc) or time.monotonic() > deadline:
                    raise
                self.log.warning("delivery.waiting_for_nats", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(0.5, self.spec.ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _one(self, msg: Msg) -> None:
        delivery = Delivery(msg)
        beat = asyncio.create_task(self._heartbeat(msg))
        started = time.perf_counter()
        outcome = "ack"
        try:
            event: AnyEvent | None = None
            with contextlib.suppress(DecodeError):
                event = delivery.event
            ids = {
                "session_id": getattr(event, "session_id", None),
                "message_id": getattr(event, "message_id", None),
            }
            with (
                structlog.contextvars.bound_contextvars(
                    subject=delivery.subject, seq=delivery.seq, **ids
                ),
                consume_span(
                    f"consume {self.spec.durable}", delivery.headers,
                    **{"messaging.destination": delivery.subject, "rs.seq": delivery.seq},
                ),
            ):
                try:
                    await self._handle_riding_out_outages(delivery)
                    await msg.ack()
                except Retry as exc:
                    outcome = "retry"
                    delay = exc.delay if exc.delay is not None else self.spec.nak_delay(
                        delivery.num_delivered)
                    self.log.warning("delivery.retry", reason=exc.reason, delay=delay,
                                     delivered=delivery.num_delivered)
                    await msg.nak(delay=delay)
                except Reject as exc:
                    outcome = "reject"
                    self.log.error("delivery.rejected", reason=exc.reason)
                    await msg.term()
                except asyncio.CancelledError:
                    outcome = "cancelled"
                    with contextlib.suppress(Exception):  # redeliver now, not after ack_wait
                        await asyncio.shield(msg.nak())
                    raise
                except Exception:
                    outcome = "error"
                    self.log.exception("delivery.failed", delivered=delivery.num_delivered)
                    await msg.nak(delay=self.spec.nak_delay(delivery.num_delivered))
        finally:
            beat.cancel()
            self.in_flight -= 1
            self._slot_freed.set()
            EVENTS_CONSUMED.labels(self.spec.durable, outcome).inc()
            HANDLE_SECONDS.labels(self.spec.durable).observe(time.perf_counter() - started)


class MaxDeliveries(msgspec.Struct, frozen=True):
    """The JetStream advisory sent when a message runs out of deliveries."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


_advisory_decoder = msgspec.json.Decoder(MaxDeliveries)


async def watch_max_deliveries(
    bus: Bus, durable: str, on_exhausted: Callable[[MaxDeliveries, Any], Awaitable[None]]
) -> Any:
    """Subscribe to the MAX_DELIVERIES advisory of one consumer.

    `on_exhausted(advisory, raw_msg)` gets the stored message (or None if it has aged out).
    Returns the subscription; unsubscribe to stop.
    """
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{bus.stream}.{durable}"
    log = logger.bind(consumer=durable)

    async def cb(msg: Msg) -> None:
        try:
            adv = _advisory_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("consumer.bad_advisory")
            return
        try:
            raw = await bus.get_msg(adv.stream_seq)
        except NotFoundError:
            raw = None
        try:
            await on_exhausted(adv, raw)
        except Exception:
            log.exception("dead_letter.handler_failed", stream_seq=adv.stream_seq)

    return await bus.nc.subscribe(subject, cb=cb)
