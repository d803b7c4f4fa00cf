"""The projector service: reads `<prefix>.>` in stream order from its checkpoint and folds
it into Postgres.

Start-up: pool (migrated) -> NATS (stream provisioned) -> fold loop; shutdown is the
mirror: the loop stops -> NATS drains -> the pool closes.

The position is the checkpoint in Postgres, nothing else: each round of the loop reads
it, starts an ordered reader at checkpoint + 1 and folds batch after batch, each batch
committing its rows with its checkpoint. Any failure (Postgres or NATS away, a lost
delivery, a batch that does not continue the checkpoint) ends the round; the next round
starts again from what is committed. No delivery order can make it skip an event, and
an event is folded at most once. See docs/projector.md.

One replica folds at a time (the advisory lock in every batch); a second replica is a
hot standby that skips what the first has folded, never a corruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from pydantic_settings import SettingsConfigDict

from runstream.bus import Bus
from runstream.bus.ordered import Entry, OrderedReader, stream_identity
from runstream.projector.projector import OutOfOrder, Projector, StreamMismatch, session_settings
from runstream.runtime import DatabaseSettings
from runstream.store import open_store
from runstream.telemetry import PROJECTOR_CHECKPOINT, PROJECTOR_FAULTS, batch_span

logger = structlog.get_logger()

SERVICE = "projector"


class ProjectorSettings(DatabaseSettings):
    """RUNSTREAM_* environment: nats_url, database_url, stream, prefix, db_schema, ..."""

    model_config = SettingsConfigDict(
        env_prefix="RUNSTREAM_", extra="ignore", populate_by_name=True
    )

    # Events per transaction: `batch_size` while caught up, growing with the lag up to
    # `batch_max` (fewer, larger transactions while catching up or rebuilding).
    batch_size: int = 256
    batch_max: int = 2048
    # How long one pull waits for the first message: the loop's idle tick (the latency
    # of an idle projector is set by the wake-up on a message, not by this).
    fetch_timeout_s: float = 1.0
    pool_size: int = 4
    # After a failure, wait this long before starting again from the checkpoint
    # (doubling up to the maximum while the failure lasts).
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0
    # While the read models belong to another stream: how often to look again (a
    # `runstream rebuild` resolves it without restarting the projector).
    mismatch_recheck_s: float = 5.0
    # Commit without waiting for the WAL flush: a crash of Postgres may lose the last
    # batches, rows and checkpoint together, and the projector folds them again from
    # the stream (docs/projector.md). Off = wait for every flush.
    async_commit: bool = True
    # Read the next batch while the current one folds and commits.
    prefetch: bool = True

    def session_settings(self) -> dict[str, str]:
        """Postgres settings of the projector's own connections."""
        return session_settings(async_commit=self.async_commit)


class FoldLoop:
    """Rounds of: checkpoint -> ordered reader at checkpoint + 1 -> fold batches."""

    def __init__(self, settings: ProjectorSettings, bus: Bus, projector: Projector) -> None:
        self.settings = settings
        self.bus = bus
        self.projector = projector
        self.log = logger.bind(service=SERVICE, schema=settings.db_schema)
        self.refusal: str | None = None  # why folding is refused, while it is

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.retry_min_s
        while not stop.is_set():
            reader = OrderedReader(
                self.bus.js, self.bus.stream, self.bus.subjects.all,
                batch=self.settings.batch_size, fetch_timeout_s=self.settings.fetch_timeout_s,
                name_prefix=SERVICE,
            )
            try:
                await self._round(reader, stop)
                delay = self.settings.retry_min_s
            except StreamMismatch as exc:
                if self.refusal != str(exc):
                    self.log.error("projector.refused", reason=str(exc),
                                   remedy="runstream rebuild")
                self.refusal = str(exc)
                PROJECTOR_FAULTS.labels("stream_mismatch").inc()
                await _wait(stop, self.settings.mismatch_recheck_s)
            except OutOfOrder as exc:
                # The committed checkpoint moved back (a rebuild from a shorter stream):
                # start again from it at once.
                self.log.warning("projector.out_of_order", after=exc.after,
                                 checkpoint=exc.checkpoint)
                PROJECTOR_FAULTS.labels("out_of_order").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("projector.round_failed", error=f"{type(exc).__name__}: {exc}",
                                 retry_in_s=delay)
                PROJECTOR_FAULTS.labels(type(exc).__name__).inc()
                await _wait(stop, delay)
                delay = min(delay * 2, self.settings.retry_max_s)
            finally:
                with contextlib.suppress(Exception):
                    await reader.close()

    async def _round(self, reader: OrderedReader, stop: asyncio.Event) -> None:
        stream = await stream_identity(self.bus.js, self.bus.stream)
        checkpoint = await self.projector.position(stream)
        if self.refusal is not None:
            self.log.info("projector.resumed", checkpoint=checkpoint)
            self.refusal = None
        if checkpoint and checkpoint + 1 < stream.first_seq:
            # Aged out (or deleted) before being folded: nothing can bring them back.
            self.log.error("projector.retention_gap", checkpoint=checkpoint,
                           first_seq=stream.first_seq, lost=stream.first_seq - checkpoint - 1)
            PROJECTOR_FAULTS.labels("retention_gap").inc()
        await reader.start(checkpoint)
        PROJECTOR_CHECKPOINT.set(checkpoint)
        self.log.info("projector.reading", checkpoint=checkpoint, last_seq=stream.last_seq)
        # The next batch is fetched while the current one folds and commits.
        after = reader.position
        fetching = asyncio.ensure_future(reader.next_batch(self._limit(reader)))
        try:
            while not stop.is_set():
                items = await fetching
                following = reader.position
                if self.settings.prefetch:
                    fetching = asyncio.ensure_future(reader.next_batch(self._limit(reader)))
                if items:
                    await self._fold(items, after)
                if not self.settings.prefetch:
                    fetching = asyncio.ensure_future(reader.next_batch(self._limit(reader)))
                after = following
        finally:
            fetching.cancel()
            await asyncio.wait([fetching])

    def _limit(self, reader: OrderedReader) -> int:
        """Batches grow with the lag: `batch_size` when caught up (whatever is ready is
        folded at once), up to `batch_max` when that many wait."""
        return max(self.settings.batch_size, min(reader.behind, self.settings.batch_max))

    async def _fold(self, items: list[Entry], after: int) -> None:
        started = time.perf_counter()
        with batch_span("fold", [e.headers or {} for e in items],
                        **{"rs.first_seq": items[0].seq, "rs.size": len(items)}):
            checkpoint = await self.projector.apply_batch(items, after=after)
        PROJECTOR_CHECKPOINT.set(checkpoint)
        self.log.debug(
            "projector.batch", first_seq=items[0][0], last_seq=items[-1][0],
            size=len(items), checkpoint=checkpoint,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_projector(
    settings: ProjectorSettings, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Fold the stream into `settings.db_schema` until `stop` is set."""
    log = logger.bind(service=SERVICE, schema=settings.db_schema)
    async with open_store(
        settings.database_url, schema=settings.db_schema, max_size=settings.pool_size,
        settings=settings.session_settings(),
    ) as store:
        projector = Projector(store.pool)
        async with Bus.connect(settings.bus(), name=SERVICE) as bus:
            await bus.provision()
            loop = FoldLoop(settings, bus, projector)
            log.info("projector.started", checkpoint=await store.read_models.checkpoint())
            if ready is not None:
                ready.set()
            await loop.run(stop)
    log.info("projector.stopped")
