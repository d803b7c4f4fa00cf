"""Rebuild the read models from the stream into a fresh schema, then swap it in.

1. Create and migrate `<schema>_rebuild_<hex>`; fold the whole stream into it, in stream
   order, through an ordered reader (batches of 2048), binding the new checkpoint to the
   stream as it is now. The live projector keeps running meanwhile.
2. Take the advisory lock the live projector takes for each batch: it can no longer
   commit. Fold what remains up to the end of the stream *now* (so the new checkpoint is
   at least the live one), then in the same transaction rename live -> old, new -> live,
   drop old, and NOTIFY the new checkpoint.
3. The live projector's next batch resolves `search_path` to the new schema and skips
   every sequence at or below its checkpoint. A live projector that refused to fold
   (its read models belonged to another stream) finds the new binding and resumes.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg
import msgspec
import structlog
from nats.js import JetStreamContext

from runstream.bus import Bus, OrderedReader, stream_identity
from runstream.projector.projector import PROJECTOR_LOCK, Projector, session_settings
from runstream.store import NOTIFY_CHANNEL, PROJECTOR, create_pool, migrate, validate_schema

logger = structlog.get_logger()

BATCH = 2048


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    schema: str
    events: int  # stream messages folded
    poison: int  # of which became poison rows
    checkpoint: int  # the swapped-in checkpoint
    previous_checkpoint: int | None  # the live one it replaced (None: no live schema)
    duration_s: float


async def rebuild(
    dsn: str, bus: Bus, *, schema: str = "runstream", batch: int = BATCH
) -> RebuildReport:
    """Fold the whole stream of `bus` into a fresh schema and swap it in for `schema`."""
    return await rebuild_from(dsn, bus.js, bus.stream, bus.subjects.all, schema=schema, batch=batch)


async def rebuild_from(
    dsn: str,
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    schema: str = "runstream",
    batch: int = BATCH,
    lock_timeout_s: float = 30.0,
) -> RebuildReport:
    validate_schema(schema)
    started = time.perf_counter()
    suffix = secrets.token_hex(4)
    fresh = f"{schema[:40]}_rebuild_{suffix}"
    old = f"{schema[:40]}_old_{suffix}"
    log = logger.bind(schema=schema, fresh=fresh)
    pool = await create_pool(dsn, schema=fresh, min_size=1, max_size=2,
                             settings=session_settings())
    reader = OrderedReader(js, stream, subject, batch=batch, name_prefix="rebuild")
    events = 0
    try:
        await migrate(pool, fresh)
        projector = Projector(pool, lock_key=None, notify=False)
        await projector.position(await stream_identity(js, stream))  # binds the stream
        await reader.start(0)
        events += await _fold_to_end(reader, projector)
        log.info("rebuild.caught_up", position=reader.position, events=events)

        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTOR_LOCK)
            live_exists = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
            )
            previous = await _live_checkpoint(conn, schema) if live_exists else None
            while items := await reader.read_to_end():
                await projector.apply_in_transaction(conn, items)
                events += len(items)
            checkpoint = await conn.fetchval(
                "SELECT coalesce((SELECT seq FROM projection_checkpoints WHERE name = $1), 0)",
                PROJECTOR,
            )
            if previous is not None and checkpoint < previous:
                # Only when the stream lost messages the live model had seen (purged or
                # recreated): the rebuild is then the truth of what the stream still holds.
                log.warning("rebuild.behind_live", checkpoint=checkpoint, live=previous)
            poison = await conn.fetchval("SELECT count(*) FROM poison_events")
            # Dropping the old tables waits for readers still inside them; give up (and
            # leave the live schema untouched) rather than queue every new reader behind.
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            if live_exists:
                await conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{old}"')
            await conn.execute(f'ALTER SCHEMA "{fresh}" RENAME TO "{schema}"')
            if live_exists:
                await conn.execute(f'DROP SCHEMA "{old}" CASCADE')
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(checkpoint))
        fresh_swapped = True
    except BaseException:
        fresh_swapped = False
        raise
    finally:
        await reader.close()
        await pool.close()
        if not fresh_swapped:
            await _drop_quietly(dsn, fresh)
    report = RebuildReport(
        schema=schema,
        events=events,
        poison=int(poison),
        checkpoint=int(checkpoint),
        previous_checkpoint=previous,
        duration_s=round(time.perf_counter() - started, 3),
    )
    log.info("rebuild.swapped", **msgspec.to_builtins(report))
    return report


async def _fold_to_end(reader: OrderedReader, projector: Projector) -> int:
    """Fold batch after batch to the end of the stream, the next batch read while one
    commits; returns the number of messages folded."""
    events = 0
    fetching = asyncio.ensure_future(reader.read_to_end())
    try:
        while items := await fetching:
            fetching = asyncio.ensure_future(reader.read_to_end())
            await projector.apply_batch(items)
            events += len(items)
    finally:
        fetching.cancel()
        await asyncio.wait([fetching])
    return events


async def _live_checkpoint(conn: asyncpg.Connection, schema: str) -> int | None:
    """The live projector checkpoint, or None when the live schema does not exist yet."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'"{schema}".projection_checkpoints'
    )
    if not exists:
        return None
    seq = await conn.fetchval(
        f'SELECT seq FROM "{schema}".projection_checkpoints WHERE name = $1', PROJECTOR
    )
    return int(seq or 0)


async def _drop_quietly(dsn: str, schema: str) -> None:
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        logger.warning("rebuild.cleanup_failed", schema=schema, error=str(exc))
