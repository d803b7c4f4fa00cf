"""A worker process's dataset bytes, kept by content digest.

Every read asks the object store for the object's current info first (one JetStream
round trip). That info carries the SHA-256 digest nats-py computed when the object was
put, so the cache is content-addressed: a deleted object fails at that read exactly as
an uncached read would, a name put again with new bytes has a new digest, and the same
file stored under another name (uploaded again in another session) is the same entry.
Bytes are kept only once their own SHA-256 equals the digest they are kept under.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

import structlog
from nats.js.api import ObjectInfo
from nats.js.object_store import ObjectStore

from runstream.bus.objects import dataset_store

if TYPE_CHECKING:
    from runstream.bus.bus import Bus

logger = structlog.get_logger()

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
_DIGEST_PREFIX = "SHA-256="


class Dataset(NamedTuple):
    """An object's bytes and the digest they were checked against ("" when unchecked)."""

    digest: str
    data: bytes


def digest_of(data: bytes) -> str:
    """The digest of `data` as nats-py writes it in an object's info."""
    return _DIGEST_PREFIX + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def _matches(data: bytes, digest: str) -> bool:
    """Whether `digest` (as in an object's info, either case of prefix) is `data`'s."""
    if digest[: len(_DIGEST_PREFIX)].upper() != _DIGEST_PREFIX:
        return False
    try:
        claimed = base64.urlsafe_b64decode(digest[len(_DIGEST_PREFIX):])
    except ValueError:
        return False
    return claimed == hashlib.sha256(data).digest()


class DatasetCache:
    """Dataset bytes by digest, least recently used first out, at most `max_bytes` held.

    `max_bytes=0` keeps nothing (each read fetches, as `get_dataset` does); an object
    larger than `max_bytes` is fetched and never kept. Concurrent reads of one missing
    digest share one fetch. `fetches` counts the objects read from the store, `waits` the
    reads that waited for another's fetch."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max(0, max_bytes)
        self.fetches = 0
        self.waits = 0
        self.held_bytes = 0
        self._held: OrderedDict[str, bytes] = OrderedDict()
        # digest -> the fetch under way; it resolves to None when it failed or brought
        # other bytes (the name was put again meanwhile), and each waiter then fetches.
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}

    def __contains__(self, digest: object) -> bool:
        return digest in self._held

    def __len__(self) -> int:
        return len(self._held)

    async def info(self, bus: Bus, name: str) -> ObjectInfo:
        """The object's current info; ObjectNotFoundError when missing or deleted."""
        store = await dataset_store(bus)
        return await store.get_info(name)

    async def get(self, bus: Bus, name: str) -> bytes:
        return (await self.read(bus, name)).data

    async def read(self, bus: Bus, name: str, info: ObjectInfo | None = None) -> Dataset:
        """The object's bytes with their digest. `info`: one just read by `info()`, to
        spare a second round trip; otherwise it is read here."""
        store = await dataset_store(bus)
        if info is None:
            info = await store.get_info(name)
        digest = info.digest or ""
        if not self._keeps(digest, info.size or 0):
            return await self._fetch(store, name)
        held = self._held.get(digest)
        if held is not None:
            self._held.move_to_end(digest)
            return Dataset(digest, held)
        pending = self._pending.get(digest)
        if pending is not None:
            # Shielded: a waiter cancelled must not cancel the fetch others wait on.
            self.waits += 1
            data = await asyncio.shield(pending)
            if data is not None:
                return Dataset(digest, data)
            return await self._fetch(store, name)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        got: Dataset | None = None
        try:
            got = await self._fetch(store, name)
            return got
        finally:
            del self._pending[digest]
            same = got is not None and got.digest == digest
            future.set_result(got.data if got is not None and same else None)

    def _keeps(self, digest: str, size: int) -> bool:
        return bool(digest) and 0 < self.max_bytes and size <= self.max_bytes

    async def _fetch(self, store: ObjectStore, name: str) -> Dataset:
        """Read the object; keep its bytes if they match the digest of the info they came
        with (the object may have been put again since the caller read its info)."""
        self.fetches += 1
        result = await store.get(name)
        data = bytes(result.data or b"")
        claimed = result.info.digest or ""
        if not claimed:
            return Dataset("", data)
        if not _matches(data, claimed):
            logger.warning("datasets.digest_mismatch", object_name=name)
            return Dataset("", data)
        self._keep(claimed, data)
        return Dataset(claimed, data)

    def _keep(self, digest: str, data: bytes) -> None:
        if not self._keeps(digest, len(data)) or digest in self._held:
            return
        self._held[digest] = data
        self.held_bytes += len(data)
        while self.held_bytes > self.max_bytes:
            _, dropped = self._held.popitem(last=False)
            self.held_bytes -= len(dropped)
