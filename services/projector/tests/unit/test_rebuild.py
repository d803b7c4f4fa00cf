"""Rebuild folds the whole stream into a fresh schema and swaps it in: equal to live."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from runstream.bus import Bus, BusSettings, OrderedReader, stream_identity
from runstream.contracts import LogAppended, StepStarted
from runstream.projector.projector import Projector
from runstream.projector.rebuild import rebuild, rebuild_from
from runstream.store import ReadModels, create_pool, migrate
from runstream.testing import wait_until
from services.projector.tests.unit.projector_helpers import (
    STORY_POISON,
    Script,
    dump,
    publish_story,
    read_items,
)


async def _schemas(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'runstream%' ORDER BY 1"
    )
    return [r["nspname"] for r in rows]


async def test_a_rebuilt_read_model_equals_the_live_one(
    script: Script,
    js: JetStreamContext,
    stream: Any,
    projector: Projector,
    pool: asyncpg.Pool,
    database_url: str,
    nats_url: str,
) -> None:
    seqs = await publish_story(script)
    await projector.apply_batch(await read_items(js, stream.stream, seqs))
    live = await dump(pool)

    settings = BusSettings(url=nats_url, stream=stream.stream, prefix=stream.prefix)
    async with Bus.connect(settings, name="rebuild-test") as bus:
        report = await rebuild(database_url, bus, batch=7)  # several batches

    assert await dump(pool) == live
    assert (report.checkpoint, report.previous_checkpoint) == (seqs[-1], seqs[-1])
    assert (report.events, report.poison) == (len(seqs), STORY_POISON)
    assert await _schemas(pool) == ["runstream"]

    # The live projector goes on in the swapped-in schema, through the same pool.
    req = script.requested()
    more = await script.publish(req, script.msg(LogAppended, req.message_id, text="after swap"))
    assert await projector.apply_batch(await read_items(js, stream.stream, more)) == more[-1]
    text = "SELECT text FROM message_logs WHERE message_id = $1"
    assert await pool.fetchval(text, req.message_id) == "after swap"


async def test_a_rebuild_with_no_live_schema_creates_it(
    script: Script, js: JetStreamContext, stream: Any, database_url: str
) -> None:
    seqs = await script.publish(script.created(), script.requested())
    report = await rebuild_from(
        database_url, js, stream.stream, f"{stream.prefix}.>", schema="fresh"
    )
    assert (report.checkpoint, report.previous_checkpoint) == (seqs[-1], None)
    pool = await create_pool(database_url, schema="fresh", max_size=1)
    try:
        assert await pool.fetchval("SELECT count(*) FROM messages") == 2
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await pool.close()


async def _live_loop(
    js: JetStreamContext, stream: str, prefix: str, projector: Projector, stop: asyncio.Event
) -> None:
    """A live projector: read in order from the checkpoint, fold with `after`."""
    reader = OrderedReader(js, stream, f"{prefix}.>", batch=16, fetch_timeout_s=0.2)
    await reader.start(await projector.position(await stream_identity(js, stream)))
    try:
        while not stop.is_set():
            after = reader.position
            if items := await reader.next_batch():
                await projector.apply_batch(items, after=after)
    finally:
        await reader.close()


async def test_a_rebuild_during_live_traffic_loses_and_repeats_nothing(
    script: Script,
    js: JetStreamContext,
    stream: Any,
    projector: Projector,
    pool: asyncpg.Pool,
    read_models: ReadModels,
    database_url: str,
) -> None:
    stop = asyncio.Event()
    live = asyncio.create_task(_live_loop(js, stream.stream, stream.prefix, projector, stop))
    try:
        await publish_story(script)
        req = script.requested()
        await script.publish(req)

        async def traffic() -> int:
            last = 0
            for i in range(150):
                [last] = await script.publish(
                    script.msg(LogAppended, req.message_id, text=f"line {i}")
                )
                if i % 10 == 0:
                    await script.publish(
                        script.msg(StepStarted, req.message_id, step=f"s{i}", index=i, total=150)
                    )
                    await asyncio.sleep(0)
            return last

        writer = asyncio.create_task(traffic())
        report = await rebuild_from(database_url, js, stream.stream, f"{stream.prefix}.>", batch=20)
        last = await writer
        assert await read_models.wait_for_seq(last, timeout=20)
        assert report.checkpoint >= (report.previous_checkpoint or 0)
    finally:
        stop.set()
        await live

    # Reference: the whole stream folded once, from scratch, into another schema.
    ref_pool = await create_pool(database_url, schema="reference", max_size=1)
    try:
        await migrate(ref_pool, "reference")
        info = await js.stream_info(stream.stream)
        items = await read_items(js, stream.stream, list(range(1, info.state.last_seq + 1)))
        reference = Projector(ref_pool, lock_key=None, notify=False)
        await reference.position(await stream_identity(js, stream.stream))
        await reference.apply_batch(items)
        assert await dump(pool) == await dump(ref_pool, "reference")
        assert await wait_until(
            lambda: pool.fetchval("SELECT count(*) = 150 FROM message_logs WHERE text LIKE 'line%'")
        )
    finally:
        await ref_pool.close()
