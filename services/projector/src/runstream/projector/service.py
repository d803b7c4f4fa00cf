"""The projector service: a durable batch consumer on `<prefix>.>` folding into Postgres.

Start-up: pool (migrated) -> NATS (stream provisioned) -> consumer; shutdown is the
mirror: consumer stops -> NATS drains -> pool closes. One replica folds at a time (the
advisory lock in every batch); a second replica is a hot standby, never a corruption.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from pydantic_settings import SettingsConfigDict

from runstream.bus import BatchConsumer, Bus, ConsumerSpec, DatabaseSettings, Delivery
from runstream.projector.projector import Projector
from runstream.store import open_store

logger = structlog.get_logger()

SERVICE = "projector"


class ProjectorSettings(DatabaseSettings):
    """RUNSTREAM_* environment: nats_url, database_url, stream, prefix, db_schema, ..."""

    model_config = SettingsConfigDict(
        env_prefix="RUNSTREAM_", extra="ignore", populate_by_name=True
    )

    durable: str = "projector"
    batch_size: int = 256
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20_000
    # How long one fetch may wait for a batch to fill: also the worst added latency
    # between a publish and its fold when the stream is idle.
    fetch_timeout_s: float = 0.1
    pool_size: int = 4


def consumer_spec(settings: ProjectorSettings, bus: Bus) -> ConsumerSpec:
    return ConsumerSpec(
        durable=settings.durable,
        filter_subjects=[bus.subjects.all],
        ack_wait_s=settings.ack_wait_s,
        max_deliver=-1,  # the projector never gives up on an event: it poisons it instead
        batch=settings.batch_size,
        max_ack_pending=settings.max_ack_pending,
        fetch_timeout_s=settings.fetch_timeout_s,
        backoff_s=(0.5, 1.0, 2.0, 5.0),
    )


async def run_projector(
    settings: ProjectorSettings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Fold the stream into `settings.db_schema` until `stop` is set."""
    log = logger.bind(service=SERVICE, schema=settings.db_schema)
    async with open_store(
        settings.database_url, schema=settings.db_schema, max_size=settings.pool_size
    ) as store:
        projector = Projector(store.pool)
        async with Bus.connect(settings.bus(), name=SERVICE) as bus:
            await bus.provision()

            async def handle(batch: list[Delivery]) -> None:
                started = time.perf_counter()
                checkpoint = await projector.apply_batch(
                    [(d.seq, d.subject, d.data) for d in batch]
                )
                log.info(
                    "projector.batch",
                    first_seq=batch[0].seq,
                    last_seq=batch[-1].seq,
                    size=len(batch),
                    checkpoint=checkpoint,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )

            consumer = BatchConsumer(bus, consumer_spec(settings, bus), handle)
            log.info("projector.started", checkpoint=await store.read_models.checkpoint())
            if ready is not None:
                ready.set()
            await consumer.run(stop)
    log.info("projector.stopped")
