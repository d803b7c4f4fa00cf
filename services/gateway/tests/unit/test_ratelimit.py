"""The shared rate-limit store and the limit settings."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from runstream.gateway.ratelimit import KVStore, parse_limit
from runstream.gateway.settings import GatewaySettings


@pytest.mark.parametrize(("text", "parsed"), [
    ("120/minute", ("minute", 120)), (" 5/Second ", ("second", 5)), ("1/day", ("day", 1)),
    ("off", None),
])
def test_a_limit_reads_as_count_per_unit_or_off(text, parsed):
    assert parse_limit(text) == parsed


@pytest.mark.parametrize("text", ["0/minute", "ten/minute", "10/fortnight", "10", ""])
def test_a_limit_that_cannot_be_read_is_refused_at_start_up(text):
    with pytest.raises(ValidationError):
        GatewaySettings(jwt_secret="x" * 32, rate_limit_writes=text)


async def test_concurrent_hits_from_several_replicas_are_all_counted(js, stream_names):
    """Two stores on one bucket stand for two gateways: no hit is lost to a race."""
    bucket = f"RL_{stream_names.stream}"
    stores = [KVStore(bucket, ttl_s=60), KVStore(bucket, ttl_s=60)]
    for store in stores:
        await store.open(js)
    try:
        results = await asyncio.gather(*(
            stores[i % 2].hit("owner:alice", limit=20, window_s=60) for i in range(50)))
        assert sum(allowed for _, allowed in results) == 20
        other, allowed = await stores[0].hit("owner:bob", limit=20, window_s=60)
        assert allowed and other.count == 1
    finally:
        await js.delete_key_value(bucket)


async def test_a_burst_from_one_owner_is_counted_exactly_in_a_few_writes(js, stream_names):
    """200 concurrent hits of one owner on one replica: exactly the limit admitted, each
    admitted hit with its own remaining count, and a handful of writes, not 200."""
    bucket = f"RL_{stream_names.stream}"
    store = KVStore(bucket, ttl_s=60)
    await store.open(js)
    try:
        results = await asyncio.gather(*(
            store.hit("owner:alice", limit=150, window_s=60) for _ in range(200)))
        admitted = sorted(window.count for window, allowed in results if allowed)
        assert admitted == list(range(1, 151))
        assert all(window.count == 150 for window, allowed in results if not allowed)
        entry = await store.kv.get(store._key("owner:alice"))
        assert entry.revision is not None and entry.revision <= 20, entry.revision
        assert not store._drainers and not store._queued  # nothing left behind
    finally:
        await js.delete_key_value(bucket)


async def test_the_store_keeps_values_and_their_expiry(js, stream_names):
    bucket = f"RL_{stream_names.stream}"
    store = KVStore(bucket, ttl_s=60)
    await store.open(js)
    try:
        await store.set("k", b"v", expires_in=30)
        assert await store.get("k") == b"v" and await store.exists("k")
        assert 0 < (await store.expires_in("k") or 0) <= 30
        await store.delete("k")
        assert await store.get("k") is None and not await store.exists("k")
    finally:
        await js.delete_key_value(bucket)


class CountingStore(KVStore):
    """Counts the store's reads of the bucket (its writes show in the key's revision)."""

    reads = 0

    async def _entry(self, key):
        self.reads += 1
        return await super()._entry(key)


async def test_a_hit_on_a_key_this_process_knows_is_one_write_and_no_read(js, stream_names):
    bucket = f"RL_{stream_names.stream}"
    store = CountingStore(bucket, ttl_s=60)
    await store.open(js)
    try:
        counts = [(await store.hit("owner:alice", limit=10, window_s=60))[0].count
                  for _ in range(5)]
        assert counts == [1, 2, 3, 4, 5]
        assert store.reads == 0, "a new key is written blind, then from the known revision"
        entry = await store.kv.get(store._key("owner:alice"))
        assert entry.revision is not None
        assert (await store.hit("owner:alice", limit=10, window_s=60))[0].count == 6
        assert (await store.kv.get(store._key("owner:alice"))).revision == entry.revision + 1
        assert store.reads == 0
    finally:
        await js.delete_key_value(bucket)


async def test_replicas_taking_turns_on_one_owner_meet_one_limit(js, stream_names):
    """Each write of one replica makes the other's known revision stale: every hit is
    still counted once, in order, and the limit holds for both together."""
    bucket = f"RL_{stream_names.stream}"
    a, b = CountingStore(bucket, ttl_s=60), CountingStore(bucket, ttl_s=60)
    for store in (a, b):
        await store.open(js)
    try:
        answers = [await (a if i % 2 else b).hit("owner:alice", limit=5, window_s=60)
                   for i in range(8)]
        assert [(w.count, ok) for w, ok in answers] == [
            (1, True), (2, True), (3, True), (4, True), (5, True), (5, False), (5, False),
            (5, False)]
        assert a.reads >= 3 and b.reads >= 2, "a stale revision is found out, then read"
        # Both now know the window is full: refusing costs neither a read nor a write.
        reads = a.reads + b.reads
        revision = (await a.kv.get(a._key("owner:alice"))).revision
        assert not (await a.hit("owner:alice", limit=5, window_s=60))[1]
        assert a.reads + b.reads == reads
        assert (await a.kv.get(a._key("owner:alice"))).revision == revision
    finally:
        await js.delete_key_value(bucket)


async def test_a_key_deleted_by_another_replica_counts_afresh(js, stream_names):
    """A delete leaves a marker on the key's subject: the write after it must expect the
    marker's revision, neither 0 nor the revision this process knew."""
    bucket = f"RL_{stream_names.stream}"
    a, b = KVStore(bucket, ttl_s=60), KVStore(bucket, ttl_s=60)
    for store in (a, b):
        await store.open(js)
    try:
        for _ in range(2):
            await a.hit("owner:alice", limit=3, window_s=60)
        await b.delete("owner:alice")
        window, allowed = await a.hit("owner:alice", limit=3, window_s=60)
        assert allowed and window.count == 1
        window, allowed = await b.hit("owner:alice", limit=3, window_s=60)
        assert allowed and window.count == 2
    finally:
        await js.delete_key_value(bucket)


async def test_hits_queued_behind_a_caller_that_gives_up_are_still_counted(js, stream_names):
    """The first hit on a key counts itself in its caller's task; when that caller is
    cancelled (its time ran out), the hits that queued behind it get a drainer."""
    bucket = f"RL_{stream_names.stream}"
    store = KVStore(bucket, ttl_s=60)
    await store.open(js)
    try:
        first = asyncio.create_task(store.hit("owner:alice", limit=10, window_s=60))
        await asyncio.sleep(0)  # it runs up to its KV write and waits for the answer
        assert store._drainers == {"owner:alice": None}
        behind = [asyncio.create_task(store.hit("owner:alice", limit=10, window_s=60))
                  for _ in range(3)]
        await asyncio.sleep(0)  # they queue
        assert len(store._queued["owner:alice"]) == 3
        first.cancel()
        results = await asyncio.gather(*behind)
        assert all(allowed for _, allowed in results)
        counts = sorted(window.count for window, _ in results)
        assert counts[-1] - counts[0] == 2 and counts[-1] <= 4  # the cancelled one may count
        assert not store._drainers and not store._queued
    finally:
        await js.delete_key_value(bucket)
