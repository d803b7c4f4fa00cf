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

With P partitions (`partitions` > 1) step 1 folds each partition from the partitioned
view, with its own checkpoint and running means, exactly as the live partition would;
step 2 brings every partition to the end under the one lock, moves the idle ones up to
the end of the stream (as a live idle partition would) and swaps once.
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
from runstream.bus.partitions import (
    partition_filter,
    provision_view,
    remove_other_views,
    source_of,
    view_name,
)
from runstream.projector.projector import (
    PROJECTOR_LOCK,
    Projector,
    checkpoint_name,
    notify_payload,
    session_settings,
)
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
    dsn: str, bus: Bus, *, schema: str = "runstream", batch: int = BATCH, partitions: int = 1
) -> RebuildReport:
    """Fold the whole stream of `bus` into a fresh schema and swap it in for `schema`."""
    return await rebuild_from(dsn, bus.js, bus.stream, bus.subjects.all, schema=schema,
                              batch=batch, partitions=partitions, prefix=bus.settings.prefix)


async def rebuild_from(
    dsn: str,
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    schema: str = "runstream",
    batch: int = BATCH,
    lock_timeout_s: float = 30.0,
    partitions: int = 1,
    prefix: str | None = None,
) -> RebuildReport:
    validate_schema(schema)
    if partitions > 1:
        assert prefix is not None, "a partitioned rebuild reads the view of `prefix`"
        await provision_view(js, stream, prefix, partitions)
        source = view_name(stream, partitions)
        parts = [
            (OrderedReader(js, source, partition_filter(prefix, k), batch=batch,
                           name_prefix="rebuild"), k)
            for k in range(partitions)
        ]  # fmt: skip
    else:
        source = stream
        parts = [(OrderedReader(js, stream, subject, batch=batch, name_prefix="rebuild"), 0)]
    started = time.perf_counter()
    suffix = secrets.token_hex(4)
    fresh = f"{schema[:40]}_rebuild_{suffix}"
    old = f"{schema[:40]}_old_{suffix}"
    log = logger.bind(schema=schema, fresh=fresh)
    pool = await create_pool(dsn, schema=fresh, min_size=1, max_size=2,
                             settings=session_settings())
    events = 0
    folds: list[tuple[OrderedReader, Projector]] = []
    try:
        await migrate(pool, fresh)
        if partitions > 1:
            await wait_sourced(js, stream, source)
        identity = await stream_identity(js, source)
        for reader, part in parts:
            projector = Projector(pool, lock_key=None, notify=False, partitions=partitions,
                                  part=part)
            await projector.position(identity)  # binds the stream
            folds.append((reader, projector))
            await reader.start(0)
            events += await _fold_to_end(reader, projector)
            log.info("rebuild.caught_up", part=part, position=reader.position, events=events)

        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PROJECTOR_LOCK)
            live_exists = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
            )
            previous = await _live_checkpoint(conn, schema, partitions) if live_exists else None
            if partitions > 1:  # the view holds at least what the live projector could fold
                await wait_sourced(js, stream, source)
            for reader, projector in folds:
                while items := await reader.read_to_end():
                    await projector.apply_in_transaction(conn, items)
                    events += len(items)
            if partitions > 1:
                await _advance_idle(conn, js, source, folds)
            checkpoint = await _checkpoint(conn, partitions)
            if previous is not None and checkpoint < previous:
                # Only when the stream lost messages the live model had seen (purged or
                # recreated): the rebuild is then the truth of what the stream still holds.
                log.warning("rebuild.behind_live", checkpoint=checkpoint, live=previous)
            poison = await conn.fetchval("SELECT count(*) FROM poison_events")
            positions = await conn.fetch(
                "SELECT split_part(name, '.', 3)::int, coalesce(source_seq, 0)"
                " FROM projection_checkpoints WHERE name = ANY($1::text[])",
                [checkpoint_name(partitions, k) for k in range(partitions)],
            ) if partitions > 1 else []
            # Dropping the old tables waits for readers still inside them; give up (and
            # leave the live schema untouched) rather than queue every new reader behind.
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
            if live_exists:
                await conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{old}"')
            await conn.execute(f'ALTER SCHEMA "{fresh}" RENAME TO "{schema}"')
            if live_exists:
                await conn.execute(f'DROP SCHEMA "{old}" CASCADE')
            if partitions > 1:
                for part, covered in positions:
                    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL,
                                       notify_payload(part, covered))
            else:
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(checkpoint))
        fresh_swapped = True
    except BaseException:
        fresh_swapped = False
        raise
    finally:
        for reader, _ in parts:
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
    # The read models no longer come from any other partition count's view.
    removed = await remove_other_views(js, stream, partitions)
    if removed:
        log.info("rebuild.views_removed", views=removed)
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


async def wait_sourced(
    js: JetStreamContext, stream: str, view: str, *, timeout_s: float = 120.0
) -> None:
    """Wait until the view holds every event the stream holds now: the origin of the
    view's last message reaches the stream's last sequence (or, that message deleted
    from the stream meanwhile, the view reports no lag)."""
    target = int((await js.stream_info(stream)).state.last_seq)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        info = await js.stream_info(view)
        last = int(info.state.last_seq)
        origin = 0
        if last > 0:
            origin, _ = source_of((await js.get_msg(view, seq=last, direct=True)).headers)
        if origin >= target:
            return
        waited = loop.time() - started
        if waited > 2.0 and info.sources and all(not src.lag for src in info.sources):
            return
        if waited > timeout_s:
            raise TimeoutError(f"view {view} reached {origin} of {stream}'s {target} "
                               f"within {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _advance_idle(
    conn: asyncpg.Connection, js: JetStreamContext, view: str,
    folds: list[tuple[OrderedReader, Projector]],
) -> None:
    """Every partition at the end of the view: move each up to the origin of the view's
    last message, as an idle live partition would (docs/projector.md: L first, then the
    consumers)."""
    last = int((await js.stream_info(view)).state.last_seq)
    if last <= 0:
        return
    origin, _ = source_of((await js.get_msg(view, seq=last, direct=True)).headers)
    for reader, projector in folds:
        if await reader.pending() == 0:
            await projector.advance_in_transaction(conn, reader.position, origin)


async def _checkpoint(conn: asyncpg.Connection, partitions: int, schema: str | None = None) -> int:
    """The position the read models cover: the checkpoint, or with partitions the least
    `source_seq` of them all."""
    table = f'"{schema}".projection_checkpoints' if schema else "projection_checkpoints"
    if partitions <= 1:
        seq = await conn.fetchval(f"SELECT seq FROM {table} WHERE name = $1", PROJECTOR)
        return int(seq or 0)
    names = [checkpoint_name(partitions, k) for k in range(partitions)]
    seq = await conn.fetchval(
        f"SELECT CASE WHEN count(*) = $2 THEN min(coalesce(source_seq, 0)) ELSE 0 END"
        f" FROM {table} WHERE name = ANY($1::text[])",
        names, partitions,
    )  # fmt: skip
    return int(seq or 0)


async def _live_checkpoint(conn: asyncpg.Connection, schema: str, partitions: int) -> int | None:
    """The live projector checkpoint, or None when the live schema does not exist yet."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f'"{schema}".projection_checkpoints'
    )
    if not exists:
        return None
    return await _checkpoint(conn, partitions, schema)


async def _drop_quietly(dsn: str, schema: str) -> None:
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        logger.warning("rebuild.cleanup_failed", schema=schema, error=str(exc))
