"""Batches commit with their checkpoint: redelivery and restarts change nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from runstream.bus import stream_identity
from runstream.contracts import LogAppended
from runstream.projector.projector import OutOfOrder, Projector, StreamMismatch
from runstream.store import create_pool, migrate
from services.projector.tests.unit.projector_helpers import Script, dump, publish_story, read_items


async def _fresh_projector(database_url: str, schema: str) -> tuple[asyncpg.Pool, Projector]:
    pool = await create_pool(database_url, schema=schema, max_size=2)
    await migrate(pool, schema)
    return pool, Projector(pool, lock_key=None, notify=False)


async def test_a_redelivered_batch_leaves_the_read_models_unchanged(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    items = await read_items(js, stream.stream, await publish_story(script))

    first = await projector.apply_batch(items)
    before = await dump(pool)
    again = await projector.apply_batch(items)

    assert first == again == items[-1][0]
    assert await dump(pool) == before


async def test_a_restart_mid_batch_converges_to_the_same_read_models(
    script: Script, js: JetStreamContext, stream: Any, database_url: str
) -> None:
    items = await read_items(js, stream.stream, await publish_story(script))
    once_pool, once = await _fresh_projector(database_url, "once")
    crash_pool, crashed = await _fresh_projector(database_url, "crashed")
    try:
        await once.apply_batch(items)

        # Committed the first half, "crashed" before acking: everything comes again.
        await crashed.apply_batch(items[: len(items) // 2])
        await crashed.apply_batch(items)

        assert await dump(crash_pool, "crashed") == await dump(once_pool, "once")
    finally:
        await once_pool.close()
        await crash_pool.close()


async def test_events_apply_one_at_a_time_exactly_as_in_one_batch(
    script: Script, js: JetStreamContext, stream: Any, database_url: str
) -> None:
    items = await read_items(js, stream.stream, await publish_story(script))
    whole_pool, whole = await _fresh_projector(database_url, "whole")
    single_pool, single = await _fresh_projector(database_url, "single")
    try:
        await whole.apply_batch(items)
        for item in items:
            await single.apply_batch([item])
        assert await dump(single_pool, "single") == await dump(whole_pool, "whole")
    finally:
        await whole_pool.close()
        await single_pool.close()


async def test_undecodable_bytes_become_a_poison_row_and_folding_goes_on(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    created = script.created()
    [created_seq] = await script.publish(created)
    bad_seq = await script.publish_raw(f"{stream.prefix}.{script.session_id}.session", b"{oops")
    read = await script.publish(script.requested())
    checkpoint = await projector.apply_batch(
        await read_items(js, stream.stream, [created_seq, bad_seq, *read])
    )

    assert checkpoint == read[-1]
    poison = await pool.fetch("SELECT seq, subject, data, error FROM poison_events")
    assert [(r["seq"], r["data"]) for r in poison] == [(bad_seq, b"{oops")]
    assert poison[0]["error"].startswith("decode:")
    assert await pool.fetchval("SELECT status FROM sessions") == "analyzing"


async def test_an_event_postgres_refuses_is_poisoned_alone_and_the_batch_commits(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    req = script.requested()
    bad = script.msg(LogAppended, req.message_id, text="nul \x00 byte")
    good = script.msg(LogAppended, req.message_id, text="fine")
    seqs = await script.publish(script.created(), req, bad, good)

    checkpoint = await projector.apply_batch(await read_items(js, stream.stream, seqs))

    assert checkpoint == seqs[-1]
    assert await pool.fetchval("SELECT array_agg(text) FROM message_logs") == ["fine"]
    poison = await pool.fetchrow("SELECT seq, error FROM poison_events")
    assert poison["seq"] == seqs[2]
    assert poison["error"].startswith("fold:")


async def test_items_at_or_below_the_checkpoint_are_skipped_even_when_new(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    seqs = await script.publish(script.created(), script.requested())
    items = await read_items(js, stream.stream, seqs)
    await projector.apply_batch(items[1:])  # checkpoint jumps past seqs[0]
    await projector.apply_batch(items[:1])

    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0
    assert await pool.fetchval("SELECT seq FROM projection_checkpoints") == seqs[1]


async def test_a_batch_that_does_not_continue_the_checkpoint_is_refused_and_writes_nothing(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    items = await read_items(js, stream.stream, await publish_story(script))
    await projector.apply_batch(items[:3], after=0)
    before = await dump(pool)
    # Items 4..n continue sequence 3; a batch claiming to continue 5 leaves a hole (4, 5).
    with pytest.raises(OutOfOrder) as refused:
        await projector.apply_batch(items[5:], after=items[4][0])
    assert (refused.value.after, refused.value.checkpoint) == (items[4][0], items[2][0])
    assert await dump(pool) == before
    assert await projector.apply_batch(items[3:], after=items[2][0]) == items[-1][0]


async def test_the_checkpoint_is_bound_to_the_stream_it_counts_in(
    script: Script, js: JetStreamContext, stream: Any, projector: Projector, pool: asyncpg.Pool
) -> None:
    seqs = await publish_story(script)
    await projector.apply_batch(await read_items(js, stream.stream, seqs), after=0)
    row = await pool.fetchrow("SELECT stream, stream_created FROM projection_checkpoints")
    identity = await stream_identity(js, stream.stream)
    assert (row["stream"], row["stream_created"]) == (stream.stream, identity.created)

    # The same name, created again (a wiped volume, an operator's `stream rm`).
    await js.delete_stream(stream.stream)
    await js.add_stream(name=stream.stream, subjects=[f"{stream.prefix}.>"])
    again = await script.publish(*[script.created() for _ in range(len(seqs) + 5)])
    fresh = Projector(pool)
    with pytest.raises(StreamMismatch, match="folded from stream"):
        await fresh.position(await stream_identity(js, stream.stream))
    with pytest.raises(StreamMismatch):  # and no batch of the new stream lands either
        await fresh.apply_batch(await read_items(js, stream.stream, again[:2]), after=0)


async def test_a_checkpoint_beyond_the_end_of_the_stream_is_refused(
    script: Script, js: JetStreamContext, stream: Any, pool: asyncpg.Pool
) -> None:
    seqs = await script.publish(script.created(), script.requested())
    # Read models from before the identity was recorded, and further than this stream.
    await pool.execute("INSERT INTO projection_checkpoints (name, seq) VALUES ('projector', $1)",
                       seqs[-1] + 100)
    with pytest.raises(StreamMismatch, match="not the stream they were folded from"):
        await Projector(pool).position(await stream_identity(js, stream.stream))


async def test_read_models_from_before_the_binding_adopt_the_stream_they_fit(
    script: Script, js: JetStreamContext, stream: Any, pool: asyncpg.Pool
) -> None:
    seqs = await script.publish(script.created(), script.requested(), script.created())
    legacy = Projector(pool)
    await legacy.apply_batch(await read_items(js, stream.stream, seqs[:2]), after=0)
    assert await pool.fetchval("SELECT stream_created FROM projection_checkpoints") is None
    projector = Projector(pool)
    assert await projector.position(await stream_identity(js, stream.stream)) == seqs[1]
    await projector.apply_batch(await read_items(js, stream.stream, seqs[2:]), after=seqs[1])
    assert await pool.fetchval("SELECT stream FROM projection_checkpoints") == stream.stream
