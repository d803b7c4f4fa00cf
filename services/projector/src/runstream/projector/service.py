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

With `RUNSTREAM_PARTITIONS` = P > 1 the stream is folded in P partitions by session:
each partition reads its own ordered view (`runstream.bus.partitions`) and has its own
checkpoint row; replicas share the partitions through leases (`leases.py`). Batches of
one partition are serialised by its checkpoint row (a second replica folding it skips
what the first has folded, never a corruption); different partitions fold side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog
from nats.js.errors import NotFoundError
from pydantic_settings import SettingsConfigDict

from runstream.bus import Bus
from runstream.bus.ordered import Entry, OrderedReader, stream_identity
from runstream.bus.partitions import partition_filter, provision_view, source_of, view_name
from runstream.projector.leases import Leases
from runstream.projector.projector import OutOfOrder, Projector, StreamMismatch, session_settings
from runstream.runtime import DatabaseSettings
from runstream.store import open_store
from runstream.telemetry import (
    PROJECTOR_CHECKPOINT,
    PROJECTOR_FAULTS,
    PROJECTOR_PARTITION_POSITION,
    batch_span,
)

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
    # Partition leases (P > 1): a lease not renewed for `lease_ttl_s` is free again;
    # replicas renew (and rebalance) every `lease_renew_s`.
    lease_ttl_s: float = 10.0
    lease_renew_s: float = 3.0

    def session_settings(self) -> dict[str, str]:
        """Postgres settings of the projector's own connections."""
        return session_settings(async_commit=self.async_commit)


class FoldLoop:
    """Rounds of: checkpoint -> ordered reader at checkpoint + 1 -> fold batches.

    The event stream itself, or (a partition's projector) the partitioned view through
    the partition's filter."""

    def __init__(self, settings: ProjectorSettings, bus: Bus, projector: Projector) -> None:
        self.settings = settings
        self.bus = bus
        self.projector = projector
        if projector.sourced:
            self.stream = view_name(bus.stream, projector.partitions)
            self.subject = partition_filter(settings.prefix, projector.part)
        else:
            self.stream, self.subject = bus.stream, bus.subjects.all
        self.log = logger.bind(service=SERVICE, schema=settings.db_schema,
                               checkpoint_name=projector.name)
        self.refusal: str | None = None  # why folding is refused, while it is
        self._advanced_at = 0.0  # when an idle advance was last tried

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.retry_min_s
        while not stop.is_set():
            reader = OrderedReader(
                self.bus.js, self.stream, self.subject,
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
        stream = await stream_identity(self.bus.js, self.stream)
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
        if not self.projector.sourced:
            PROJECTOR_CHECKPOINT.set(checkpoint)  # (a partition's: at its first commit)
        self.log.info("projector.reading", checkpoint=checkpoint, last_seq=stream.last_seq)
        # The next batch is fetched while the current one folds and commits.
        def fetch() -> asyncio.Future[list[Entry]]:
            return asyncio.ensure_future(reader.next_batch(self._limit(reader)))

        after = reader.position
        fetching = fetch()
        try:
            while not stop.is_set():
                items = await fetching
                following = reader.position
                if self.settings.prefetch:
                    fetching = fetch()
                if items:
                    await self._fold(items, after)
                if not self.settings.prefetch:
                    fetching = fetch()
                after = following
                if self.projector.sourced and (not items or (
                    reader.behind == 0
                    and time.monotonic() - self._advanced_at >= self.settings.fetch_timeout_s
                )):
                    await self._advance_idle(reader, following)
        finally:
            fetching.cancel()
            await asyncio.wait([fetching])

    async def _advance_idle(self, reader: OrderedReader, position: int) -> None:
        """Move an idle partition's `source_seq` up with the stream (docs/projector.md,
        "Idle partitions"). `position`: the reader's position, everything up to which is
        folded and committed. The order matters: the view's last message L (and its
        origin) is read FIRST, the reader's consumer is checked AFTER."""
        self._advanced_at = time.monotonic()
        js = self.bus.js
        last = int((await js.stream_info(self.stream)).state.last_seq)
        origin = 0  # an empty view: the checkpoint row is created, at position 0
        if last > 0:
            try:
                message = await js.get_msg(self.stream, seq=last, direct=True)
            except NotFoundError:
                return  # deleted or aged out meanwhile: the next tick tries again
            origin, _ = source_of(message.headers)
        if reader.position != position or await reader.pending() > 0:
            return  # something of this partition is on its way: not idle
        if await self.projector.advance_idle(position, origin):
            self._gauge(position)

    def _gauge(self, checkpoint: int) -> None:
        """The position this process has committed: the checkpoint, or a partition's."""
        if self.projector.sourced:
            PROJECTOR_PARTITION_POSITION.labels(str(self.projector.part)).set(
                self.projector.source_position)
        else:
            PROJECTOR_CHECKPOINT.set(checkpoint)

    def _limit(self, reader: OrderedReader) -> int:
        """Batches grow with the lag: `batch_size` when caught up (whatever is ready is
        folded at once), up to `batch_max` when that many wait."""
        return max(self.settings.batch_size, min(reader.behind, self.settings.batch_max))

    async def _fold(self, items: list[Entry], after: int) -> None:
        started = time.perf_counter()
        with batch_span("fold", [e.headers or {} for e in items],
                        **{"rs.first_seq": items[0].seq, "rs.size": len(items)}):
            checkpoint = await self.projector.apply_batch(items, after=after)
        self._gauge(checkpoint)
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
        settings.database_url, schema=settings.db_schema,
        # a connection per partition this replica may fold, side by side
        max_size=max(settings.pool_size, min(settings.partitions + 1, 32)),
        settings=settings.session_settings(), partitions=settings.partitions,
    ) as store:
        async with Bus.connect(settings.bus(), name=SERVICE) as bus:
            await bus.provision()
            if settings.partitions > 1:
                await provision_view(
                    bus.js, bus.stream, settings.prefix, settings.partitions,
                    replicas=settings.stream_replicas, max_age_s=settings.stream_max_age_s,
                )  # fmt: skip
                await Partitioned(settings, bus, store.pool).run(stop, ready)
            else:
                loop = FoldLoop(settings, bus, Projector(store.pool))
                log.info("projector.started", checkpoint=await store.read_models.checkpoint())
                if ready is not None:
                    ready.set()
                await loop.run(stop)
    log.info("projector.stopped")


