"""The dataset cache on a real object store: content-addressed, checked on every read.

Fetches are counted twice: by the cache itself, and by the server's side of it — every
object read (nats-py's `ObjectStore.get`) creates a consumer on the bucket's stream, and
a second connection sees each of those create requests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator

import nats.js.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import api

from runstream.bus import Bus, DatasetCache, delete_dataset, get_dataset, put_dataset
from runstream.bus.dataset_cache import digest_of
from runstream.testing import wait_until


async def _now(value: bool) -> bool:
    return value


class ReadCounter:
    """Object reads as the server sees them: consumer creates on the bucket's stream."""

    def __init__(self, nc: NATS, subs: list[Subscription]) -> None:
        self.nc = nc
        self.subs = subs

    async def count(self) -> int:
        # The requests went out before their replies came back to the reader; a round
        # trip on this connection then follows every copy the server forwarded here.
        await self.nc.flush()
        return sum(sub.delivered for sub in self.subs)


@pytest_asyncio.fixture
async def reads(bus: Bus, nc: NATS) -> AsyncIterator[ReadCounter]:
    stream = f"OBJ_{bus.settings.datasets_bucket}"
    subs = [
        await nc.subscribe(f"$JS.API.CONSUMER.CREATE.{stream}"),
        await nc.subscribe(f"$JS.API.CONSUMER.CREATE.{stream}.>"),
    ]
    await nc.flush()
    try:
        yield ReadCounter(nc, subs)
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_the_same_bytes_under_two_names_are_fetched_once(
    bus: Bus, reads: ReadCounter
):
    data = os.urandom(300_000)
    await put_dataset(bus, "first-upload", data)
    await put_dataset(bus, "same-file-again", data)
    cache = DatasetCache()
    assert await cache.get(bus, "first-upload") == data
    assert await cache.get(bus, "same-file-again") == data
    assert await cache.get(bus, "first-upload") == data
    assert cache.fetches == 1 and await reads.count() == 1
    assert digest_of(data) in cache and cache.held_bytes == len(data)


async def test_a_deleted_dataset_is_never_served_and_fails_as_an_uncached_read(bus: Bus):
    await put_dataset(bus, "gone", b"a,b\n1,2\n")
    cache = DatasetCache()
    assert await cache.get(bus, "gone") == b"a,b\n1,2\n"
    await delete_dataset(bus, "gone")
    with pytest.raises(nats.js.errors.NotFoundError) as uncached:
        await get_dataset(bus, "gone")
    with pytest.raises(nats.js.errors.NotFoundError) as cached:
        await cache.get(bus, "gone")
    assert type(cached.value) is type(uncached.value)


async def test_a_name_put_again_with_new_bytes_reads_the_new_bytes(bus: Bus):
    cache = DatasetCache()
    await put_dataset(bus, "sales", b"region\nNorth\n")
    assert await cache.get(bus, "sales") == b"region\nNorth\n"
    await put_dataset(bus, "sales", b"region\nSouth\n")
    assert await cache.get(bus, "sales") == b"region\nSouth\n"
    assert cache.fetches == 2


async def test_the_byte_bound_evicts_the_least_recently_used(bus: Bus):
    blobs = {name: os.urandom(1000) for name in "abcd"}
    for name, data in blobs.items():
        await put_dataset(bus, name, data)
    cache = DatasetCache(max_bytes=3000)
    for name in "abc":
        await cache.get(bus, name)
    await cache.get(bus, "a")  # a is now the most recently used; b the least
    await cache.get(bus, "d")
    assert cache.fetches == 4 and cache.held_bytes == 3000
    assert digest_of(blobs["b"]) not in cache
    assert all(digest_of(blobs[n]) in cache for n in "acd")
    assert await cache.get(bus, "a") == blobs["a"] and cache.fetches == 4
    assert await cache.get(bus, "b") == blobs["b"] and cache.fetches == 5


async def test_an_object_larger_than_the_bound_is_read_each_time(bus: Bus):
    await put_dataset(bus, "big", os.urandom(5000))
    cache = DatasetCache(max_bytes=4999)
    await cache.get(bus, "big")
    await cache.get(bus, "big")
    assert cache.fetches == 2 and len(cache) == 0 and cache.held_bytes == 0


async def test_a_bound_of_zero_turns_the_cache_off(bus: Bus, reads: ReadCounter):
    data = os.urandom(2000)
    await put_dataset(bus, "x", data)
    cache = DatasetCache(max_bytes=0)
    assert [await cache.get(bus, "x") for _ in range(3)] == [data] * 3
    assert cache.fetches == 3 and await reads.count() == 3 and len(cache) == 0


async def test_concurrent_reads_of_one_missing_object_fetch_it_once(
    bus: Bus, reads: ReadCounter
):
    # Big enough that its fetch (chunk by chunk) outlasts the ten info reads.
    data = os.urandom(4 * 1024 * 1024)
    await put_dataset(bus, "popular", data)
    cache = DatasetCache()
    got = await asyncio.gather(*(cache.get(bus, "popular") for _ in range(10)))
    assert all(g == data for g in got)
    assert cache.fetches == 1 and await reads.count() == 1


async def test_a_reader_cancelled_while_waiting_does_not_cancel_the_shared_fetch(bus: Bus):
    data = os.urandom(4 * 1024 * 1024)
    await put_dataset(bus, "shared", data)
    cache = DatasetCache()
    owner = asyncio.create_task(cache.get(bus, "shared"))
    waiter = asyncio.create_task(cache.get(bus, "shared"))
    await wait_until(lambda: _now(cache.waits == 1))  # the waiter waits on the owner's fetch
    waiter.cancel()
    assert await owner == data
    assert waiter.cancelled() and cache.fetches == 1


async def test_bytes_that_do_not_match_their_digest_are_never_kept(bus: Bus):
    """An object whose info claims another digest than its chunks have (as a faulty
    writer could leave it): the read fails as it did uncached, and nothing is kept under
    that digest — so a real object with that digest is still fetched, not served the
    mismatching bytes."""
    real, claimed = b"region\nNorth\n", b"region\nSouth\n"
    await put_dataset(bus, "honest", real)
    store = await bus.datasets_bucket()
    info = await store.get_info("honest")
    info.name = "faulty"
    info.digest = digest_of(claimed)
    name64 = base64.urlsafe_b64encode(b"faulty").decode()
    await bus.js.publish(
        f"$O.{bus.settings.datasets_bucket}.M.{name64}",
        json.dumps(info.as_dict()).encode(),
        headers={api.Header.ROLLUP: "sub"},
    )
    cache = DatasetCache()
    with pytest.raises(nats.js.errors.DigestMismatchError):
        await get_dataset(bus, "faulty")
    with pytest.raises(nats.js.errors.DigestMismatchError):
        await cache.get(bus, "faulty")
    assert digest_of(claimed) not in cache and len(cache) == 0
    await put_dataset(bus, "true-south", claimed)
    assert await cache.get(bus, "true-south") == claimed
    assert cache.fetches == 2
