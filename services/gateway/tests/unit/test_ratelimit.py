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