class Partitioned:
    """This replica's share of the P partitions: a fold loop per partition it holds a
    lease on, started when it claims the lease and stopped when it loses or gives it
    back (`leases.py`)."""

    def __init__(self, settings: ProjectorSettings, bus: Bus, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.bus = bus
        self.pool = pool
        self.leases = Leases(bus.js, bus.stream, settings.partitions,
                             ttl_s=settings.lease_ttl_s, replicas=settings.stream_replicas)
        self.loops: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}
        self.log = logger.bind(service=SERVICE, replica=self.leases.replica,
                               partitions=settings.partitions)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        self.log.info("projector.started")
        with contextlib.suppress(Exception):  # NATS away: the first tick tries again
            await self.leases.announce()
            await _wait(stop, min(1.0, self.settings.lease_renew_s))
        try:
            while not stop.is_set():
                try:
                    held = await self.leases.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS away: the loops carry on meanwhile
                    self.log.warning("projector.leases_failed",
                                     error=f"{type(exc).__name__}: {exc}")
                else:
                    await self._converge(held)
                if ready is not None:
                    ready.set()
                await _wait(stop, self.settings.lease_renew_s)
        finally:
            await self._converge(set())
            with contextlib.suppress(Exception):
                await self.leases.release()

    async def _converge(self, held: set[int]) -> None:
        for part in sorted(set(self.loops) - held):
            halt, task = self.loops.pop(part)
            halt.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            self.log.info("projector.partition_stopped", partition=part)
        for part in sorted(held - set(self.loops)):
            projector = Projector(self.pool, partitions=self.settings.partitions, part=part)
            halt = asyncio.Event()
            loop = FoldLoop(self.settings, self.bus, projector)
            self.loops[part] = (halt, asyncio.create_task(loop.run(halt)))
            self.log.info("projector.partition_started", partition=part)
